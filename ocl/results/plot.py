"""Bar charts of summarised results: one panel per metric, datasets on the x axis, a bar per method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ocl.results.summary import ResultRow

MAX_COLUMNS = 3
MAX_BAR_WIDTH = 0.35


def series_label(row: ResultRow, rows: Sequence[ResultRow]) -> str:
    """The method (``+ [variant]``); the experiment instead when two rows would share a label on one dataset."""

    def label(r: ResultRow, name: str) -> str:
        return f"{name} [{r.variant}]" if r.variant else name

    by_method = [(label(r, r.method), r.dataset) for r in rows]
    ambiguous = len(set(by_method)) < len(by_method)
    return label(row, row.experiment if ambiguous else row.method)


def plot_results(rows: Sequence[ResultRow], metrics: Sequence[str], path: Path) -> None:
    """Save a PNG with one bar chart per metric (a panel each, up to 3 per line): mean over seeds, error
    bars of one sample std; one colour per :func:`series_label`, the datasets on the x axis."""
    from matplotlib.figure import Figure  # no pyplot: no display backend needed

    datasets = sorted({row.dataset for row in rows})
    labels = list(dict.fromkeys(series_label(row, rows) for row in rows))
    width = min(0.8 / len(labels), MAX_BAR_WIDTH)
    columns = min(len(metrics), MAX_COLUMNS)
    panel_width = max(3.5, 0.6 + 0.45 * len(datasets) * len(labels))
    figure = Figure(figsize=(panel_width * columns, 3.0 * -(-len(metrics) // columns) + 0.6), layout="constrained")
    axes = figure.subplots(-(-len(metrics) // columns), columns, squeeze=False).ravel()
    for axis, metric in zip(axes, metrics):
        for index, label in enumerate(labels):
            bars = [
                (datasets.index(row.dataset), row.metrics[metric])
                for row in rows
                if series_label(row, rows) == label and metric in row.metrics
            ]
            axis.bar(
                [position + (index - (len(labels) - 1) / 2) * width for position, _ in bars],
                [summary.mean for _, summary in bars],
                width,
                yerr=[math.nan if summary.std is None else summary.std for _, summary in bars],  # nan: no bar
                capsize=3,
                color=f"C{index % 10}",
                label=label,
            )
        axis.set_xticks(range(len(datasets)), datasets)
        axis.set_title(metric, fontsize="medium")
    for axis in axes[len(metrics) :]:
        axis.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside upper center", ncols=min(len(labels), 4), fontsize="small")
    figure.supxlabel("mean over seeds; error bars: sample std (n - 1), none for one seed", fontsize="small")
    figure.savefig(path, dpi=120)
