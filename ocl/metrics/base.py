"""The base of the metrics of a method's soft masks (:mod:`ocl.metrics.classes`, :mod:`ocl.metrics.jandf`)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torchmetrics import Metric

from ocl.contracts.output import ModelOutput


class MaskMetric(Metric):
    """A metric of a method's soft masks: which masks it scores, what it reports, what it skipped.

    Args:
        mask_source: score ``output.extras[mask_source]`` (same layout as ``output.masks``)
            instead of ``output.masks``.
    """

    def __init__(self, mask_source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_source = mask_source

    def soft_masks(self, output: ModelOutput) -> torch.Tensor:
        """The ``[B, T, K, h, w]`` masks of ``output`` this metric scores."""
        if self.mask_source is None:
            return output.masks
        if self.mask_source not in output.extras:
            raise KeyError(
                f"{type(self).__name__} scores output.extras[{self.mask_source!r}], which this method does not "
                f"return (it has {sorted(output.extras)})"
            )
        return output.extras[self.mask_source]

    def values(self, name: str) -> dict[str, torch.Tensor]:
        """What the metric reports, by key (default ``{name: compute()}``), synchronised over DDP ranks."""
        return {name: self.compute()}

    @abstractmethod
    def skipped(self) -> torch.Tensor:
        """Number of samples with nothing to score, summed over DDP ranks."""
