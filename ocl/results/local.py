"""Runs in the folders ``train.py`` writes: ``outputs/<experiment>/<date_time>/`` and
``multirun/<experiment>/<date_time>/<job>/``.

A run folder is a folder with ``run.json`` (:mod:`ocl.utils.run_identity`). Its final metrics are
read from the first of:

1. ``metrics.json``: the validation after the last step (a finished run);
2. ``csv/metrics.csv`` (``logger=csv``): the last logged value of each ``val/`` metric;
3. the W&B log in ``wandb/*run-*/`` (:mod:`ocl.results.wandb_log`): each ``val/`` metric's summary,
   i.e. its last logged value.

2 and 3 serve runs that stopped before the end (preempted, killed): their numbers are those of
the last validation, and the report names the source of every run (``runs.csv``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ocl.results.records import METRIC_PREFIX, ResultsError, RunRecord, validation_metrics
from ocl.results.wandb_log import latest_local_run_log, read_local_run
from ocl.utils.run_identity import RUN_FILE, read_run_identity

METRICS_FILE = "metrics.json"
CSV_LOG = Path("csv") / "metrics.csv"


def find_run_folders(roots: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Run folders under ``roots`` (searched recursively), and folders with ``metrics.json`` but no
    ``run.json`` (``eval.py`` runs, runs from before ``run.json``), both sorted."""
    runs, without_identity = [], []
    for root in roots:
        if not root.is_dir():
            raise ResultsError(
                f"run folder not found: {root.resolve()}. Pass folders that train.py wrote runs into "
                "(e.g. --runs outputs/ multirun/), or read W&B with --wandb-project."
            )
        for folder, subfolders, files in os.walk(root):
            if RUN_FILE in files or METRICS_FILE in files:
                (runs if RUN_FILE in files else without_identity).append(Path(folder))
                subfolders.clear()  # nothing below a run folder is another run
    return sorted(runs), sorted(without_identity)


def _last_logged_in_csv(path: Path) -> dict[str, float]:
    """The last non-empty value of each ``val/`` column of a Lightning ``CSVLogger`` file."""
    last: dict[str, float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            last.update({k: float(v) for k, v in row.items() if k and k.startswith(METRIC_PREFIX) and v})
    return last


def final_metrics(folder: Path) -> tuple[dict[str, float], str]:
    """The run's final ``val/`` metrics and the file they came from (``({}, "")`` when there are none)."""
    if (folder / METRICS_FILE).is_file():
        return validation_metrics(json.loads((folder / METRICS_FILE).read_text())), METRICS_FILE
    if (folder / CSV_LOG).is_file():
        metrics = _last_logged_in_csv(folder / CSV_LOG)
        if metrics:
            return metrics, str(CSV_LOG)
    log_file = latest_local_run_log(folder)
    if log_file is not None:
        metrics = validation_metrics(read_local_run(log_file).summary)
        if metrics:
            return metrics, "wandb offline log"
    return {}, ""


def read_local_runs(roots: Sequence[Path]) -> tuple[list[RunRecord], list[str]]:
    """The runs under ``roots`` that have metrics, and notes on the folders left out.

    Raises :class:`ResultsError` when a root is missing or holds no run folder.
    """
    folders, without_identity = find_run_folders(roots)
    notes = []
    if without_identity:
        notes.append(
            f"left out {len(without_identity)} folder(s) with metrics.json but no {RUN_FILE} "
            f"(eval.py runs, or runs from before {RUN_FILE}), e.g. {without_identity[0]}"
        )
    if not folders:
        searched = ", ".join(str(root.resolve()) for root in roots)
        raise ResultsError(
            f"no run folders under {searched}: a run folder holds the {RUN_FILE} that train.py writes. "
            + (notes[0] if notes else "Train runs first, or pass the folders they went to (--runs).")
        )
    records = []
    for folder in folders:
        try:
            identity = read_run_identity(folder)
            metrics, source = final_metrics(folder)
        except (ValueError, OSError, csv.Error) as error:
            notes.append(f"left out {folder}: {error}")
            continue
        if not metrics:
            notes.append(f"left out {folder}: no validation metrics yet (metrics.json, csv/ or wandb/ logs)")
            continue
        records.append(RunRecord(identity, metrics, source, str(folder)))
    return records, notes
