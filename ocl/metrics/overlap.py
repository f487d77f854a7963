"""Mask-overlap metrics: mean best overlap (mBO) and Hungarian-matched mean IoU (mIoU).

Objects are the true ids ``1..M`` present in a sample; background ``0`` is not an object,
but predicted masks do cover background pixels (they enlarge the union). ``IGNORE_ID`` pixels
are excluded from both predicted and true masks. In video mode (default) a sample is a whole
video and IoU is spatio-temporal (counted over all frames); otherwise every frame is a
sample. A sample without any object is not scored.

All IoU matrices come from the contingency tables of :func:`~ocl.metrics.protocol.contingency`
on the device; only the small Hungarian assignment of mIoU runs per sample on the CPU.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from ocl.metrics.protocol import per_sample_scores


def iou_from_contingency(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU between every predicted id and every object.

    Args:
        table: float64 ``[S, P, M + 1]`` pixel counts (column ``0`` = background).

    Returns:
        ``iou`` float64 ``[S, P, M]`` (column ``m`` is object ``m + 1``) and ``present`` bool
        ``[S, M]`` (the object has at least one pixel in the sample).
    """
    intersection = table[:, :, 1:]
    pred_area = table.sum(dim=2, keepdim=True)
    true_area = intersection.sum(dim=1, keepdim=True)
    union = pred_area + true_area - intersection
    return intersection / union.clamp_min(1.0), true_area.squeeze(1) > 0


def _mean_over_objects(per_object: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``per_object [S, M]`` over present objects: ``(scores [S], scored [S])``."""
    count = present.sum(dim=1)
    total = torch.where(present, per_object, torch.zeros_like(per_object)).sum(dim=1)
    return total / count.clamp_min(1), count > 0


def mbo_from_contingency(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mBO of every sample from ``table [S, P, M + 1]``: ``(scores float64 [S], scored bool [S])``."""
    iou, present = iou_from_contingency(table)
    return _mean_over_objects(iou.amax(dim=1), present)


def fragmentation_from_contingency(table: torch.Tensor, min_share: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Over-fragmentation of every sample from ``table [S, P, M + 1]``: the mean over present
    objects of the number of slots that each own at least ``min_share`` of the object's pixels
    (1 = every object in one slot; higher = objects split). -> ``(scores float64 [S], scored bool [S])``."""
    objects = table[..., 1:]  # [S, P, M]
    area = objects.sum(dim=1)  # [S, M]
    owners = (objects >= min_share * area.unsqueeze(1)) & (objects > 0)
    return _mean_over_objects(owners.sum(dim=1).to(torch.float64), area > 0)


def miou_from_contingency(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian mIoU of every sample from ``table [S, P, M + 1]``: ``(scores [S], scored [S])``.

    The matching maximises the summed IoU (``scipy.optimize.linear_sum_assignment``) between
    the present objects and all predicted ids; with more objects than ids, unmatched objects
    contribute IoU ``0``.
    """
    iou, present = iou_from_contingency(table)
    iou_cpu, present_cpu = iou.cpu().numpy(), present.cpu().numpy()
    matched = torch.zeros(present.shape, dtype=torch.float64)
    for sample, (sample_iou, sample_present) in enumerate(zip(iou_cpu, present_cpu, strict=True)):
        objects = sample_present.nonzero()[0]
        if objects.size:
            rows, cols = linear_sum_assignment(sample_iou[:, objects], maximize=True)
            matched[sample, objects[cols]] = torch.from_numpy(sample_iou[rows, objects[cols]])
    return _mean_over_objects(matched.to(iou.device), present)


def mean_best_overlap(
    pred_ids: torch.Tensor, true_ids: torch.Tensor, num_pred: int, video: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over objects of the best IoU over all predicted ids (mBO).

    Args:
        pred_ids: int64 ``[B, T, H, W]`` predicted ids in ``0..num_pred-1``.
        true_ids: int64 ``[B, T, H, W]`` labels (``0`` background, ``1..M`` objects, ``-1`` ignored).
        num_pred: number of predicted ids ``K``.
        video: one sample per video (spatio-temporal IoU) or one per frame.

    Returns:
        ``scores`` float64 and ``scored`` bool, ``[B]`` if ``video`` else ``[B, T]``.
    """
    return per_sample_scores(mbo_from_contingency, pred_ids, true_ids, num_pred, video)


def mean_iou(
    pred_ids: torch.Tensor, true_ids: torch.Tensor, num_pred: int, video: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean IoU over objects after Hungarian matching (:func:`miou_from_contingency`).

    Arguments and returns as :func:`mean_best_overlap`.
    """
    return per_sample_scores(miou_from_contingency, pred_ids, true_ids, num_pred, video)
