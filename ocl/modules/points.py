"""SLASH's intermediate point predictor and encoder (IPPE), and matching slots to points.

Points are object centres in normalised image coordinates ``(x, y)`` in ``[-0.5, 0.5]``
(:mod:`ocl.data.points`); a NaN point is absent (no such object, or no label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

ABSENT_COORDINATE = -1.5
"""Where SLASH's code puts an absent point: its data sets mark one with -1, then shift every
point by -0.5. Absent rows take part in its matching at ``(-1.5, -1.5)``."""


def match_points(
    predicted: torch.Tensor, targets: torch.Tensor, match_absent: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of ``predicted [K, 2]`` to the present (non-NaN) rows of ``targets [M, 2]``
    on Euclidean distance -> (slot indices, target indices) of the slots that got a present point.

    ``match_absent=False`` (ocl): only the present points are matched (``min(K, #present)`` pairs).
    ``match_absent=True`` (SLASH's code, whose point tables have ``K`` rows): ``K - #present`` absent
    rows at ``(-1.5, -1.5)`` join the matching, so every present point gets a slot and a slot can
    prefer an absent row; the slots matched to absent rows are not returned.
    """
    present = np.flatnonzero(~torch.isnan(targets[:, 0]).cpu().numpy())
    if present.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    dtype = predicted.dtype if predicted.dtype == torch.float64 else torch.float32
    columns = targets[present].to(dtype)
    num_slots = predicted.shape[0]
    if match_absent and present.size < num_slots:
        absent = columns.new_full((num_slots - present.size, 2), ABSENT_COORDINATE)
        columns = torch.cat([columns, absent])
    cost = torch.cdist(predicted.detach().to(dtype), columns).cpu().numpy()
    slot_index, column_index = linear_sum_assignment(cost)
    matched = column_index < present.size
    return slot_index[matched], present[column_index[matched]]


def assign_points(predicted: torch.Tensor, targets: torch.Tensor, match_absent: bool = False) -> torch.Tensor:
    """``predicted [B, K, 2]``, ``targets [B, M, 2]`` (NaN = absent) -> ``[B, K, 2]``: the target
    point :func:`match_points` gives each slot, NaN where a slot gets none (unlabelled sample,
    slot left over or matched to an absent row)."""
    assigned = predicted.new_full(predicted.shape, float("nan")).detach()
    for sample in (~torch.isnan(targets[..., 0])).any(dim=1).nonzero().flatten().tolist():
        slot_index, target_index = match_points(predicted[sample], targets[sample], match_absent)
        assigned[sample, slot_index] = targets[sample, target_index].to(assigned.dtype)
    return assigned


class PointStep(NamedTuple):
    """One IPPE step: ``slots [B, K, d]`` with the point encoding added, ``predicted [B, K, 2]``
    points, ``assigned [B, K, 2]`` ground-truth points (NaN where the slot encoded its prediction)."""

    slots: torch.Tensor
    predicted: torch.Tensor
    assigned: torch.Tensor


class PointPredictorEncoder(nn.Module):
    """IPPE: predicts each slot's object centre and adds an encoding of a point to the slot.

    Predictor: LayerNorm + MLP ``d -> d/2 -> d/4 -> 2``, ``sigmoid - 0.5``. Encoder: MLP
    ``2 -> d/4 -> d/2 -> d`` (SLASH's ``PP_SIZE: base`` widths). With ground-truth points for a
    sample, slots are Hungarian-matched to them (:func:`assign_points`) and a matched slot encodes
    its true point (weak supervision); the others encode their prediction.

    Args:
        slot_dim: ``d``.
        match_once: match in the first step of a corrector call and keep that assignment for
            its later iterations (SLASH's code); False: match again at every step (ocl).
        match_absent: absent rows take part in the matching (SLASH's code, see
            :func:`match_points`); False: only present points are matched (ocl).
    """

    context_keys = ("points",)
    """What it reads from the corrector's per-frame context: the batch's ``points`` (``ocl.contracts.batch.POINTS``)."""

    def __init__(self, slot_dim: int, match_once: bool = False, match_absent: bool = False) -> None:
        super().__init__()
        half, quarter = slot_dim // 2, slot_dim // 4
        self.predictor = nn.Sequential(
            nn.LayerNorm(slot_dim),
            nn.Linear(slot_dim, half),
            nn.ReLU(inplace=True),
            nn.Linear(half, quarter),
            nn.ReLU(inplace=True),
            nn.Linear(quarter, 2),
        )
        self.encoder = nn.Sequential(
            nn.Linear(2, quarter),
            nn.ReLU(inplace=True),
            nn.Linear(quarter, half),
            nn.ReLU(inplace=True),
            nn.Linear(half, slot_dim),
        )
        self.match_once = match_once
        self.match_absent = match_absent

    def predict(self, slots: torch.Tensor) -> torch.Tensor:
        """``slots [B, K, d]`` -> predicted points ``[B, K, 2]`` in ``[-0.5, 0.5]``."""
        return self.predictor(slots).sigmoid() - 0.5

    def forward(
        self, slots: torch.Tensor, context: Mapping[str, torch.Tensor], assigned: torch.Tensor | None = None
    ) -> PointStep:
        """One step after a slot update (the corrector's ``slot_refiner`` interface).

        Args:
            slots: ``[B, K, d]``.
            context: the frame's context; its ``points [B, M, 2]`` (NaN = absent), if present,
                are the ground-truth centres the slots are matched to.
            assigned: ``[B, K, 2]`` the previous step's assignment of this corrector call (None
                at its first step).

        Returns:
            :class:`PointStep`; its ``assigned`` is the state the next step receives.
        """
        targets = context.get("points")
        predicted = self.predict(slots)
        if targets is None:
            assigned = torch.full_like(predicted, float("nan")).detach()
        elif assigned is None or not self.match_once:
            assigned = assign_points(predicted, targets, self.match_absent)
        points = torch.where(torch.isnan(assigned), predicted, assigned)
        return PointStep(slots + self.encoder(points), predicted, assigned)


class VideoPoints(NamedTuple):
    """IPPE's points over the frames of a video (:class:`~ocl.modules.video.VideoSlotProcessor`).

    Attributes:
        predicted: ``[B, T, I, K, 2]`` the predictions of every corrector iteration (``I`` the
            most iterations of a frame; aligned at the last iteration, NaN before the first
            iteration of a frame that ran fewer).
        assigned: ``[B, T, K, 2]`` the ground-truth points the last iteration encoded (NaN where
            a slot encoded its prediction).
    """

    predicted: torch.Tensor
    assigned: torch.Tensor


def stack_iterations(points: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-frame predictions ``[B, I_t, K, 2]`` -> ``[B, T, max I_t, K, 2]`` aligned at the last
    iteration (a frame with fewer iterations is NaN before its first)."""
    most = max(frame.shape[1] for frame in points)
    padded = [
        torch.cat([frame.new_full((frame.shape[0], most - frame.shape[1], *frame.shape[2:]), float("nan")), frame], 1)
        for frame in points
    ]
    return torch.stack(padded, dim=1)
