"""Lightning callback that scores every method's masks on the validation and test sets.

It reads only the batch labels (``batch["masks"]``) and the :class:`~ocl.contracts.output.ModelOutput`
that ``validation_step`` / ``test_step`` return under ``"output"``, so a new method gets
every metric for free. Batches without labels are skipped silently.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric

from ocl.contracts.batch import MASKS
from ocl.contracts.output import ModelOutput
from ocl.metrics.classes import SegmentationMetric
from ocl.metrics.protocol import segmentation_contingency

STAGES = ("val", "test")


class MetricsCallback(Callback):
    """Accumulate segmentation metrics per epoch and log ``{stage}/{name}``.

    Also logs ``{stage}/{name}_skipped``: samples with nothing to score (e.g. no foreground).
    The hard segmentation and contingency table of a batch are computed once and shared by
    all :class:`~ocl.metrics.classes.SegmentationMetric` instances.
    Validation and test keep separate metric instances, moved to the module's device and
    reset at every epoch start. Values are synchronised across DDP ranks by torchmetrics'
    ``compute``, hence ``sync_dist=False`` when logging.

    The metrics are declared in config (``configs/metrics/``: the defaults, the data set's
    protocol, e.g. DAVIS's J&F, and the method's other masks, e.g. SMTC's semantic masks).
    A metric whose ``mask_source`` is set (:class:`~ocl.metrics.classes.SegmentationMetric`)
    scores ``output.extras[mask_source]`` (same layout as ``output.masks``) instead of ``output.masks``. A metric with ``compute_all()`` logs each of
    its entries as ``{stage}/{key}``; one with ``skipped()`` also logs ``{stage}/{name}_skipped``.

    Args:
        metrics: name -> metric whose ``update(soft_masks [B, T, K, h, w], masks [B, T, H, W])``
            scores a batch (copied per stage).
    """

    def __init__(self, metrics: Mapping[str, Metric]) -> None:
        self.stage_metrics = {stage: {name: copy.deepcopy(m) for name, m in metrics.items()} for stage in STAGES}

    def _start(self, stage: str, pl_module: LightningModule) -> None:
        for metric in self.stage_metrics[stage].values():
            metric.to(pl_module.device)
            metric.reset()

    def _update(self, stage: str, outputs: Any, batch: Mapping[str, Any]) -> None:
        if MASKS not in batch:
            return
        output = outputs.get("output") if isinstance(outputs, Mapping) else None
        if not isinstance(output, ModelOutput):
            raise TypeError(
                f"MetricsCallback needs the {stage} step to return {{'output': ModelOutput}}, got {type(outputs)}"
            )
        masks = batch[MASKS]
        tables: dict[str | None, torch.Tensor] = {}  # one resize + count per mask source, shared
        for metric in self.stage_metrics[stage].values():
            source = getattr(metric, "mask_source", None)
            soft_masks = output.masks if source is None else output.extras[source]
            if isinstance(metric, SegmentationMetric):
                if source not in tables:
                    tables[source] = segmentation_contingency(soft_masks, masks)
                metric.update(soft_masks, masks, table=tables[source])
            else:
                metric.update(soft_masks, masks)

    def _end(self, stage: str, pl_module: LightningModule) -> None:
        for name, metric in self.stage_metrics[stage].items():
            if metric.update_called:  # same on every rank: all ranks see labelled batches or none
                values = metric.compute_all() if hasattr(metric, "compute_all") else {name: metric.compute()}
                for key, value in values.items():
                    pl_module.log(f"{stage}/{key}", float(value), sync_dist=False)
                if hasattr(metric, "skipped"):
                    pl_module.log(f"{stage}/{name}_skipped", float(metric.skipped()), sync_dist=False)
            metric.reset()

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("val", pl_module)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update("val", outputs, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end("val", pl_module)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test", pl_module)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update("test", outputs, batch)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end("test", pl_module)
