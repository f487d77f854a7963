"""Stores what is needed to rebuild a run's model inside each of its checkpoints."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class RunConfigInCheckpoint(pl.Callback):
    """Adds ``checkpoint["ocl"] = {"overrides": [...], "config": {...}}``.

    ``overrides`` are the run's Hydra command-line overrides: ``eval.py`` recomposes the run's
    config from them, so ``python eval.py ckpt_path=...`` needs no other argument.
    ``config`` is the resolved config, for the record.
    """

    def __init__(self, overrides: list[str], config: dict[str, Any]) -> None:
        self.overrides = list(overrides)
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["ocl"] = {"overrides": self.overrides, "config": self.config}
