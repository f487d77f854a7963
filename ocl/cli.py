"""What ``train.py`` and ``eval.py`` run: build everything from the Hydra config, then fit or evaluate."""

from __future__ import annotations

import logging
import math
import resource
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ocl.build import (
    UsageError,
    build_callbacks,
    build_datamodule,
    build_model,
    build_trainer,
    input_size_warning,
    load_checkpoint_info,
    report_metrics,
    scalar_metrics,
)
from ocl.callbacks.preemption import automatic_resume_candidates
from ocl.callbacks.run_config import RunConfigInCheckpoint
from ocl.callbacks.schedule_reset import ScheduleReset
from ocl.utils.checkpoints import (
    is_weights_mismatch,
    weights_mismatch,
)
from ocl.utils.compile import compile_model_parts, compile_options
from ocl.utils.config_values import check_config_values
from ocl.utils.resume import resume_point
from ocl.utils.run_identity import describe_run, write_run_identity

log = logging.getLogger(__name__)


def train(cfg: DictConfig, overrides: list[str] = ()) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data``; validate the final weights; return their metrics.

    ``overrides`` (the command line that composed ``cfg``) are stored in each checkpoint so
    that ``eval.py`` can recompose the run's config. ``<run folder>/run.json`` records the run's
    experiment, method, dataset, seed and git commit (:mod:`ocl.utils.run_identity`).
    Known numeric values are checked first (:mod:`ocl.utils.config_values`). Without
    ``ckpt_path``, a run whose folder already holds checkpoints of the same config (a requeued
    job) continues from them (:mod:`ocl.utils.resume`); ``resume.reset_schedule=true`` takes the
    learning rate and schedule from ``cfg`` rather than the checkpoint
    (:mod:`ocl.callbacks.schedule_reset`); ``compile=true`` (or a mapping of torch.compile
    options) compiles the model's parts (:mod:`ocl.utils.compile`).

    Raises:
        ConfigValueError: a value of ``cfg`` breaks its rule.
        CheckpointError: see :func:`~ocl.utils.resume.resume_point`; or the checkpoint's weights
            do not fit the model.
    """
    check_config_values(cfg)
    callbacks = build_callbacks(cfg)
    ckpt_path, checkpoint = resume_point(cfg, automatic_resume_candidates(callbacks))
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    rank_zero_only(write_run_identity)(describe_run(cfg.name, cfg.seed, overrides=list(overrides)), output_dir)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    options = compile_options(cfg.get("compile"))
    if options is not None:
        log.info("compiled with torch.compile: %s", ", ".join(compile_model_parts(model, **options)))
    run_config = RunConfigInCheckpoint(list(overrides), OmegaConf.to_container(cfg, resolve=True))
    extra = [run_config, ScheduleReset()] if ckpt_path is not None and cfg.resume.reset_schedule else [run_config]
    trainer = build_trainer(cfg, extra, callbacks)
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config.config)
    log.info("run folder: %s", output_dir)
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as error:
        if ckpt_path is None or not is_weights_mismatch(error):
            raise
        raise weights_mismatch(ckpt_path, checkpoint, cfg.name, error) from None
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


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.eval.split`` and report its metrics.

    ``cfg`` is the eval config composed from the checkpoint's training overrides followed by
    the command line's (``eval.py`` puts them in that order, so the command line wins).
    """
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.eval.mode == "label_propagation":
        from ocl.eval.propagation_run import run_label_propagation  # imports ocl.build

        return run_label_propagation(cfg)
    if cfg.eval.mode == "object_discovery":
        from ocl.eval.object_discovery import run_object_discovery  # imports ocl.build

        return run_object_discovery(cfg)
    if cfg.eval.mode != "segmentation":
        raise UsageError(f"unknown eval.mode {cfg.eval.mode!r}; the configs/eval protocols set it")
    if not cfg.get("ckpt_path"):
        raise UsageError("eval.py needs ckpt_path=<checkpoint> (written by train.py in <run folder>/checkpoints/)")
    if cfg.eval.split not in ("val", "test"):
        raise UsageError(f"eval.split must be val or test, got {cfg.eval.split!r}")
    check_config_values(cfg)
    output_dir = Path(cfg.paths.output_dir)
    record = load_checkpoint_info(cfg.ckpt_path)
    size_warning = input_size_warning(cfg.ckpt_path, record, cfg.data)
    if size_warning is not None:
        log.warning(size_warning)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = build_trainer(cfg)
    stage = cfg.eval.split
    run = trainer.test if stage == "test" else trainer.validate
    try:
        run(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, verbose=False)
    except RuntimeError as error:
        if not is_weights_mismatch(error):
            raise
        raise weights_mismatch(cfg.ckpt_path, {"ocl": record}, cfg.name, error) from None
    metrics = scalar_metrics(trainer, f"{stage}/")
    problem = divergence(model, metrics)
    notes = None
    if problem is not None:
        log.warning("%s looks diverged (%s): its metrics mean nothing; metrics.json says so", cfg.ckpt_path, problem)
        notes = {"diverged": True, "diverged_because": problem}
    report_metrics(metrics, output_dir, f"{stage} metrics of {cfg.ckpt_path}", notes)
    return metrics


def divergence(model: torch.nn.Module, metrics: dict[str, float]) -> str | None:
    """What shows that ``model`` diverged: its non-finite weights and ``metrics`` (None if none is)."""
    weights = [
        name
        for name, tensor in model.state_dict().items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    values = sorted(name for name, value in metrics.items() if not math.isfinite(value))
    found = []
    if weights:
        found.append(f"{len(weights)} weight tensor(s) with NaN or inf, e.g. {weights[0]}")
    if values:
        found.append(f"non-finite {', '.join(values)}")
    return "; ".join(found) or None
