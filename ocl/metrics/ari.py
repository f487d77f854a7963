"""Foreground adjusted Rand index (FG-ARI), vectorised over samples on the device.

Only foreground pixels are scored: true id ``> 0``; background ``0`` and ``IGNORE_ID`` pixels
are dropped. Two granularities share one core:

* :func:`video_fg_ari`: all frames of a video form one point set, so a slot must keep its
  object through time to score well.
* :func:`frame_fg_ari`: every frame is its own sample.

Both reduce to :func:`fg_ari_from_contingency` on the tables of
:func:`~ocl.metrics.protocol.contingency`; no loop over pixels, frames or samples.

Policy (identical to ``sklearn.metrics.adjusted_rand_score`` on the foreground pixels):

* A sample without foreground pixels is **not scored** (``scored=False``, score ``0``); the
  metric classes count it as skipped instead of scoring it ``1.0``.
* A single object: ARI is ``1.0`` when one slot covers the whole object and ``0.0`` when the
  object is split across several slots (sklearn's degenerate cases: both labelings with one
  cluster each, or every pixel its own cluster in both, score ``1.0``).
* In general, full agreement of the two partitions scores ``1.0``.

The maths uses sklearn's pair-confusion form in float64. Pair counts are exact integers in
float64 up to ~9.5e7 scored pixels per sample; beyond that, errors stay at float64 rounding.
"""

from __future__ import annotations

import torch

from ocl.metrics.protocol import per_sample_scores


def fg_ari_from_contingency(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FG-ARI of every sample from its contingency table.

    Args:
        table: float64 ``[S, P, M + 1]`` pixel counts; column ``0`` (background) is dropped.

    Returns:
        ``scores`` float64 ``[S]`` and ``scored`` bool ``[S]`` (samples with foreground pixels).
    """
    fg = table[:, :, 1:]
    n = fg.sum(dim=(1, 2))
    sum_squares = fg.square().sum(dim=(1, 2))
    pred_pairs = fg.sum(dim=2).square().sum(dim=1)
    true_pairs = fg.sum(dim=1).square().sum(dim=1)
    # Ordered-pair confusion counts, as in sklearn.metrics.cluster.pair_confusion_matrix.
    fp = pred_pairs - sum_squares
    fn = true_pairs - sum_squares
    tp = sum_squares - n
    tn = n.square() - fp - fn - sum_squares
    agree = (fp == 0) & (fn == 0)
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    ari = 2.0 * (tp * tn - fn * fp) / torch.where(agree, torch.ones_like(denominator), denominator)
    scored = n > 0
    scores = torch.where(agree, torch.ones_like(ari), ari)
    return torch.where(scored, scores, torch.zeros_like(scores)), scored


def video_fg_ari(pred_ids: torch.Tensor, true_ids: torch.Tensor, num_pred: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FG-ARI with all frames of a video as one point set.

    Args:
        pred_ids: int64 ``[B, T, H, W]`` predicted slot ids in ``0..num_pred-1``.
        true_ids: int64 ``[B, T, H, W]`` labels (``0`` background, ``1..M`` objects, ``-1`` ignored).
        num_pred: number of slots ``K``.

    Returns:
        ``scores`` float64 ``[B]`` and ``scored`` bool ``[B]``.
    """
    return per_sample_scores(fg_ari_from_contingency, pred_ids, true_ids, num_pred, video=True)


def frame_fg_ari(pred_ids: torch.Tensor, true_ids: torch.Tensor, num_pred: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FG-ARI of every frame separately; arguments as :func:`video_fg_ari`.

    Returns:
        ``scores`` float64 ``[B, T]`` and ``scored`` bool ``[B, T]``.
    """
    return per_sample_scores(fg_ari_from_contingency, pred_ids, true_ids, num_pred, video=False)
