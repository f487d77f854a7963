"""A training progress bar that counts the run's steps, not the current epoch's batches.

Every ocl run is bounded by ``trainer.max_steps`` with ``max_epochs=-1``. Lightning's
:class:`~lightning.pytorch.callbacks.RichProgressBar` then restarts its bar at every epoch, titles it
``Epoch 3/-2`` and estimates the time left in the epoch only; a resumed run's bar starts at its
epoch's batch, not at its step. :class:`StepProgressBar` keeps one training bar for the whole run:
``global_step / max_steps`` (optimiser steps) with the time left to the last step, the epoch in its
title. Validation, testing and prediction bars, and runs bounded by epochs, are Lightning's.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar with one bar of ``trainer.global_step / trainer.max_steps`` for
    a run bounded by steps (``max_steps > 0`` and no epoch limit); the arguments are Lightning's."""

    def _counts_steps(self) -> bool:
        trainer = self.trainer
        return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    @property
    def total_train_batches(self) -> int | float:
        """The run's step budget (Lightning's: the batches of one epoch)."""
        return self.trainer.max_steps if self._counts_steps() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        """``Epoch N`` (Lightning's appends ``/{max_epochs - 1}``: ``/-2`` in a run bounded by steps)."""
        if not self._counts_steps():
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The first epoch of this process adds the bar at the run's step; later ones retitle it."""
        if not self._counts_steps():
            super().on_train_epoch_start(trainer, pl_module)
            return
        if self.progress is None:  # disabled
            return
        if self.train_progress_bar_id is None:
            self._add_run_task(trainer)
        else:
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)
        self.refresh()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Move the bar to ``trainer.global_step`` (Lightning's: to the batch within the epoch)."""
        if not self._counts_steps():
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if self.progress is not None and self.train_progress_bar_id is None:  # resumed within an epoch
            self._add_run_task(trainer)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _add_run_task(self, trainer: pl.Trainer) -> None:
        """Add the run's bar, already at ``trainer.global_step`` (a resumed run starts at its step)."""
        assert self.progress is not None
        description = self._get_train_description(trainer.current_epoch)
        if self.theme.description:
            description = f"[{self.theme.description}]{description}"
        self.train_progress_bar_id = self.progress.add_task(
            description, total=self.total_train_batches, completed=trainer.global_step
        )
