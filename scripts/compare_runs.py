"""Compare runs over seeds: mean ± sample std per experiment (method x dataset) and metric.

Reads local run folders (no network) or a W&B project, and writes into --out a markdown table
(results.md, also printed), a tidy CSV (results.csv: one line per row and metric), the runs used
(runs.csv) and a bar chart (results.png)::

    python scripts/compare_runs.py --group slotcurri_movi                  # runs in ./outputs and ./multirun
    python scripts/compare_runs.py --runs multirun/ --group slotcurri_movi slotcontrast_movi_c
    python scripts/compare_runs.py --wandb-project ocl --entity <you> --group slotcurri_movi
    python scripts/compare_runs.py --metrics video_fg_ari mbo --out results/movi

A local run folder is one with the run.json that train.py writes; its metrics come from
metrics.json, or for a run that stopped early from the last validation in csv/metrics.csv or its
W&B log (ocl/results/local.py). Groups are experiment names (the W&B group); each seed counts once
(the last run of a seed wins); runs of one experiment with different overrides form separate rows
(ocl/results/summary.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ocl.results.local import read_local_runs
from ocl.results.plot import plot_results
from ocl.results.records import METRIC_PREFIX, ResultsError, RunRecord
from ocl.results.report import markdown_table, write_runs_csv, write_summary_csv
from ocl.results.summary import default_metrics, one_run_per_seed, summarise

DEFAULT_RUN_FOLDERS = ("outputs", "multirun")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--runs", nargs="+", type=Path, help="folders searched for run folders (default: outputs multirun)"
    )
    source.add_argument("--wandb-project", help="read this W&B project through the W&B API instead")
    parser.add_argument("--entity", help="W&B entity of --wandb-project (default: your default entity)")
    parser.add_argument("--group", nargs="+", default=[], help="experiments (W&B groups) to compare; default: all")
    parser.add_argument(
        "--metrics", nargs="+", help="metrics, e.g. video_fg_ari mbo (val/ is implied); default: every val/ metric"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: outputs/comparisons/<groups or all>)")
    return parser.parse_args(argv)


def read_runs(args: argparse.Namespace) -> tuple[list[RunRecord], list[str]]:
    """The runs of the chosen source in the chosen groups, and notes on what was left out."""
    if args.wandb_project:
        from ocl.results.wandb_api import read_wandb_runs

        return read_wandb_runs(args.wandb_project, args.entity, args.group)
    roots = args.runs or [Path(name) for name in DEFAULT_RUN_FOLDERS if Path(name).is_dir()]
    if not roots:
        raise ResultsError(
            f"no {' or '.join(DEFAULT_RUN_FOLDERS)} folder in {Path.cwd()}: run from where train.py ran, "
            "or pass the run folders (--runs) or a W&B project (--wandb-project)"
        )
    records, notes = read_local_runs(roots)
    if args.group:
        found = sorted({record.identity.experiment for record in records})
        records = [record for record in records if record.identity.experiment in args.group]
        if not records:
            raise ResultsError(
                f"no runs of {' '.join(args.group)} in {' '.join(map(str, roots))}; found: {' '.join(found)}"
            )
    return records, notes


def chosen_metrics(args: argparse.Namespace, records: list[RunRecord]) -> list[str]:
    """``--metrics`` with ``val/`` prefixed where missing, or every ``val/`` metric of the runs."""
    if not args.metrics:
        return default_metrics(records)
    metrics = [name if name.startswith(METRIC_PREFIX) else METRIC_PREFIX + name for name in args.metrics]
    logged = {name for record in records for name in record.metrics}
    unknown = [name for name in metrics if name not in logged]
    if unknown:
        raise ResultsError(f"no run logged {' '.join(unknown)}; the runs logged: {' '.join(sorted(logged))}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Compare the runs; print the table and where the files went, or the error (return 1)."""
    args = parse_args(argv)
    try:
        records, notes = read_runs(args)
        if not records:
            raise ResultsError("no runs with validation metrics" + "".join(f"; {note}" for note in notes))
        metrics = chosen_metrics(args, records)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    found = {record.identity.experiment for record in records}
    notes += [f"no runs of {group}" for group in args.group if group not in found]
    runs, replaced = one_run_per_seed(records)
    rows = summarise(runs, metrics)
    out = args.out or Path("outputs") / "comparisons" / ("+".join(args.group) or "all")
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, metrics)
    (out / "results.md").write_text(table)
    write_summary_csv(rows, out / "results.csv")
    write_runs_csv(runs, metrics, out / "runs.csv")
    plot_results(rows, metrics, out / "results.png")
    for note in [*notes, *replaced]:
        print(f"note: {note}", file=sys.stderr)
    print(table)
    print(f"{sum(map(len, runs.values()))} runs; written: {out}/results.md, results.csv, runs.csv, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
