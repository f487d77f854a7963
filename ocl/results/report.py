"""Write summarised results: a markdown table, a tidy CSV of the summaries and a CSV of the runs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ocl.results.records import RunRecord
from ocl.results.summary import MetricSummary, ResultRow, RowKey

DECIMALS = 4


def format_cell(summary: MetricSummary | None, seeds: int) -> str:
    """``mean ± std`` (just the mean for one value, ``-`` for none), with ``(n=k)`` when k < ``seeds``."""
    if summary is None:
        return "-"
    text = f"{summary.mean:.{DECIMALS}f}"
    if summary.std is not None:
        text += f" ± {summary.std:.{DECIMALS}f}"
    return text + (f" (n={summary.n})" if summary.n != seeds else "")


def markdown_table(rows: Sequence[ResultRow], metrics: Sequence[str]) -> str:
    """One line per row, one column per metric; a ``variant`` column only when a row has one."""
    with_variant = any(row.variant for row in rows)
    header = ["experiment", "method", "dataset", *(["variant"] if with_variant else []), "n", "seeds", *metrics]
    lines = [
        "Mean ± sample std (divisor n - 1) over n seeds; (n=k): only k of the seeds logged the metric.\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * (len(header) - len(metrics)) + "---:|" * len(metrics),
    ]
    for row in rows:
        cells = [row.experiment, row.method, row.dataset, *([row.variant] if with_variant else [])]
        cells += [str(len(row.seeds)), " ".join(map(str, row.seeds))]
        cells += [format_cell(row.metrics.get(metric), len(row.seeds)) for metric in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary_csv(rows: Sequence[ResultRow], path: Path) -> None:
    """One line per row and metric: experiment, method, dataset, variant, metric, n, mean, std (empty for n = 1), seeds."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "method", "dataset", "variant", "metric", "n", "mean", "std", "seeds"])
        for row in rows:
            for metric, summary in row.metrics.items():
                std = "" if summary.std is None else repr(summary.std)
                writer.writerow(
                    [row.experiment, row.method, row.dataset, row.variant, metric, summary.n, repr(summary.mean), std]
                    + [" ".join(map(str, row.seeds))]
                )


def write_runs_csv(runs: dict[RowKey, list[RunRecord]], metrics: Sequence[str], path: Path) -> None:
    """One line per run that went into the summary: its row, seed, where it was read from, git commit, metrics."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["experiment", "method", "dataset", "variant", "seed", "source", "location", "git_commit", "git_dirty"]
            + ["started_at", *metrics]
        )
        for key, records in runs.items():
            for record in records:
                identity = record.identity
                writer.writerow(
                    [*key, identity.seed, record.source, record.location, identity.git_commit, identity.git_dirty]
                    + [identity.started_at, *(record.metrics.get(metric, "") for metric in metrics)]
                )
