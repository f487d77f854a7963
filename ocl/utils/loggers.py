"""Experiment loggers: W&B that never prompts, offline unless the user has configured W&B.

A W&B run is named ``<method>_<dataset>_seed<seed>``, grouped by experiment and tagged with
experiment, method, dataset and ``seed<k>``; its config holds the :class:`~ocl.utils.run_identity.RunIdentity`
under ``run`` (git commit included) next to the resolved config that ``train()`` logs.
"""

from __future__ import annotations

import hashlib
import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from ocl.utils.run_identity import RUN_FILE, describe_run, read_run_identity


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


def folder_run_id(folder: Path) -> str:
    """A W&B run id fixed by the run folder: a run restarted in its folder (a requeued SLURM job,
    an automatic resume) continues the same W&B run."""
    return hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]


def make_wandb_logger(
    project: str,
    save_dir: str,
    experiment: str,
    seed: int,
    tags: Sequence[str] = (),
    entity: str | None = None,
    mode: str | None = None,
) -> WandbLogger:
    """A :class:`WandbLogger` writing under ``save_dir/wandb`` for a run of ``experiment`` with ``seed``.

    Name, group, tags and the ``run`` config entry come from the run's identity: the ``run.json``
    that ``train()`` wrote to ``save_dir`` (the run folder), else (e.g. ``eval.py``)
    :func:`~ocl.utils.run_identity.describe_run`. ``tags`` are added to its tags.
    ``mode``: online/offline/disabled/None (auto, :func:`resolve_wandb_mode`). The run id follows
    the folder (:func:`folder_run_id`), with ``resume="allow"``: a restart continues the W&B run.
    """
    folder = Path(save_dir)
    identity = read_run_identity(folder) if (folder / RUN_FILE).is_file() else describe_run(experiment, seed)
    folder.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=identity.run_name,
        group=identity.experiment,
        tags=list(dict.fromkeys([*identity.tags, *tags])),
        entity=entity,
        mode=resolve_wandb_mode(mode),
        anonymous="never",
        config={"run": identity.to_dict()},
        id=folder_run_id(folder),
        resume="allow",
    )
