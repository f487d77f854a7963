"""Experiment loggers: W&B that never prompts, offline unless the user has configured W&B."""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_is_configured() -> bool:
    """True when W&B credentials exist (``WANDB_API_KEY`` or an ``api.wandb.ai`` netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """``mode`` if given, else ``$WANDB_MODE``, else ``online`` with credentials and ``offline`` without."""
    if mode:
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_is_configured() else "offline")


def make_wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    entity: str | None = None,
    mode: str | None = None,
) -> WandbLogger:
    """A :class:`WandbLogger` writing under ``save_dir/wandb``; ``mode``: online/offline/disabled/None (auto)."""
    resolved = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        tags=list(tags),
        entity=entity,
        mode=resolved,
        anonymous="never",
    )
