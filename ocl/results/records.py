"""One run's identity and final metrics, wherever they were read from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ocl.utils.run_identity import RunIdentity

METRIC_PREFIX = "val/"
"""Runs are compared on their validation metrics (``ocl.metrics.callback`` logs the same names for every method)."""


class ResultsError(RuntimeError):
    """Runs could not be found or read; the message says where it looked and what to do."""


@dataclass(frozen=True)
class RunRecord:
    """A run to compare.

    Attributes:
        identity: experiment, method, dataset, seed, git state, start time, overrides.
        metrics: metric name (e.g. ``val/video_fg_ari``) -> final value.
        source: what the metrics were read from (``metrics.json``, ``csv/metrics.csv``,
            ``wandb offline log`` or ``W&B API``).
        location: the run folder, or the W&B run's ``entity/project/id``.
    """

    identity: RunIdentity
    metrics: dict[str, float]
    source: str
    location: str


def validation_metrics(values: Mapping[str, object]) -> dict[str, float]:
    """The entries of ``values`` named ``val/...`` whose values are numbers (not booleans or media)."""
    return {
        name: float(value)
        for name, value in values.items()
        if name.startswith(METRIC_PREFIX) and isinstance(value, int | float) and not isinstance(value, bool)
    }
