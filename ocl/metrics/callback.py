"""Lightning callback that scores every method's masks on the validation and test sets.

It reads only the batch labels (``batch["masks"]``) and the :class:`~ocl.contracts.output.ModelOutput`
that ``validation_step`` / ``test_step`` return under ``"output"``, so a new method gets
every metric for free. Batches without labels are skipped silently.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric

from ocl.contracts.batch import MASKS
from ocl.contracts.output import ModelOutput
from ocl.metrics.scoring import metric_values, update_metrics

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
    Which masks each metric scores and what it logs: :mod:`ocl.metrics.scoring` (a
    :class:`~ocl.metrics.base.MaskMetric` with ``mask_source`` scores ``output.extras[mask_source]``;
    each of its :meth:`~ocl.metrics.base.MaskMetric.values` is logged as ``{stage}/{key}``, its
    skipped count as ``{stage}/{name}_skipped``).

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
        update_metrics(self.stage_metrics[stage], output, batch[MASKS])

    def _end(self, stage: str, pl_module: LightningModule) -> None:
        metrics = self.stage_metrics[stage]
        for key, value in metric_values(metrics).items():  # the same on every rank: DDP-synchronised
            pl_module.log(f"{stage}/{key}", value, sync_dist=False)
        for metric in metrics.values():
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
