"""What ``train.py`` and ``eval.py`` run: build everything from the Hydra config, then fit or evaluate."""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ocl.callbacks.run_config import RunConfigInCheckpoint
from ocl.methods.base import ObjectCentricMethod

log = logging.getLogger(__name__)

EVAL_IGNORED_TRAIN_OVERRIDES = ("hydra", "ckpt_path", "logger", "callbacks", "debug", "trainer")
"""Prefixes of training overrides that ``eval.py`` does not replay (they concern training only)."""


def build_model(cfg: DictConfig) -> ObjectCentricMethod:
    """The method of ``cfg.model`` with the loss terms of ``cfg.loss``."""
    losses = {name: instantiate(term) for name, term in cfg.loss.items()}
    return instantiate(cfg.model, losses=losses)


def build_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] = ()) -> pl.Trainer:
    """The Lightning trainer of ``cfg.trainer`` with the callbacks and logger of the config."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    return instantiate(cfg.trainer, callbacks=[*callbacks, *extra_callbacks], logger=logger)


def report_metrics(metrics: dict[str, float], output_dir: Path, title: str) -> Path:
    """Print ``metrics`` as a table and write them to ``output_dir/metrics.json``."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    Console().print(table)
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"metrics written to {path}")
    return path


def scalar_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    """The trainer's logged scalars whose names start with ``prefix``."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and v.numel() == 1}


def train(cfg: DictConfig, overrides: list[str] = ()) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data``; validate the final weights; return their metrics.

    ``overrides`` (the command line that composed ``cfg``) are stored in each checkpoint so
    that ``eval.py`` can recompose the run's config.
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg)
    run_config = RunConfigInCheckpoint(list(overrides), OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, [run_config])
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config.config)
    log.info("run folder: %s", output_dir)
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted or trainer.fast_dev_run:
        return scalar_metrics(trainer, "val/")
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
        # Periodic checkpoints miss the last steps when max_steps is not a multiple of their period.
        trainer.save_checkpoint(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt")
    trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = scalar_metrics(trainer, "val/")
    report_metrics(metrics, output_dir, f"validation after {trainer.global_step} steps")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(f"trained and validated in {time.perf_counter() - started:.0f} s; peak memory {peak_gib:.2f} GiB")
    return metrics


def load_checkpoint_info(ckpt_path: str) -> dict[str, Any]:
    """The ``ocl`` record of a checkpoint written by :func:`train`, with a clear error if absent."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path.resolve()}. Runs write them to <run folder>/checkpoints/ "
            "(e.g. outputs/<experiment>/<date>/checkpoints/last.ckpt)."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "ocl" not in checkpoint:
        raise ValueError(f"{path} was not written by ocl's train.py (no 'ocl' record); cannot rebuild its model")
    return checkpoint["ocl"]


def evaluate(cfg: DictConfig, overrides: list[str] = ()) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` and report its metrics.

    The config is recomposed (Hydra must be initialised, as in ``eval.py``) from the
    checkpoint's training overrides, minus those that concern training only, followed by
    ``overrides`` (this command's), which win.
    """
    info = load_checkpoint_info(cfg.ckpt_path)
    replayed = [o for o in info["overrides"] if not o.lstrip("+~").startswith(EVAL_IGNORED_TRAIN_OVERRIDES)]
    own = [o for o in overrides if not o.startswith("hydra")]
    run_cfg = compose(config_name="eval", overrides=[*replayed, *own])
    output_dir = Path(run_cfg.paths.output_dir)
    pl.seed_everything(run_cfg.seed, workers=True)
    datamodule = instantiate(run_cfg.data)
    model = build_model(run_cfg)
    trainer = build_trainer(run_cfg)
    stage = run_cfg.eval.split
    run = trainer.test if stage == "test" else trainer.validate
    run(model, datamodule=datamodule, ckpt_path=run_cfg.ckpt_path, verbose=False)
    metrics = scalar_metrics(trainer, f"{stage}/")
    report_metrics(metrics, output_dir, f"{stage} metrics of {run_cfg.ckpt_path}")
    return metrics
