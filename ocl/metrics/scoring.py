"""Score a method's output with a set of metrics: the one path shared by the metrics callback
(every validation and test batch) and the notebook's clip scores (:mod:`ocl.predict.clips`).

A metric scores ``output.masks`` unless it is a :class:`~ocl.metrics.base.MaskMetric` whose
``mask_source`` names another entry of ``output.extras`` (e.g. SMTC's ``semantic_masks``). Any
torchmetrics ``Metric`` with ``update(soft_masks [B, T, K, h, w], labels [B, T, H, W])`` can be in the set.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchmetrics import Metric

from ocl.contracts.output import ModelOutput
from ocl.metrics.base import MaskMetric
from ocl.metrics.classes import SegmentationMetric
from ocl.metrics.protocol import segmentation_contingency


def update_metrics(metrics: Mapping[str, Metric], output: ModelOutput, labels: torch.Tensor) -> None:
    """Accumulate one batch: ``output`` of ``B`` clips, int64 ``labels [B, T, H, W]``.

    Metrics that score the same masks with a contingency table share one resize + count
    (:class:`~ocl.metrics.classes.SegmentationMetric`).
    """
    tables: dict[str | None, torch.Tensor] = {}
    for metric in metrics.values():
        soft_masks = metric.soft_masks(output) if isinstance(metric, MaskMetric) else output.masks
        if isinstance(metric, SegmentationMetric):
            if metric.mask_source not in tables:
                tables[metric.mask_source] = segmentation_contingency(soft_masks, labels)
            metric.update(soft_masks, labels, table=tables[metric.mask_source])
        else:
            metric.update(soft_masks, labels)


def metric_values(metrics: Mapping[str, Metric], with_skipped: bool = True) -> dict[str, float]:
    """key -> value of every metric that was updated (each :meth:`~ocl.metrics.base.MaskMetric.values`; others
    ``{name: compute()}``), and ``{name}_skipped`` counts of :class:`~ocl.metrics.base.MaskMetric` s if ``with_skipped``."""
    values: dict[str, float] = {}
    for name, metric in metrics.items():
        if not metric.update_called:
            continue
        reported = metric.values(name) if isinstance(metric, MaskMetric) else {name: metric.compute()}
        values |= {key: float(value) for key, value in reported.items()}
        if with_skipped and isinstance(metric, MaskMetric):
            values[f"{name}_skipped"] = float(metric.skipped())
    return values
