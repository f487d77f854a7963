"""Experiment loggers: W&B that never prompts, offline unless the user has configured W&B.

A W&B run is named ``<method>_<dataset>_seed<seed>``, grouped by experiment and tagged with
experiment, method, dataset and ``seed<k>``; its config holds the :class:`~ocl.utils.run_identity.RunIdentity`
under ``run`` (git commit included) next to the resolved config that ``train()`` logs.

An online run whose W&B server does not answer within :data:`SERVER_TIMEOUT_S` (a compute node
without network) logs offline instead, with one warning: ``wandb sync`` uploads it later.
Environment variables ``WANDB_*`` set to an empty string count as unset (W&B would reject an
empty ``WANDB_MODE``).
"""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from ocl.utils.run_identity import RUN_FILE, describe_run, read_run_identity

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://api.wandb.ai"
"""W&B's server, unless ``WANDB_BASE_URL`` names another."""
SERVER_TIMEOUT_S = 5.0
"""Seconds an online run waits for the W&B server to answer before it logs offline."""


def drop_empty_wandb_variables() -> None:
    """Unset the ``WANDB_*`` environment variables that are set to an empty string: ocl reads them
    as unset, and so must W&B (it rejects ``WANDB_MODE=""`` before the run starts)."""
    for name in [name for name, value in os.environ.items() if name.startswith("WANDB_") and not value]:
        del os.environ[name]


def wandb_server_answers(timeout_s: float = SERVER_TIMEOUT_S) -> bool:
    """Whether the W&B server (``$WANDB_BASE_URL`` or :data:`DEFAULT_SERVER`) answers an HTTP
    request within ``timeout_s`` (any HTTP status counts; proxies from the environment are used)."""
    url = os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError and timeouts are OSErrors; ValueError: a malformed URL
        return False


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
    ``mode``: online/offline/disabled/None (auto, :func:`resolve_wandb_mode`); online falls back
    to offline when the server does not answer (:func:`wandb_server_answers`). The run id follows
    the folder (:func:`folder_run_id`), with ``resume="allow"``: a restart continues the W&B run.
    """
    drop_empty_wandb_variables()
    mode = resolve_wandb_mode(mode)
    if mode == "online" and not wandb_server_answers():
        log.warning(
            "W&B server %s cannot be reached (no answer within %.0f s): logging offline to %s/wandb (upload it "
            "later with `wandb sync`)",
            os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER,
            SERVER_TIMEOUT_S,
            save_dir,
        )
        mode = "offline"
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
        mode=mode,
        anonymous="never",
        config={"run": identity.to_dict()},
        id=folder_run_id(folder),
        resume="allow",
    )
