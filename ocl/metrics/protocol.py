"""Pieces of the evaluation protocol shared by every segmentation metric.

* :func:`hard_segmentation` turns a method's soft masks into one slot id per label pixel
  (bilinear resize to the label resolution, then argmax over slots). On the CPU the same label
  maps come from compiled loops that never hold the resized stack
  (:mod:`ocl.metrics.cpu_segmentation`); on other devices from ``F.interpolate``.
* :func:`contingency` counts pixels per (frame, predicted id, true id) with one ``bincount``.
  FG-ARI, mBO and mIoU are all computed from these tables, in both granularities:
  :func:`sample_tables` sums the frames of a video (video mode: all frames form one point
  set) or keeps every frame as its own sample.
* :func:`segmentation_contingency` chains the two, so several metrics can share one table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ocl.contracts.batch import IGNORE_ID
from ocl.metrics.cpu_segmentation import MAX_SLOTS, segment_and_count

MAX_RESIZE_ELEMENTS = 1 << 22
"""Upper bound on the elements of one resized chunk (``frames * K * H * W``): 16 MB in fp32,
small enough to stay cache-friendly on CPU and to bound memory on long, large videos."""


def uses_cpu_kernel(soft_masks: torch.Tensor) -> bool:
    """Whether ``soft_masks [B, T, K, h, w]`` go through :mod:`ocl.metrics.cpu_segmentation` (on the
    CPU, at most its :data:`~ocl.metrics.cpu_segmentation.MAX_SLOTS` slots) rather than torch's resize."""
    return soft_masks.device.type == "cpu" and soft_masks.shape[2] <= MAX_SLOTS


def hard_segmentation(soft_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize soft masks to the label size and take the argmax over slots.

    Ties go to the lowest slot index. On the CPU the compiled loops of
    :mod:`ocl.metrics.cpu_segmentation` give the same ids without resizing every slot (up to its
    127 slots, :func:`uses_cpu_kernel`); elsewhere
    frames are resized in chunks of at most :data:`MAX_RESIZE_ELEMENTS` elements (at least one
    frame), so ``[B, T, K, H, W]`` is never held at once.

    Args:
        soft_masks: ``[B, T, K, h, w]`` soft masks (any float dtype; resized in fp32).
        size: ``(H, W)`` of the labels.

    Returns:
        int64 ``[B, T, H, W]`` slot ids in ``0..K-1``.
    """
    b, t, k, h, w = soft_masks.shape
    height, width = size
    frames = soft_masks.reshape(b * t, k, h, w)
    if uses_cpu_kernel(soft_masks):
        return segment_and_count(frames, size)[0].long().reshape(b, t, height, width)
    chunk = max(1, MAX_RESIZE_ELEMENTS // (k * height * width))
    out = torch.empty(b * t, height, width, dtype=torch.int64, device=soft_masks.device)
    for start in range(0, b * t, chunk):
        resized = frames[start : start + chunk].float()
        if (h, w) != (height, width):
            resized = F.interpolate(resized, size=(height, width), mode="bilinear", align_corners=False)
        # max(dim).indices == argmax(dim) (first maximum on ties), several times faster on CPU.
        out[start : start + chunk] = resized.max(dim=1).indices
    return out.reshape(b, t, height, width)


def contingency(pred_ids: torch.Tensor, true_ids: torch.Tensor, num_pred: int) -> torch.Tensor:
    """Per-frame contingency tables, counted with a single ``bincount`` on the input's device.

    ``IGNORE_ID`` pixels are counted in an extra column that is dropped, so they belong to
    neither predicted nor true masks.

    Args:
        pred_ids: int64 ``[B, T, H, W]`` predicted ids in ``0..num_pred-1``.
        true_ids: int64 ``[B, T, H, W]`` labels: ``0`` background, ``1..M`` objects,
            ``IGNORE_ID`` ignored (no other negative value).
        num_pred: number of predicted ids ``P``.

    Returns:
        float64 ``[B, T, P, M + 1]``: ``table[b, t, p, m]`` = pixels of frame ``(b, t)``
        predicted ``p`` with true id ``m``.
    """
    b, t, h, w = true_ids.shape
    columns = _check_true_ids(true_ids) + 2  # IGNORE_ID, background, objects 1..M
    num_bins = b * t * num_pred * columns
    index_dtype = torch.int32 if num_bins < 2**31 else torch.int64
    # bin = (frame * P + pred) * columns + true + 1, built in place. Both ids are cast first:
    # in-place arithmetic mixing int32 and int64 operands is several times slower on CPU.
    offset = torch.arange(b * t, dtype=index_dtype, device=true_ids.device) * (num_pred * columns) + 1
    flat = true_ids.reshape(b * t, h * w).to(index_dtype, copy=True)
    flat.add_(pred_ids.reshape(b * t, h * w).to(index_dtype), alpha=columns).add_(offset.unsqueeze(1))
    counts = torch.bincount(flat.reshape(-1), minlength=num_bins)
    return counts.reshape(b, t, num_pred, columns)[..., 1:].to(torch.float64)


def _check_true_ids(true_ids: torch.Tensor) -> int:
    """The largest true id ``M`` (0 if there is no object); raises if an id is below ``IGNORE_ID``."""
    lowest, highest = torch.stack(true_ids.aminmax()).tolist()
    if lowest < IGNORE_ID:
        raise ValueError(f"true ids must be >= IGNORE_ID ({IGNORE_ID}), got {lowest}")
    return max(highest, 0)


def sample_tables(table: torch.Tensor, video: bool) -> torch.Tensor:
    """Per-frame tables ``[B, T, P, M + 1]`` -> per-sample tables ``[S, P, M + 1]``.

    ``video=True`` sums the frames (``S = B``); ``video=False`` keeps frames (``S = B * T``).
    """
    return table.sum(dim=1) if video else table.flatten(0, 1)


def segmentation_contingency(soft_masks: torch.Tensor, true_masks: torch.Tensor) -> torch.Tensor:
    """:func:`contingency` of the hard segmentation of ``soft_masks [B, T, K, h, w]``.

    Args:
        soft_masks: ``[B, T, K, h, w]`` soft masks of a method.
        true_masks: int64 ``[B, T, H, W]`` labels.

    Returns:
        float64 ``[B, T, K, M + 1]``.
    """
    b, t, k, h, w = soft_masks.shape
    size = (true_masks.shape[-2], true_masks.shape[-1])
    if not uses_cpu_kernel(soft_masks):
        return contingency(hard_segmentation(soft_masks.detach(), size), true_masks, k)
    num_true = _check_true_ids(true_masks) + 1
    frames, true_frames = soft_masks.reshape(b * t, k, h, w), true_masks.reshape(b * t, *size)
    table = segment_and_count(frames, size, true_frames, num_true)[1]
    return table.reshape(b, t, k, num_true).to(torch.float64)


ScoreFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def per_sample_scores(
    score_fn: ScoreFn, pred_ids: torch.Tensor, true_ids: torch.Tensor, num_pred: int, video: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score hard ids ``[B, T, H, W]`` by a ``*_from_contingency`` function, one sample per video
    (``[B]`` scores and scored flags) or per frame (``[B, T]``)."""
    scores, scored = score_fn(sample_tables(contingency(pred_ids, true_ids, num_pred), video))
    shape = true_ids.shape[:1] if video else true_ids.shape[:2]
    return scores.reshape(shape), scored.reshape(shape)
