"""Shared test helpers: compose the real Hydra configs with tiny sizes."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig
from script_runner import run_script

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

TINY = [
    "data.train_size=32",
    "data.val_size=4",
    "data.batch_size=4",
    "data.resolution=32",
    "data.train_frames=2",
    "data.val_frames=3",
    "model.encoder.channels=[8,8]",
    "model.encoder.strides=[2,1]",
    "model.encoder.output_dim=16",
    "model.processor.initialiser.dim=16",
    "model.processor.initialiser.num_slots=3",
    "model.processor.corrector.mlp_hidden_dim=16",
    "model.decoder.channels=[8]",
    "model.decoder.output_size=16",
    "model.decoder.broadcast_size=8",
    "model.scheduler.warmup_steps=2",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=null",
    "logger=csv",
]
"""Overrides that shrink the default SAVi run to a few seconds on a CPU."""


CONFIG_GROUPS = frozenset(path.relative_to(CONFIG_DIR).as_posix() for path in CONFIG_DIR.rglob("*") if path.is_dir())
"""The config groups under ``configs/`` (``experiment``, ``model/encoder``, ...)."""


def compose_config(overrides: list[str], name: str = "train") -> DictConfig:
    """The config ``python train.py <overrides>`` would run (``paths.output_dir`` must be set).

    Hydra composes a config in two steps: the overrides that choose configs (groups, packages,
    additions, deletions) build the defaults list and the merged tree, then the plain ``key=value``
    ones are set on the result. The first step costs ~0.25 s on a slow CPU and most tests differ only
    in the second, so the tree is composed once per choice of configs and each call gets a copy with
    its values set by Hydra's own code (equal to a plain compose: ``test_configs.py``)."""
    choosing, settings = [], []
    for override in OverridesParser.create().parse_overrides(overrides=overrides):
        (choosing if _chooses_configs(override) else settings).append(override)
    cfg = copy.deepcopy(_composed_tree(name, tuple(override.input_line for override in choosing)))
    ConfigLoaderImpl._apply_overrides_to_config(settings, cfg)
    return cfg


def compose_with_hydra(overrides: list[str], name: str = "train") -> DictConfig:
    """The config Hydra's ``compose`` gives for ``overrides``, all of it composed anew."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@functools.cache
def _composed_tree(name: str, choosing: tuple[str, ...]) -> DictConfig:
    """Hydra's composition of ``name`` with the config-choosing overrides only (never handed out)."""
    return compose_with_hydra(list(choosing), name)


def _chooses_configs(override: Override) -> bool:
    """Whether ``override`` goes into the cached composition: it chooses configs (a group, a package,
    Hydra's own groups) or adds, deletes or sweeps, so Hydra handles it as on the command line; the
    others are plain ``key=value`` settings that Hydra applies to the composed tree."""
    return (
        override.key_or_group in CONFIG_GROUPS
        or override.key_or_group.split("/")[0] == "hydra"
        or override.package is not None
        or override.is_add()
        or override.is_force_add()
        or override.is_delete()
        or override.is_sweep_override()
    )


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    return [*TINY, f"paths.output_dir={tmp_path}"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of a 2-step run of the tiny SAVi (:data:`TINY`), trained once per test session;
    it stores its overrides as ``train.py`` does, so ``eval.py``/``predict.py`` rebuild its config."""
    from ocl.cli import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    overrides = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]
    train(compose_config([*overrides, f"paths.output_dir={run_dir}"]), overrides)
    return run_dir / "checkpoints" / "last.ckpt"


def run_cli(
    script: str, args: list[str], timeout: int = 300, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python <script> <args>`` in the repository, capturing text output (never raises on failure);
    forked from a server that imported the framework once (:mod:`script_runner`).

    A run given ``paths.output_dir=<dir>`` gets Hydra's run folder there too (``hydra.run.dir``),
    so that no test writes ``.hydra/`` and logs under the repository's ``outputs/``.
    """
    output_dirs = [arg.split("=", 1)[1] for arg in args if arg.startswith("paths.output_dir=")]
    if output_dirs and not any(arg.startswith("hydra.run.dir=") for arg in args):
        args = [*args, f"hydra.run.dir={output_dirs[-1]}"]
    return run_script(script, args, cwd=REPO, env=env, timeout=timeout)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: an in-process run compared bit for bit with a subprocess started with
    ``OMP_NUM_THREADS=1`` must reduce in the same order (float sums depend on the thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
