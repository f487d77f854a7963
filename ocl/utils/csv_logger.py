"""A CSV logger whose resumed runs continue ``metrics.csv`` instead of deleting it.

Lightning's :class:`~lightning.pytorch.loggers.CSVLogger` deletes an existing ``metrics.csv``
when a run starts in a folder that has one, so a run resumed in its own folder (after a
preemption, see :mod:`ocl.callbacks.preemption`) would lose the rows of its first part.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ContinuingExperimentWriter(ExperimentWriter):
    """:class:`ExperimentWriter` that keeps the rows of an existing ``metrics.csv`` logged at
    steps before the first step it writes (a run resumed at step ``s`` re-logs from ``s`` on,
    so rows of steps ``>= s`` belong to work the resumed run redoes; a fresh run drops them all)."""

    def _check_log_dir_exists(self) -> None:
        self._previous_rows: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                self._previous_rows = list(reader)
                self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self._previous_rows is not None and self.metrics:
            first_step = min(int(row["step"]) for row in self.metrics)
            kept = [row for row in self._previous_rows if row.get("step") and int(float(row["step"])) < first_step]
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._previous_rows = None
        super().save()


class ContinuingCSVLogger(CSVLogger):
    """:class:`CSVLogger` writing through :class:`ContinuingExperimentWriter` (same arguments)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
