"""Builds what a run needs from its config (model, data module, callbacks, trainer), reads the
training overrides stored in a checkpoint, and reports metrics: shared by ``train.py``,
``eval.py``, ``predict.py`` and the evaluation protocols (:mod:`ocl.eval`), below all of them."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from ocl.data.errors import DataError
from ocl.methods.base import ObjectCentricMethod
from ocl.modules.vit import WeightsError
from ocl.utils.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    read_checkpoint,
)
from ocl.utils.precision import emulated_bf16_warning
from ocl.utils.run_identity import override_key

log = logging.getLogger(__name__)

# Frozen encoders stay in eval mode on purpose (ocl.modules.vit.ViTEncoder); Lightning warns about it.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", module="lightning")

EVAL_IGNORED_TRAIN_OVERRIDES = ("hydra", "ckpt_path", "resume", "logger", "callbacks", "debug", "trainer", "compile")
"""Prefixes of training overrides that ``eval.py`` does not replay (they concern training only)."""


class UsageError(ValueError):
    """The command asks for something its config cannot do (e.g. an evaluation without a checkpoint);
    entry points print the message alone."""


def _instantiate(node: DictConfig, reported: type[Exception], **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; a ``reported`` error raised inside is raised as itself, not
    wrapped in Hydra's instantiation error, so that entry points can print its message alone."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, reported):
            raise error.__cause__ from None
        raise


def build_model(cfg: DictConfig) -> ObjectCentricMethod:
    """The method of ``cfg.model`` with the loss terms of ``cfg.loss``. Encoder weights that cannot
    be downloaded, found or read (:class:`~ocl.modules.vit.WeightsError`) raise a :class:`UsageError`
    with the error's instructions, which entry points print alone."""
    losses = {name: instantiate(term) for name, term in cfg.loss.items()}
    try:
        return _instantiate(cfg.model, WeightsError, losses=losses)
    except WeightsError as error:
        raise UsageError(str(error)) from None


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The data module of ``cfg.data``; a :class:`DataError` raised while building it is raised
    as itself (not wrapped in Hydra's instantiation error), so entry points report it plainly."""
    return _instantiate(cfg.data, DataError)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The callbacks of ``cfg.callbacks`` (those set to null left out)."""
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_trainer(
    cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = (), callbacks: list[pl.Callback] | None = None
) -> pl.Trainer:
    """The Lightning trainer of ``cfg.trainer`` with the logger of the config, its ``callbacks``
    (default: :func:`build_callbacks`) and ``extra_callbacks``; it writes checkpoints atomically
    (:class:`~ocl.utils.checkpoints.AtomicCheckpointIO`) and warns when its bf16 would be emulated
    (:func:`~ocl.utils.precision.emulated_bf16_warning`)."""
    callbacks = build_callbacks(cfg) if callbacks is None else callbacks
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(
        cfg.trainer, callbacks=[*callbacks, *extra_callbacks], logger=logger, plugins=[AtomicCheckpointIO()]
    )
    warning = emulated_bf16_warning(trainer)
    if warning is not None:
        log.warning(warning)
    return trainer


def report_metrics(
    metrics: dict[str, float], output_dir: Path, title: str, notes: dict[str, Any] | None = None
) -> Path:
    """Print ``metrics`` as a table and write them, with ``notes`` (e.g. ``{"diverged": True}``),
    to ``output_dir/metrics.json``."""
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
    path.write_text(json.dumps({**metrics, **(notes or {})}, indent=2, sort_keys=True))
    print(f"metrics written to {path}")
    return path


def scalar_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    """The trainer's logged scalars whose names start with ``prefix``."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and v.numel() == 1}


def load_checkpoint_info(ckpt_path: str) -> dict[str, Any]:
    """The ``ocl`` record of a checkpoint written by :func:`train`.

    Raises:
        CheckpointError: the file is missing or unreadable (:func:`~ocl.utils.checkpoints.read_checkpoint`),
            or has no ``ocl`` record.
    """
    checkpoint = read_checkpoint(ckpt_path)
    if "ocl" not in checkpoint:
        raise CheckpointError(
            f"{ckpt_path} was not written by ocl's train.py (no 'ocl' record); cannot rebuild its model"
        )
    return checkpoint["ocl"]


def model_input_size(data: Mapping[str, Any]) -> int | None:
    """The frame size a data config feeds the model in evaluation: ``eval_transform.size``, else
    ``resolution`` (the embedded data); None if it sets neither."""
    transform = data.get("eval_transform") or {}
    return transform.get("size") or data.get("resolution")


def input_size_warning(ckpt_path: str, record: Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
    """A warning when ``data`` feeds the model of ``ckpt_path`` (its ocl ``record``,
    :func:`load_checkpoint_info`) frames of another size than its training run's evaluation did
    (e.g. ``data=video_files`` at 224 for a model trained at 64); else None."""
    trained = model_input_size(record["config"].get("data") or {})
    evaluated = model_input_size(data)
    if trained is None or evaluated is None or trained == evaluated:
        return None
    key = "data.eval_transform.size" if data.get("eval_transform") else "data.resolution"
    return (
        f"the model of {ckpt_path} was trained and validated on {trained}x{trained} frames; this evaluation feeds it "
        f"{evaluated}x{evaluated} ({key}): set {key}={trained} to evaluate it as trained"
    )


def replayed_overrides(ckpt_path: str, command_line: list[str]) -> list[str]:
    """The training overrides stored in ``ckpt_path`` that ``eval.py`` composes before ``command_line``.

    Left out: those that concern training only (:data:`EVAL_IGNORED_TRAIN_OVERRIDES`), and
    those under a config group the command line replaces (``data=davis2017`` drops the
    stored ``data.*`` values, which belong to the training dataset's config).
    """
    replaced = tuple(f"{override_key(o)}." for o in command_line if "=" in o and "." not in override_key(o))
    return [
        o
        for o in load_checkpoint_info(ckpt_path)["overrides"]
        if not o.lstrip("+~").startswith(EVAL_IGNORED_TRAIN_OVERRIDES) and not override_key(o).startswith(replaced)
    ]


def override_value(override: str) -> str:
    """The value of a ``key=value`` command-line override as Hydra reads it (``ckpt_path='/a b/x.ckpt'``
    -> ``/a b/x.ckpt``); the text after ``=`` if Hydra cannot parse it (Hydra then reports it)."""
    try:
        value = OverridesParser.create().parse_overrides([override])[0].value()
    except HydraException:
        return override.split("=", 1)[1]
    return value if isinstance(value, str) else override.split("=", 1)[1]


def with_training_overrides(argv: list[str]) -> list[str]:
    """``argv`` of ``eval.py`` / ``predict.py`` with the stored training overrides of its
    ``ckpt_path=`` checkpoint inserted before the user's (:func:`replayed_overrides`); unchanged
    without a checkpoint. Overrides already in ``argv`` are not inserted again: a DDP run
    (``trainer=ddp``) starts its other ranks with this process's ``argv``, which already holds them.
    A missing or foreign checkpoint exits with one line."""
    checkpoints = [override_value(arg) for arg in argv[1:] if arg.startswith("ckpt_path=")]
    if not checkpoints:
        return argv
    try:
        stored = replayed_overrides(checkpoints[-1], argv[1:])
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    return [argv[0], *(o for o in stored if o not in argv[1:]), *argv[1:]]
