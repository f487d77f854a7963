"""Summarise runs over seeds: one row per experiment (x variant), mean and sample std of each metric.

- A row is the runs of one experiment with the same method, dataset and *variant*: the command-line
  overrides that only some of the experiment's runs have (``-m experiment=x data.level=easy,hard
  seed=0,1,2`` gives two rows, ``data.level=easy`` and ``data.level=hard``). Overrides that do not
  change a result are not part of it: ``seed``, ``ckpt_path`` (resuming), ``hydra``, ``paths``,
  ``logger``.
- One run per seed and row: when a seed was run again (or resumed into a new folder), the run that
  started last counts and the report says which runs it replaced.
- ``std`` is the sample standard deviation (divisor n - 1) over seeds; ``None`` for a single seed.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ocl.results.records import METRIC_PREFIX, RunRecord
from ocl.utils.run_identity import override_key

IGNORED_OVERRIDES = ("seed", "ckpt_path", "hydra", "paths", "logger")
"""Override keys (and their sub-keys) that do not make a run a different variant."""

SKIPPED_SUFFIX = "_skipped"
LOSS_PREFIX = f"{METRIC_PREFIX}loss"


class RowKey(NamedTuple):
    """What a row compares; ``?`` for a method or dataset the run did not record."""

    experiment: str
    method: str
    dataset: str
    variant: str


@dataclass(frozen=True)
class MetricSummary:
    """One metric over the seeds of a row: ``values`` in seed order."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (divisor n - 1); ``None`` for one value."""
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass(frozen=True)
class ResultRow:
    """The runs of one experiment variant, summarised per metric (a metric some runs lack has fewer values)."""

    experiment: str
    method: str
    dataset: str
    variant: str
    seeds: tuple[int, ...]
    metrics: dict[str, MetricSummary]


def _counts(override: str) -> bool:
    key = override_key(override)
    return not any(key == ignored or key.startswith((f"{ignored}.", f"{ignored}/")) for ignored in IGNORED_OVERRIDES)


def variants(records: Sequence[RunRecord]) -> list[str]:
    """Per record, the overrides (space-separated, sorted) that not every run of its experiment has."""
    overrides = [frozenset(filter(_counts, r.identity.overrides)) for r in records]
    shared: dict[str, frozenset[str]] = {}
    for record, own in zip(records, overrides):
        name = record.identity.experiment
        shared[name] = shared[name] & own if name in shared else own
    return [" ".join(sorted(own - shared[r.identity.experiment])) for r, own in zip(records, overrides)]


def row_key(record: RunRecord, variant: str) -> RowKey:
    identity = record.identity
    return RowKey(identity.experiment, identity.method or "?", identity.dataset or "?", variant)


def one_run_per_seed(records: Sequence[RunRecord]) -> tuple[dict[RowKey, list[RunRecord]], list[str]]:
    """Records by row (sorted by dataset, method, experiment, variant), runs in seed order, keeping the
    last-started run of each seed; and notes on the runs replaced."""
    latest: dict[RowKey, dict[int, RunRecord]] = defaultdict(dict)
    notes = []
    for record, variant in zip(records, variants(records)):
        seeds = latest[row_key(record, variant)]
        kept = seeds.get(record.identity.seed)
        if kept is not None:
            older, newer = sorted((kept, record), key=lambda r: r.identity.started_at)
            notes.append(
                f"seed {record.identity.seed} of {record.identity.experiment}: {newer.location} replaces {older.location}"
            )
            record = newer
        seeds[record.identity.seed] = record
    order = sorted(latest, key=lambda k: (k.dataset, k.method, k.experiment, k.variant))
    return {key: [latest[key][seed] for seed in sorted(latest[key])] for key in order}, notes


def default_metrics(records: Sequence[RunRecord]) -> list[str]:
    """Every ``val/`` metric of the runs, sorted, except losses and ``*_skipped`` counts."""
    names = {name for record in records for name in record.metrics}
    return sorted(n for n in names if not n.endswith(SKIPPED_SUFFIX) and not n.startswith(LOSS_PREFIX))


def summarise(rows: dict[RowKey, list[RunRecord]], metrics: Sequence[str]) -> list[ResultRow]:
    """One :class:`ResultRow` per key of ``rows`` (from :func:`one_run_per_seed`) over ``metrics``."""
    summaries = []
    for key, runs in rows.items():
        per_metric = {
            metric: MetricSummary(tuple(run.metrics[metric] for run in runs if metric in run.metrics))
            for metric in metrics
        }
        summaries.append(
            ResultRow(
                *key,
                tuple(run.identity.seed for run in runs),
                {metric: summary for metric, summary in per_metric.items() if summary.n},
            )
        )
    return summaries
