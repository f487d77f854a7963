"""Which checkpoint a run continues from.

With ``ckpt_path``, that one. Without, a command rerun in a run folder (a requeued job,
``hydra.run.dir=<folder>``) continues from the newest of the folder's checkpoints that loads
(a file cut short by a kill is skipped, with a warning that says why), and only if it belongs
to the same run: ``seed=1`` in a seed-0 folder would otherwise report the seed-0 result as
seed 1. The stored (resolved) config of the checkpoint is compared with the command's; only the
keys in :data:`RESUME_SAFE_KEYS` may differ (and, with ``resume.reset_schedule=true``, those in
:data:`SCHEDULE_KEYS`), together with values interpolated from them (e.g. a schedule's
``decay_steps: ${trainer.max_steps}``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ocl.utils.checkpoints import CheckpointError, newest_readable, read_checkpoint
from ocl.utils.config_values import flatten

log = logging.getLogger(__name__)

RESUME_SAFE_KEYS = (
    "trainer.max_steps",
    "paths",
    "ckpt_path",
    "resume",
    "callbacks.progress_bar",
    "data.num_workers",
)
"""Keys (and key prefixes) that a continued run may change: its length, where files are, the
resume options, how progress is shown and how many processes load data; nothing that changes
the result."""

SCHEDULE_KEYS = ("model.optimizer", "model.scheduler")
"""Keys that may also change with ``resume.reset_schedule=true`` (a new learning rate or schedule
from the resumed step on)."""


def resume_safe_keys(reset_schedule: bool) -> tuple[str, ...]:
    """:data:`RESUME_SAFE_KEYS`, with :data:`SCHEDULE_KEYS` when the schedule is reset on resume."""
    return RESUME_SAFE_KEYS + SCHEDULE_KEYS if reset_schedule else RESUME_SAFE_KEYS


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)


def _interpolates(value: Any, keys: Sequence[str]) -> bool:
    """Whether ``value`` is a string holding an interpolation (``${key}``, ``${key.sub}``) of one of ``keys``."""
    return isinstance(value, str) and any(f"${{{key}}}" in value or f"${{{key}." in value for key in keys)


def config_differences(stored: Mapping[str, Any], config: DictConfig, safe: Sequence[str]) -> list[str]:
    """``"key: stored -> current"`` for each value of the resolved ``config`` that differs from
    ``stored`` (a resolved config, e.g. a checkpoint's), leaving out the keys under ``safe`` and
    the values that interpolate one of them."""
    current = flatten(OmegaConf.to_container(config, resolve=True))
    raw = flatten(OmegaConf.to_container(config, resolve=False))
    previous = flatten(stored)
    differences = []
    for key in sorted(set(current) | set(previous)):
        if _under(key, safe) or _interpolates(raw.get(key), safe):
            continue
        old, new = previous.get(key, "<absent>"), current.get(key, "<absent>")
        if old != new:
            differences.append(f"{key}: {old} -> {new}")
    return differences


def resume_point(cfg: DictConfig, candidates: Sequence[Path]) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint a run of ``cfg`` continues from, and its contents (None, None: from the start).

    With ``cfg.ckpt_path``: that file. Without: the first of ``candidates`` (the run folder's
    checkpoints, newest first) that loads, if its stored config is ``cfg`` but for the keys of
    :func:`resume_safe_keys`.

    Raises:
        CheckpointError: ``ckpt_path`` cannot be read; none of ``candidates`` loads; the one that
            loads belongs to a run of another config.
    """
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        return path, read_checkpoint(path)
    path, checkpoint, skipped = newest_readable(list(candidates))
    for reason in skipped:
        log.warning("skipped for resuming: %s", reason)
    if path is None:
        if skipped:
            raise CheckpointError(
                f"none of the {len(skipped)} checkpoints in {candidates[0].parent} can be read (see the warnings "
                "above): move them away to start the run over, or start a new one with another hydra.run.dir"
            )
        return None, None
    stored = checkpoint.get("ocl", {}).get("config")
    differences = [] if stored is None else config_differences(stored, cfg, resume_safe_keys(cfg.resume.reset_schedule))
    if differences:
        shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
        raise CheckpointError(
            f"{path.parent.parent} holds a run of another config ({shown}), which a rerun in its folder would "
            "continue: start this run in a new folder (another hydra.run.dir), rerun the folder's own command "
            "(only trainer.max_steps and the keys of RESUME_SAFE_KEYS in ocl/utils/resume.py may change), or "
            f"continue from the checkpoint on purpose under this config with ckpt_path={path}"
        )
    log.info(
        "resuming from %s (the newest checkpoint of the run folder that loads%s)",
        path,
        f"; {len(skipped)} newer one(s) skipped" if skipped else "",
    )
    return path, checkpoint
