"""torchmetrics wrappers that accumulate segmentation scores over batches (and DDP ranks).

Each metric takes the method's soft masks and the batch labels, applies the evaluation
protocol (:func:`~ocl.metrics.protocol.hard_segmentation`) and averages a per-sample score
over all scored samples. Samples with nothing to score are counted in ``num_skipped``.
States are float64 sums, so the DDP reduction is exact.

The per-frame contingency table (:func:`~ocl.metrics.protocol.segmentation_contingency`)
holds everything every metric here needs; pass it as ``update(..., table=table)`` to share
one resize + count between several metrics (the callback does).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from ocl.metrics.ari import fg_ari_from_contingency
from ocl.metrics.base import MaskMetric
from ocl.metrics.overlap import fragmentation_from_contingency, mbo_from_contingency, miou_from_contingency
from ocl.metrics.protocol import sample_tables, segmentation_contingency


class SegmentationMetric(MaskMetric):
    """Mean of a per-sample score over scored samples; subclasses choose the score.

    Args:
        video: score each video as one sample (all frames together) or every frame.
        mask_source: score ``output.extras[mask_source]`` instead of ``output.masks``
            (:class:`~ocl.metrics.base.MaskMetric`; e.g. SMTC's ``semantic_masks``).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    score_sum: torch.Tensor
    num_scored: torch.Tensor
    num_skipped: torch.Tensor

    def __init__(self, video: bool = True, mask_source: str | None = None, **kwargs: Any) -> None:
        super().__init__(mask_source=mask_source, **kwargs)
        self.video = video
        for name in ("score_sum", "num_scored", "num_skipped"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @abstractmethod
    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores float64 [S], scored bool [S])`` of per-sample tables ``[S, P, M + 1]``."""

    def sample_scores(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, scored)`` of the per-frame tables ``[B, T, P, M + 1]`` of a batch."""
        return self.score(sample_tables(table, self.video))

    def update(self, soft_masks: torch.Tensor, true_masks: torch.Tensor, table: torch.Tensor | None = None) -> None:
        """Accumulate a batch.

        Args:
            soft_masks: ``[B, T, K, h, w]`` soft masks of the method.
            true_masks: int64 ``[B, T, H, W]`` labels (``0`` background, ``-1`` ignored).
            table: ``segmentation_contingency(soft_masks, true_masks)`` if already computed.
        """
        if table is None:
            table = segmentation_contingency(soft_masks, true_masks)
        scores, scored = self.sample_scores(table)
        self.score_sum += scores[scored].sum()
        self.num_scored += scored.sum()
        self.num_skipped += (~scored).sum()

    def compute(self) -> torch.Tensor:
        """Mean score over scored samples (NaN if none was scored)."""
        return self.score_sum / self.num_scored

    def skipped(self) -> torch.Tensor:
        """Number of skipped samples, summed over DDP ranks."""
        with self.sync_context():
            return self.num_skipped.clone()


class VideoFGARI(SegmentationMetric):
    """FG-ARI with each video as one point set (see :mod:`ocl.metrics.ari`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(video=True, **kwargs)

    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fg_ari_from_contingency(table)


class FrameFGARI(SegmentationMetric):
    """FG-ARI of every frame, averaged over frames (see :mod:`ocl.metrics.ari`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(video=False, **kwargs)

    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fg_ari_from_contingency(table)


class MeanBestOverlap(SegmentationMetric):
    """Mean best overlap, spatio-temporal by default (see :mod:`ocl.metrics.overlap`)."""

    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mbo_from_contingency(table)


class MeanIoU(SegmentationMetric):
    """Hungarian-matched mean IoU, spatio-temporal by default (see :mod:`ocl.metrics.overlap`)."""

    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return miou_from_contingency(table)


class ObjectFragmentation(SegmentationMetric):
    """Slots per object: how many slots own >= ``min_share`` of an object's pixels (lower is
    better; 1 = no splitting), spatio-temporal by default (SlotCurri's over-fragmentation)."""

    higher_is_better = False

    def __init__(self, min_share: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_share = min_share

    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fragmentation_from_contingency(table, self.min_share)


class LabelStability(SegmentationMetric):
    """How often an object keeps the same predicted id from one frame to the next (higher is better).

    In each frame, an object's id is the predicted id covering most of its pixels. A video's
    score is the share of consecutive frame pairs, over its objects visible in both frames of a
    pair, where that id is the same; videos without such pairs are skipped. It measures the
    temporal consistency of masks whose ids carry meaning across frames (SMTC's semantic masks);
    a method that puts everything in one mask scores 1, so read it beside FG-ARI or mBO.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(video=True, **kwargs)

    def sample_scores(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score(table)

    def score(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame tables ``[B, T, P, M + 1]`` -> one score per video."""
        objects = table[..., 1:]  # [B, T, P, M]
        visible = objects.sum(dim=2) > 0  # [B, T, M]
        majority = objects.argmax(dim=2)
        pairs = visible[:, 1:] & visible[:, :-1]
        kept = (majority[:, 1:] == majority[:, :-1]) & pairs
        counts = pairs.flatten(1).sum(dim=1)
        return kept.flatten(1).sum(dim=1).double() / counts.clamp_min(1), counts > 0
