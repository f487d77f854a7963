"""DAVIS J&F: region similarity J and boundary F-measure as the official DAVIS 2017 toolkit computes them.

Verified against ``davis2017/metrics.py`` (``db_eval_iou``, ``f_measure``, ``_seg2bmap``) and
``davis2017/evaluation.py`` of github.com/davisvideochallenge/davis2017-evaluation:

* **J** = ``|pred & true| / |pred | true|`` over non-void pixels; ``1`` when the union is empty.
* **Boundaries** (``_seg2bmap`` at the mask's own size): a pixel is a boundary pixel when it
  differs from its right, bottom or bottom-right neighbour, comparing only neighbours inside
  the image (the last row compares right, the last column down, the last pixel nothing). The
  image border is therefore never a boundary.
* **Void**: both masks are set to ``0`` on void pixels before their boundaries are taken.
* **Tolerance**: ``bound_th < 1`` is a fraction of the image diagonal, ``radius =
  ceil(bound_th * ||(H, W)||)`` (8 px at 480 x 854 for the default 0.008); ``bound_th >= 1`` is
  the radius in pixels. A boundary pixel is matched when a boundary pixel of the other mask
  lies within the disk ``dy^2 + dx^2 <= radius^2`` (``skimage.morphology.disk`` dilation).
* **F** = ``2PR / (P + R)`` (``0`` when ``P + R = 0``) with precision ``P`` = matched predicted
  boundary pixels / predicted boundary pixels and recall ``R`` likewise for the ground truth;
  an empty boundary gives ``1`` for its own ratio: both empty -> ``P = R = 1`` (F = 1), only
  the prediction empty -> ``P = 1, R = 0``, only the ground truth empty -> ``P = 0, R = 1``.
* **Semi-supervised protocol**: predicted id ``m`` is object ``m``; the first and last frames
  are not scored (``exclude_first_last=True``).
* **Unsupervised protocol**: all frames; proposals are matched one-to-one to objects by the
  Hungarian algorithm maximising ``(mean_t J + mean_t F) / 2`` of each pair (the toolkit
  matches on J&F, not on J alone). With fewer proposals than objects, empty proposals are
  added, so an unmatched object scores what an empty mask scores: 0 on frames where it is
  visible, 1 on frames where it is absent. For slot models every slot is a proposal (the
  toolkit's proposals are the non-zero ids of a result PNG).
* **Aggregation**: an object's J (F) is its mean over the scored frames; J-Mean and F-Mean are
  means over all objects of all videos (not per video first), J&F = their average.

Objects are the ids ``> 0`` present anywhere in the video (the toolkit takes ``1..max`` of the
first annotated frame; the two agree on DAVIS, whose objects all appear in the first frame).

The official script sets void (255) to background when it loads the annotations, so the void
masks it passes to the functions above are always empty: ``void_as_background=True``
reproduces its numbers; the default excludes ``IGNORE_ID`` pixels as ``docs/protocol.md``
prescribes.

Boundary matching uses k-d trees over boundary pixels (exact integer distances) rather than
dense dilations: for every frame one tree per predicted and per true mask, so that all
(proposal, object) pairs cost little more than one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ocl.contracts.batch import IGNORE_ID
from ocl.metrics.base import MaskMetric
from ocl.metrics.protocol import hard_segmentation

BOUND_TH = 0.008
"""The toolkit's default boundary tolerance: 0.8 % of the image diagonal."""


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Matching radius in pixels: ``ceil(bound_th * sqrt(H^2 + W^2))``, or ``bound_th`` itself if ``>= 1``."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be an integer, got {bound_th}")
        return int(bound_th)
    if bound_th < 0:
        raise ValueError(f"bound_th must be >= 0, got {bound_th}")
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of binary masks (the toolkit's ``_seg2bmap`` at the same size).

    Args:
        masks: bool ``[..., H, W]``.

    Returns:
        bool ``[..., H, W]``: pixels that differ from their right, bottom or bottom-right
        neighbour inside the image.
    """
    masks = np.asarray(masks, dtype=bool)
    boundary = np.zeros_like(masks)
    boundary[..., :, :-1] |= masks[..., :, :-1] != masks[..., :, 1:]
    boundary[..., :-1, :] |= masks[..., :-1, :] != masks[..., 1:, :]
    boundary[..., :-1, :-1] |= masks[..., :-1, :-1] != masks[..., 1:, 1:]
    return boundary


def _jaccard(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """``intersection / union``, ``1`` where the union is empty (float64)."""
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def _boundary_points(boundaries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the boundary pixels of a stack of boundary maps.

    Args:
        boundaries: bool ``[P, H, W]``.

    Returns:
        int ``[N, 2]`` ``(y, x)`` of all boundary pixels, grouped by map, and int64 ``[P + 1]``
        offsets: map ``p`` owns rows ``offsets[p]:offsets[p + 1]``.
    """
    owner, y, x = np.nonzero(boundaries)
    offsets = np.searchsorted(owner, np.arange(len(boundaries) + 1))
    return np.stack([y, x], axis=1), offsets


def _matched_counts(
    sources: np.ndarray, source_offsets: np.ndarray, targets: np.ndarray, target_offsets: np.ndarray, radius: int
) -> np.ndarray:
    """``counts[s, t]``: boundary pixels of source ``s`` within ``radius`` of a boundary pixel of target ``t``.

    Args:
        sources, targets: int ``[N, 2]`` pixel coordinates with their offsets (see :func:`_boundary_points`).
        radius: matching radius (distance ``<= radius``, compared on exact squared integers).

    Returns:
        int64 ``[S, T]``.
    """
    num_sources, num_targets = len(source_offsets) - 1, len(target_offsets) - 1
    counts = np.zeros((num_sources, num_targets), dtype=np.int64)
    owner = np.repeat(np.arange(num_sources), np.diff(source_offsets))
    for column in range(num_targets):
        target = targets[target_offsets[column] : target_offsets[column + 1]]
        if len(target) == 0 or len(sources) == 0:
            continue
        # Only pixels in the target's bounding box grown by the radius can match.
        inside = ((sources >= target.min(axis=0) - radius) & (sources <= target.max(axis=0) + radius)).all(axis=1)
        # The bound only prunes the search; the exact test is on integer squared distances.
        distance, _ = cKDTree(target).query(sources[inside], distance_upper_bound=radius + 0.5)
        near = np.rint(np.square(distance)) <= radius * radius
        counts[:, column] = np.bincount(owner[inside][near], minlength=num_sources)
    return counts


def _f_measure_pairs(pred_boundaries: np.ndarray, true_boundaries: np.ndarray, radius: int) -> np.ndarray:
    """Boundary F of every (predicted, true) pair of one frame.

    Args:
        pred_boundaries: bool ``[P, H, W]`` boundary maps of the predicted masks.
        true_boundaries: bool ``[M, H, W]`` boundary maps of the true masks.
        radius: matching radius in pixels.

    Returns:
        float64 ``[P, M]``.
    """
    pred_points, pred_offsets = _boundary_points(pred_boundaries)
    true_points, true_offsets = _boundary_points(true_boundaries)
    num_pred = np.diff(pred_offsets).astype(np.float64)[:, None]
    num_true = np.diff(true_offsets).astype(np.float64)[None, :]
    pred_matched = _matched_counts(pred_points, pred_offsets, true_points, true_offsets, radius)
    true_matched = _matched_counts(true_points, true_offsets, pred_points, pred_offsets, radius).T
    precision = np.where(num_pred > 0, pred_matched / np.maximum(num_pred, 1), 1.0)
    recall = np.where(num_true > 0, true_matched / np.maximum(num_true, 1), 1.0)
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)


def _valid_mask(true: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    """bool ``[T, H, W]``: non-void pixels (all pixels when ``void`` is None)."""
    if void is None:
        return np.ones(true.shape, dtype=bool)
    void = np.asarray(void, dtype=bool)
    if void.shape != true.shape:
        raise ValueError(f"void must have the shape of the masks {true.shape}, got {void.shape}")
    return ~void


def _binary_inputs(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``true`` as bool ``[T, H, W]`` arrays of one shape."""
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"pred and true must both be [T, H, W], got {pred.shape} and {true.shape}")
    return pred, true


def region_similarity(pred: np.ndarray, true: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Per-frame J (``db_eval_iou``).

    Args:
        pred: bool ``[T, H, W]`` predicted mask.
        true: bool ``[T, H, W]`` ground-truth mask.
        void: bool ``[T, H, W]`` pixels excluded from both, or None.

    Returns:
        float64 ``[T]``: IoU over non-void pixels, ``1`` when both masks are empty there.
    """
    pred, true = _binary_inputs(pred, true)
    valid = _valid_mask(true, void)
    intersection = (pred & true & valid).sum(axis=(-2, -1))
    union = ((pred | true) & valid).sum(axis=(-2, -1))
    return _jaccard(intersection, union)


def boundary_f_measure(
    pred: np.ndarray, true: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> np.ndarray:
    """Per-frame boundary F (``db_eval_boundary`` / ``f_measure``).

    Args:
        pred: bool ``[T, H, W]`` predicted mask.
        true: bool ``[T, H, W]`` ground-truth mask.
        void: bool ``[T, H, W]`` pixels set to 0 in both masks before taking boundaries, or None.
        bound_th: tolerance, see :func:`boundary_radius`.

    Returns:
        float64 ``[T]``.
    """
    pred, true = _binary_inputs(pred, true)
    valid = _valid_mask(true, void)
    radius = boundary_radius(*true.shape[-2:], bound_th)
    pred_boundaries, true_boundaries = boundary_map(pred & valid), boundary_map(true & valid)
    return np.array(
        [_f_measure_pairs(p[None], t[None], radius)[0, 0] for p, t in zip(pred_boundaries, true_boundaries)],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class ObjectScores:
    """J and F of the ground-truth objects of one video, each the mean over the scored frames.

    Attributes:
        object_ids: int64 ``[M]`` the objects' ids in the labels.
        j: float64 ``[M]`` region similarity.
        f: float64 ``[M]`` boundary F-measure.
    """

    object_ids: np.ndarray
    j: np.ndarray
    f: np.ndarray


def _pair_scores(
    pred_masks: np.ndarray, true_masks: np.ndarray, valid: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every (proposal, object) pair of one frame.

    Args:
        pred_masks: bool ``[P, H, W]``; true_masks: bool ``[M, H, W]``; valid: bool ``[H, W]``.
        radius: boundary matching radius.

    Returns:
        float64 ``[P, M]`` J and F.
    """
    pred_masks, true_masks = pred_masks & valid, true_masks & valid
    pred_flat = pred_masks.reshape(len(pred_masks), -1).astype(np.float32)
    true_flat = true_masks.reshape(len(true_masks), -1).astype(np.float32)
    # float32 sums of 0/1 are exact below 2**24 pixels per frame.
    intersection = (pred_flat @ true_flat.T).astype(np.float64)
    union = pred_flat.sum(axis=1, dtype=np.float64)[:, None] + true_flat.sum(axis=1, dtype=np.float64) - intersection
    f = _f_measure_pairs(boundary_map(pred_masks), boundary_map(true_masks), radius)
    return _jaccard(intersection, union), f


def j_and_f(
    pred_ids: np.ndarray,
    true_ids: np.ndarray,
    *,
    match: bool,
    exclude_first_last: bool = False,
    num_pred: int | None = None,
    bound_th: float = BOUND_TH,
    void_as_background: bool = False,
) -> ObjectScores:
    """J and F of every ground-truth object of one video (see the module docs for the protocols).

    Args:
        pred_ids: int ``[T, H, W]`` predicted ids.
        true_ids: int ``[T, H, W]`` labels: ``0`` background, ``> 0`` objects, ``IGNORE_ID`` void.
        match: unsupervised protocol: proposals ``0..num_pred-1`` are matched to objects by the
            Hungarian algorithm on mean J&F. ``False``: semi-supervised, predicted id ``m`` is object ``m``.
        exclude_first_last: score frames ``1..T-2`` only (the semi-supervised protocol).
        num_pred: number of proposals when matching; ``None`` = ``pred_ids.max() + 1``.
        bound_th: boundary tolerance, see :func:`boundary_radius`.
        void_as_background: treat ``IGNORE_ID`` pixels as background, as the official script does.

    Returns:
        :class:`ObjectScores` (empty arrays when the video has no object).
    """
    pred_ids, true_ids = np.asarray(pred_ids), np.asarray(true_ids)
    if pred_ids.shape != true_ids.shape or true_ids.ndim != 3:
        raise ValueError(f"pred_ids and true_ids must both be [T, H, W], got {pred_ids.shape} and {true_ids.shape}")
    if exclude_first_last and len(true_ids) < 3:
        raise ValueError(f"exclude_first_last needs at least 3 frames, got {len(true_ids)}")
    object_ids = np.unique(true_ids[true_ids > 0]).astype(np.int64)
    num_objects = len(object_ids)
    if num_objects == 0:
        return ObjectScores(object_ids, np.zeros(0), np.zeros(0))
    if exclude_first_last:
        pred_ids, true_ids = pred_ids[1:-1], true_ids[1:-1]
    if match:
        proposals = np.arange(int(pred_ids.max()) + 1 if num_pred is None else num_pred)
        if pred_ids.min() < 0 or pred_ids.max() >= len(proposals):
            raise ValueError(f"pred_ids must be in 0..{len(proposals) - 1} when matching")
    else:
        proposals = object_ids
    num_rows = max(len(proposals), num_objects)  # empty proposals pad up to the number of objects
    radius = boundary_radius(*true_ids.shape[-2:], bound_th)
    j_sum = np.zeros((num_rows, num_objects))
    f_sum = np.zeros((num_rows, num_objects))
    for pred_frame, true_frame in zip(pred_ids, true_ids):
        pred_masks = np.zeros((num_rows, *pred_frame.shape), dtype=bool)
        pred_masks[: len(proposals)] = pred_frame == proposals[:, None, None]
        true_masks = true_frame == object_ids[:, None, None]
        valid = np.ones(true_frame.shape, dtype=bool) if void_as_background else true_frame != IGNORE_ID
        j, f = _pair_scores(pred_masks, true_masks, valid, radius)
        j_sum += j
        f_sum += f
    j_mean, f_mean = j_sum / len(true_ids), f_sum / len(true_ids)
    objects = np.arange(num_objects)
    assigned = objects  # semi-supervised: row m is object m
    if match:  # every object gets a row, as there are at least as many rows as objects
        rows, cols = linear_sum_assignment((j_mean + f_mean) / 2, maximize=True)
        assigned = np.empty(num_objects, dtype=np.int64)
        assigned[cols] = rows
    return ObjectScores(object_ids, j_mean[assigned, objects], f_mean[assigned, objects])


class JAndF(MaskMetric):
    """DAVIS J&F of slot masks under the unsupervised protocol, accumulated over videos and DDP ranks.

    ``update`` applies :func:`~ocl.metrics.protocol.hard_segmentation` (bilinear resize to the
    labels, argmax over slots) and scores each video with :func:`j_and_f` (``match=True``:
    every slot is a proposal, all frames). ``compute`` returns J&F; :meth:`values` also
    returns J-Mean and F-Mean. Means are over all objects of all videos, like the toolkit's.
    Videos without objects are counted in ``num_skipped``. States are float64 sums.

    Args:
        bound_th: boundary tolerance, see :func:`boundary_radius`.
        void_as_background: see :func:`j_and_f`.
        mask_source: see :class:`~ocl.metrics.base.MaskMetric`.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    j_sum: torch.Tensor
    f_sum: torch.Tensor
    num_objects: torch.Tensor
    num_skipped: torch.Tensor

    def __init__(
        self,
        bound_th: float = BOUND_TH,
        void_as_background: bool = False,
        mask_source: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mask_source=mask_source, **kwargs)
        boundary_radius(1, 1, bound_th)  # validate now rather than at the first update
        self.bound_th = bound_th
        self.void_as_background = void_as_background
        for name in ("j_sum", "f_sum", "num_objects", "num_skipped"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, soft_masks: torch.Tensor, true_masks: torch.Tensor) -> None:
        """Accumulate a batch of videos.

        Args:
            soft_masks: ``[B, T, K, h, w]`` soft masks of the method.
            true_masks: int64 ``[B, T, H, W]`` labels (``0`` background, ``IGNORE_ID`` void).
        """
        num_slots = soft_masks.shape[2]
        pred_ids = hard_segmentation(soft_masks.detach(), (true_masks.shape[-2], true_masks.shape[-1]))
        for pred, true in zip(pred_ids.cpu().numpy(), true_masks.cpu().numpy()):
            scores = j_and_f(
                pred,
                true,
                match=True,
                num_pred=num_slots,
                bound_th=self.bound_th,
                void_as_background=self.void_as_background,
            )
            self.j_sum += float(scores.j.sum())
            self.f_sum += float(scores.f.sum())
            self.num_objects += len(scores.object_ids)
            self.num_skipped += int(len(scores.object_ids) == 0)

    def compute(self) -> torch.Tensor:
        """J&F-Mean: ``(J-Mean + F-Mean) / 2`` over all scored objects (NaN if none)."""
        return (self.j_sum + self.f_sum) / (2 * self.num_objects)

    def values(self, name: str) -> dict[str, torch.Tensor]:
        """``{"j_and_f", "j", "f"}`` means over objects, summed over DDP ranks (whatever ``name``)."""
        with self.sync_context():
            j, f = self.j_sum / self.num_objects, self.f_sum / self.num_objects
            return {"j_and_f": (j + f) / 2, "j": j, "f": f}

    def skipped(self) -> torch.Tensor:
        """Number of videos without objects, summed over DDP ranks."""
        with self.sync_context():
            return self.num_skipped.clone()
