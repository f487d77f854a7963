"""Checkpoint files: written atomically, read with one-line errors.

A checkpoint is written to ``<name>.partial`` next to its final path and renamed over it
(:class:`AtomicCheckpointIO`), so a run killed while saving leaves the previous file intact.
:func:`read_checkpoint` turns the ways a file can fail to load (missing, empty, truncated, not a
checkpoint) into a :class:`CheckpointError` whose message names the file; the entry points print
it alone.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"
"""Suffix of a checkpoint being written (renamed to its final name once complete)."""
STATE_DICT_ERROR = "Error(s) in loading state_dict"
"""Start of torch's error when weights do not fit a module."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used (missing, unreadable, or of another run); the message is one line."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` of checkpoints, made atomic: the file is written and synced as
    ``<path>.partial``, then renamed to ``path`` (``os.replace``: readers see the old file or the
    new one, never a part). Local paths only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        try:
            with open(partial, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors memory-mapped: reading costs its metadata, not its size).

    Raises:
        CheckpointError: the file is missing, empty, truncated or not a torch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path.resolve()}. Runs write them to <run folder>/checkpoints/ "
            "(e.g. outputs/<experiment>/<date>/checkpoints/last.ckpt)."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write did not complete")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, whose directory is at its end
        raise CheckpointError(f"checkpoint {path} cannot be read: truncated, or not a torch checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).split(". ")[0] or type(error).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read (corrupt: {reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def written_by(checkpoint: dict[str, Any]) -> str | None:
    """The experiment (config ``name``) of the ``train.py`` run that wrote ``checkpoint``; None for a
    checkpoint without ocl's record."""
    return checkpoint.get("ocl", {}).get("config", {}).get("name")


def is_weights_mismatch(error: BaseException) -> bool:
    """Whether ``error`` is torch's ``load_state_dict`` failure (missing, unexpected or resized weights)."""
    return isinstance(error, RuntimeError) and str(error).startswith(STATE_DICT_ERROR)


def weights_mismatch(
    path: str | Path, checkpoint: dict[str, Any], experiment: str, error: RuntimeError
) -> CheckpointError:
    """The one-line error for ``checkpoint`` (at ``path``) whose weights do not load into the model
    of a run of ``experiment``: the experiment that wrote it and torch's first complaint (``error``)."""
    lines = str(error).splitlines()
    first = lines[1].strip() if len(lines) > 1 else ""
    first = first if len(first) <= 240 else f"{first[:240]}..."
    return CheckpointError(
        f"checkpoint {path} does not fit this run's model: it was written by experiment {written_by(checkpoint)!r}, "
        f"this run is {experiment!r} ({first})"
    )


def newest_readable(candidates: list[Path]) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """The first of ``candidates`` (newest first) that :func:`read_checkpoint` reads.

    Returns:
        (its path, the checkpoint, one line per candidate skipped before it saying why); the
        first two are None when none reads.
    """
    skipped = []
    for path in candidates:
        try:
            return path, read_checkpoint(path), skipped
        except CheckpointError as error:
            skipped.append(str(error))
    return None, None, skipped
