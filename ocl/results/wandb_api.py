"""Runs from a W&B project through W&B's public API (needs credentials and network)."""

from __future__ import annotations

from collections.abc import Sequence

from ocl.results.records import ResultsError, RunRecord, validation_metrics
from ocl.utils.loggers import wandb_is_configured
from ocl.utils.run_identity import RunIdentity


def read_wandb_runs(
    project: str, entity: str | None = None, groups: Sequence[str] = ()
) -> tuple[list[RunRecord], list[str]]:
    """The finished or stopped runs of ``entity/project`` (in ``groups`` if given) and notes on those left out.

    A run's identity is its ``run`` config entry (written by ``ocl.utils.loggers.make_wandb_logger``),
    its metrics the ``val/`` entries of its summary (last logged values).
    Raises :class:`ResultsError` without credentials, network or the project.
    """
    if not wandb_is_configured():
        raise ResultsError(
            "no W&B credentials (WANDB_API_KEY or `wandb login`), so the W&B API cannot be read. "
            "Log in, or compare the local run folders instead: --runs outputs/ multirun/"
        )
    import requests
    import wandb

    path = f"{entity}/{project}" if entity else project
    filters = {"group": {"$in": list(groups)}} if groups else {}
    records, notes = [], []
    try:
        for run in wandb.Api(timeout=60).runs(path, filters=filters):
            location = "/".join(run.path)
            if "run" not in run.config:
                notes.append(
                    f"left out W&B run {location}: no `run` entry in its config (logged before run identities)"
                )
                continue
            metrics = validation_metrics(run.summary_metrics)
            if not metrics:
                notes.append(f"left out W&B run {location}: no validation metrics yet")
                continue
            records.append(RunRecord(RunIdentity.from_dict(run.config["run"]), metrics, "W&B API", location))
    except (wandb.errors.Error, requests.RequestException, ValueError, KeyError) as error:
        raise ResultsError(
            f"could not read the W&B project {path!r}: {error}. Check --wandb-project/--entity and the network, "
            "or compare the local run folders instead: --runs outputs/ multirun/"
        ) from None
    return records, notes
