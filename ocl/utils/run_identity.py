"""Who a run is: experiment, method, dataset, seed and the git state of the code.

``train()`` writes it to ``<run folder>/run.json`` and the W&B logger puts it in the run's name,
group, tags and config (``run``), so runs compare by method x dataset x seed on a dashboard and
``scripts/compare_runs.py`` reads local folders without W&B.

Where the names come from (no experiment file writes them out):

- dataset: Hydra's choice of the ``data`` config group (``movi_c``, ``ytvis2021``, ``synthetic``, ...).
- method: Hydra's choice of the ``method`` group where an experiment composes one
  (``configs/method/slotcurri.yaml``), else the experiment name without its dataset suffix
  (``cycle_slot_attention_synthetic`` -> ``cycle_slot_attention``). The suffix must be
  the dataset's name or its leading letters (``movi`` for ``movi_c``, ``ytvis`` for ``ytvis2021``).
  A name without such a suffix (``name=my_ablation``, or ``savi_synthetic`` run with ``data=movi_c``)
  gets Hydra's choice of the ``model`` group (``savi``).

Both need Hydra's runtime record, which exists under ``train.py``/``eval.py`` but not for a config
built with Hydra's compose API (notebooks, some tests): there they are ``None``.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
"""The file in a run folder that holds its :class:`RunIdentity`."""

CODE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout the ``ocl`` package is imported from (its git state is the run's code)."""


@dataclass(frozen=True)
class RunIdentity:
    """What a run is, for naming, grouping and comparing runs.

    Attributes:
        experiment: the config's ``name`` (the experiment; the W&B group).
        method: e.g. ``slotcurri``; ``None`` without Hydra's runtime record (see the module doc).
        dataset: Hydra's ``data`` choice, e.g. ``movi_c``; ``None`` without Hydra's runtime record.
        seed: the run's ``seed``.
        git_commit: ``HEAD`` of :data:`CODE_ROOT`; ``None`` when the code is not a git checkout.
        git_dirty: whether tracked files differ from ``HEAD`` or untracked, not ignored files exist.
        started_at: UTC time the identity was made (ISO 8601), to tell reruns of a seed apart.
        overrides: the command line's Hydra overrides.
    """

    experiment: str
    method: str | None
    dataset: str | None
    seed: int
    git_commit: str | None
    git_dirty: bool | None
    started_at: str
    overrides: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        """``<method>_<dataset>_seed<seed>``, or ``<experiment>_seed<seed>`` when method or dataset is unknown."""
        stem = f"{self.method}_{self.dataset}" if self.method and self.dataset else self.experiment
        return f"{stem}_seed{self.seed}"

    @property
    def tags(self) -> list[str]:
        """Experiment, method, dataset and ``seed<k>``, without unknowns or repeats."""
        tags = [self.experiment, self.method, self.dataset, f"seed{self.seed}"]
        return list(dict.fromkeys(t for t in tags if t))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunIdentity:
        """The identity stored by :meth:`to_dict`; a ``KeyError`` names a missing field."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@functools.lru_cache(maxsize=1)
def git_state(root: Path = CODE_ROOT) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout at ``root``; ``(None, None)`` outside one or without git.

    Computed once per process: a run records the code it started with.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain").strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def method_name(experiment: str, dataset: str, model_choice: str | None) -> str | None:
    """The method of an experiment: its name without a dataset suffix, else ``model_choice``.

    >>> method_name("slotcurri_movi", "movi_c", "slotcontrast")
    'slotcurri'
    >>> method_name("my_ablation", "movi_c", "savi")
    'savi'
    """
    family = re.match(r"[a-z]*", dataset).group()
    parts = experiment.split("_")
    for start in range(1, len(parts)):
        if "_".join(parts[start:]) in (dataset, family):
            return "_".join(parts[:start])
    return model_choice


def override_key(override: str) -> str:
    """The key a Hydra command-line override sets: ``+model.x=1`` -> ``model.x``, ``~data`` -> ``data``."""
    return override.lstrip("+~").split("=", 1)[0]


def hydra_runtime() -> tuple[dict[str, str], list[str]]:
    """Hydra's config-group choices and task overrides of this process; empty outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, []
    hydra = HydraConfig.get()
    choices = {group: choice for group, choice in hydra.runtime.choices.items() if choice is not None}
    return choices, list(hydra.overrides.task)


def describe_run(
    experiment: str, seed: int, choices: Mapping[str, str] | None = None, overrides: Sequence[str] | None = None
) -> RunIdentity:
    """The identity of a run of ``experiment`` with ``seed``.

    ``choices`` (config group -> chosen file, e.g. ``{"data": "movi_c", "model": "slotcontrast"}``)
    and ``overrides`` default to those of the running Hydra app (:func:`hydra_runtime`).
    """
    if choices is None or overrides is None:
        runtime_choices, runtime_overrides = hydra_runtime()
        choices = runtime_choices if choices is None else choices
        overrides = runtime_overrides if overrides is None else overrides
    dataset = choices.get("data")
    method = choices.get("method") or (method_name(experiment, dataset, choices.get("model")) if dataset else None)
    commit, dirty = git_state()
    return RunIdentity(
        experiment=experiment,
        method=method,
        dataset=dataset,
        seed=int(seed),
        git_commit=commit,
        git_dirty=dirty,
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        overrides=list(overrides),
    )


def write_run_identity(identity: RunIdentity, folder: Path) -> Path:
    """Write ``identity`` to ``folder/run.json``; return the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_FILE
    path.write_text(json.dumps(identity.to_dict(), indent=2))
    return path


def read_run_identity(folder: Path) -> RunIdentity:
    """The identity in ``folder/run.json``; ``ValueError`` naming the file when it is not one."""
    path = folder / RUN_FILE
    try:
        return RunIdentity.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a run record written by train.py ({error!r}); delete or fix it") from None
