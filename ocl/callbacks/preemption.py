"""Preemption and time limits: checkpoint at a step boundary on the scheduler's signal, stop,
and continue in the same run folder when the job starts again.

SLURM warns a job before it ends: ``--signal=USR2@120`` (what ``hydra/launcher=slurm`` asks,
submitit's signal) or ``USR1`` (Lightning's convention) some seconds before the time limit,
``SIGTERM`` when it preempts or cancels the job; ``SIGINT`` is Ctrl-C (a second one stops at
once, without a checkpoint). On any of them :class:`PreemptionCheckpoint`
lets the current training step finish, writes ``<dirpath>/preempted.ckpt`` (weights, optimiser,
schedule, data position, RNG: the state the periodic checkpoints hold, which resumes exactly),
then hands the signal to the handler the launcher had installed (submitit's: requeue the job)
and stops the run with :class:`RunPreempted`. When the job starts again in the same
run folder with no ``ckpt_path``, ``train`` continues from the newest of
:meth:`PreemptionCheckpoint.resume_candidates` that loads.

Lightning's own SLURM handler is replaced during training: it saves inside the signal handler,
wherever the step is (e.g. between the backward pass and the optimiser step), so its
checkpoint would not resume exactly.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "preempted.ckpt"
"""File name of the preemption checkpoint inside the checkpoint folder."""
LAST_NAME = "last.ckpt"
"""File name of the periodic checkpoints' latest copy (``ModelCheckpoint(save_last=True)``)."""


class RunPreempted(Exception):
    """Raised out of ``trainer.fit`` once the preemption checkpoint is written."""

    def __init__(self, signal_name: str, step: int, path: Path) -> None:
        super().__init__(
            f"{signal_name} received: checkpoint of step {step} written to {path}; stopped. Run the same command "
            f"with hydra.run.dir={path.parent.parent} (a requeued job does) to continue from it."
        )
        self.signal_name = signal_name
        self.step = step
        self.path = path


class PreemptionCheckpoint(pl.Callback):
    """On one of ``signals``: checkpoint after the current training step, then stop the run.

    DDP: the ranks agree after every step whether any of them got a signal (one all-reduce of a
    flag), so all of them write the checkpoint together at the same step.

    Args:
        dirpath: the run's checkpoint folder (``<run folder>/checkpoints``).
        signals: names of the signals that stop the run.
        resume: a run started without ``ckpt_path`` continues from one of :meth:`resume_candidates`.
    """

    def __init__(
        self, dirpath: str, signals: Sequence[str] = ("SIGUSR1", "SIGUSR2", "SIGTERM"), resume: bool = True
    ) -> None:
        unknown = [name for name in signals if not isinstance(getattr(signal, name, None), signal.Signals)]
        if unknown:
            raise ValueError(f"unknown signal names {unknown} in callbacks.preemption.signals (e.g. SIGUSR1, SIGTERM)")
        self.dirpath = Path(dirpath)
        self.signals = [signal.Signals[name] for name in signals]
        self.resume = resume
        self._received: signal.Signals | None = None
        self._saved: Path | None = None
        self._outer_handlers: dict[signal.Signals, Any] = {}
        self._replaced_handlers: dict[signal.Signals, Any] = {}

    def resume_candidates(self) -> list[Path]:
        """The checkpoints in ``dirpath`` a restarted run may continue from, newest first
        (``preempted.ckpt``, ``last.ckpt`` and the periodic ones; files being written, ``*.partial``,
        are left out); empty if ``resume`` is off. A requeued job continues where its previous part
        stopped, or from its newest periodic checkpoint if it was killed without warning; the
        caller takes the first that loads (one written as the job was killed may not)."""
        if not self.resume:
            return []
        priority = {CHECKPOINT_NAME: 2, LAST_NAME: 1}  # on equal times: the preemption's, then last
        paths = [path for path in self.dirpath.glob("*.ckpt") if path.is_file()]
        return sorted(paths, key=lambda path: (path.stat().st_mtime_ns, priority.get(path.name, 0)), reverse=True)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:
            self._received = signal.Signals(signum)
            if signum == signal.SIGINT:
                print("\ninterrupted: checkpointing after this step (Ctrl-C again to stop at once)", flush=True)
        elif signum == signal.SIGINT:  # a second Ctrl-C: a step that hangs can still be stopped
            raise KeyboardInterrupt

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before Lightning installs its own handlers: these are the launcher's (e.g. submitit's).
        self._outer_handlers = {signum: signal.getsignal(signum) for signum in self.signals}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._received, self._saved = None, None
        if threading.current_thread() is not threading.main_thread():
            log.warning("training runs outside the main thread: preemption signals are not handled")
            return
        self._replaced_handlers = {signum: signal.signal(signum, self._record) for signum in self.signals}

    def _restore_handlers(self) -> None:
        for signum, handler in self._replaced_handlers.items():
            signal.signal(signum, handler)
        self._replaced_handlers = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._saved is None and trainer.strategy.reduce_boolean_decision(self._received is not None, all=False):
            self._saved = self.dirpath / CHECKPOINT_NAME
            trainer.save_checkpoint(self._saved)
            log.info("preemption checkpoint of step %d written to %s", trainer.global_step, self._saved)

    def _stop_if_saved(self, trainer: pl.Trainer) -> None:
        """Stop at the first hook after the step's metrics were logged."""
        if self._saved is None:
            return
        self._restore_handlers()
        received = self._received
        name = received.name if received is not None else "a signal on another DDP rank"
        outer = self._outer_handlers.get(received) if received is not None else None
        # e.g. submitit's: requeue the job and exit; Ctrl-C's default would raise KeyboardInterrupt
        if callable(outer) and outer is not signal.default_int_handler:
            outer(received, None)
        raise RunPreempted(name, trainer.global_step, self._saved)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._stop_if_saved(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_saved(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()


def automatic_resume_candidates(callbacks: Sequence[pl.Callback]) -> list[Path]:
    """Where a run started without ``ckpt_path`` may continue from: the
    :meth:`~PreemptionCheckpoint.resume_candidates` of the :class:`PreemptionCheckpoint` among
    ``callbacks`` (none without one)."""
    for callback in callbacks:
        if isinstance(callback, PreemptionCheckpoint):
            return callback.resume_candidates()
    return []
