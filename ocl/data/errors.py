"""The one exception type for bad data on disk, and how entry points report it."""

from __future__ import annotations

WORKER_TRACEBACK_MARKER = "Original Traceback"


class DataError(RuntimeError):
    """A dataset file or folder is missing, incomplete or corrupt; the message names it and says what to do."""


def user_message(error: DataError) -> str:
    """The message a user needs, without the worker traceback that DataLoader workers prepend.

    An error raised in a loader worker is re-raised in the main process with its traceback
    folded into the message (``Caught DataError in DataLoader worker process 0. Original
    Traceback ...``); the original message is what follows the last ``DataError: ``.
    """
    message = str(error)
    if WORKER_TRACEBACK_MARKER in message:
        message = message.rsplit(f"{DataError.__name__}: ", 1)[-1].strip()
    return f"data error: {message}"
