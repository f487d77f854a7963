"""What ``train.py`` and ``eval.py`` run: build everything from the Hydra config, then fit or evaluate."""

from __future__ import annotations

import json
import logging
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ocl.callbacks.preemption import automatic_resume_path
from ocl.callbacks.run_config import RunConfigInCheckpoint
from ocl.data.errors import DataError
from ocl.methods.base import ObjectCentricMethod
from ocl.utils.compile import compile_model_parts, compile_options
from ocl.utils.run_identity import describe_run, write_run_identity

log = logging.getLogger(__name__)

# Frozen encoders stay in eval mode on purpose (ocl.modules.vit.ViTEncoder); Lightning warns about it.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", module="lightning")

EVAL_IGNORED_TRAIN_OVERRIDES = ("hydra", "ckpt_path", "logger", "callbacks", "debug", "trainer", "compile")
"""Prefixes of training overrides that ``eval.py`` does not replay (they concern training only)."""


class UsageError(ValueError):
    """The command asks for something its config cannot do (e.g. an evaluation without a checkpoint);
    entry points print the message alone."""


def build_model(cfg: DictConfig) -> ObjectCentricMethod:
    """The method of ``cfg.model`` with the loss terms of ``cfg.loss``."""
    losses = {name: instantiate(term) for name, term in cfg.loss.items()}
    return instantiate(cfg.model, losses=losses)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The data module of ``cfg.data``; a :class:`DataError` raised while building it is raised
    as itself (not wrapped in Hydra's instantiation error), so entry points report it plainly."""
    try:
        return instantiate(cfg.data)
    except InstantiationException as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        raise


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
    output_dir.mkdir(parents=True, exist_ok=True)
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
    that ``eval.py`` can recompose the run's config. ``<run folder>/run.json`` records the run's
    experiment, method, dataset, seed and git commit (:mod:`ocl.utils.run_identity`).
    Without ``ckpt_path``, a run whose folder already holds checkpoints (a requeued job)
    continues from them (:mod:`ocl.callbacks.preemption`); ``compile=true`` (or a mapping of
    torch.compile options) compiles the model's parts (:mod:`ocl.utils.compile`).
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    rank_zero_only(write_run_identity)(describe_run(cfg.name, cfg.seed, overrides=list(overrides)), output_dir)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    options = compile_options(cfg.get("compile"))
    if options is not None:
        log.info("compiled with torch.compile: %s", ", ".join(compile_model_parts(model, **options)))
    run_config = RunConfigInCheckpoint(list(overrides), OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, [run_config])
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config.config)
    log.info("run folder: %s", output_dir)
    started = time.perf_counter()
    ckpt_path = cfg.get("ckpt_path") or automatic_resume_path(trainer.callbacks)
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.interrupted or trainer.fast_dev_run:
        return scalar_metrics(trainer, "val/")
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
        # Periodic checkpoints miss the last steps when max_steps is not a multiple of their period.
        trainer.save_checkpoint(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt")
    trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = scalar_metrics(trainer, "val/")
    if trainer.is_global_zero:  # DDP: the metrics are reduced over ranks; one report
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


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def replayed_overrides(ckpt_path: str, command_line: list[str]) -> list[str]:
    """The training overrides stored in ``ckpt_path`` that ``eval.py`` composes before ``command_line``.

    Left out: those that concern training only (:data:`EVAL_IGNORED_TRAIN_OVERRIDES`), and
    those under a config group the command line replaces (``data=davis2017`` drops the
    stored ``data.*`` values, which belong to the training dataset's config).
    """
    replaced = tuple(f"{_override_key(o)}." for o in command_line if "=" in o and "." not in _override_key(o))
    return [
        o
        for o in load_checkpoint_info(ckpt_path)["overrides"]
        if not o.lstrip("+~").startswith(EVAL_IGNORED_TRAIN_OVERRIDES) and not _override_key(o).startswith(replaced)
    ]


def with_training_overrides(argv: list[str]) -> list[str]:
    """``argv`` of ``eval.py`` / ``predict.py`` with the stored training overrides of its
    ``ckpt_path=`` checkpoint inserted before the user's (:func:`replayed_overrides`); unchanged
    without a checkpoint. Overrides already in ``argv`` are not inserted again: a DDP run
    (``trainer=ddp``) starts its other ranks with this process's ``argv``, which already holds them.
    A missing or foreign checkpoint exits with one line."""
    checkpoints = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("ckpt_path=")]
    if not checkpoints:
        return argv
    try:
        stored = replayed_overrides(checkpoints[-1], argv[1:])
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return [argv[0], *(o for o in stored if o not in argv[1:]), *argv[1:]]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.eval.split`` and report its metrics.

    ``cfg`` is the eval config composed from the checkpoint's training overrides followed by
    the command line's (``eval.py`` puts them in that order, so the command line wins).
    """
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.eval.mode == "label_propagation":
        from ocl.eval.propagation_run import run_label_propagation  # imports this module

        return run_label_propagation(cfg)
    if cfg.eval.mode == "object_discovery":
        from ocl.eval.object_discovery import run_object_discovery  # imports this module

        return run_object_discovery(cfg)
    if cfg.eval.mode != "segmentation":
        raise UsageError(f"unknown eval.mode {cfg.eval.mode!r}; the configs/eval protocols set it")
    if not cfg.get("ckpt_path"):
        raise UsageError("eval.py needs ckpt_path=<checkpoint> (written by train.py in <run folder>/checkpoints/)")
    output_dir = Path(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = build_trainer(cfg)
    stage = cfg.eval.split
    run = trainer.test if stage == "test" else trainer.validate
    run(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, verbose=False)
    metrics = scalar_metrics(trainer, f"{stage}/")
    report_metrics(metrics, output_dir, f"{stage} metrics of {cfg.ckpt_path}")
    return metrics
