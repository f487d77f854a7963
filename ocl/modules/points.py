"""SLASH's intermediate point predictor and encoder (IPPE), and matching slots to points.

Points are object centres in normalised image coordinates ``(y, x)`` in ``[-0.5, 0.5]``
(``ocl.data.points.object_centres``); a NaN point is absent (no such object, or no label).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn


def match_points(predicted: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of ``predicted [K, 2]`` to the non-NaN rows of ``targets [M, 2]`` on
    Euclidean distance -> (slot indices, target indices), equal length ``min(K, #valid)``."""
    valid = np.flatnonzero(~torch.isnan(targets[:, 0]).cpu().numpy())
    if valid.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cost = torch.cdist(predicted.detach().float(), targets[valid].float()).cpu().numpy()
    slot_index, target_index = linear_sum_assignment(cost)
    return slot_index, valid[target_index]


class PointPredictorEncoder(nn.Module):
    """IPPE: predicts each slot's object centre and adds an encoding of a point to the slot.

    Predictor: LayerNorm + MLP ``d -> 32 -> 16 -> 2``, ``sigmoid - 0.5``. Encoder: MLP
    ``2 -> 16 -> 32 -> d``. With ground-truth points for a sample, slots are Hungarian-matched
    to them and matched slots encode the true point (weak supervision); other slots encode
    their prediction.
    """

    def __init__(self, slot_dim: int) -> None:
        super().__init__()
        self.predictor = nn.Sequential(
            nn.LayerNorm(slot_dim),
            nn.Linear(slot_dim, 32),
            nn.ReLU(inplace=True),
            nn.Linear(32, 16),
            nn.ReLU(inplace=True),
            nn.Linear(16, 2),
        )
        self.encoder = nn.Sequential(
            nn.Linear(2, 16), nn.ReLU(inplace=True), nn.Linear(16, 32), nn.ReLU(inplace=True), nn.Linear(32, slot_dim)
        )

    def forward(self, slots: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]``, ``targets [B, M, 2]`` (NaN = absent) or None ->
        (slots + point encoding ``[B, K, d]``, predicted points ``[B, K, 2]``)."""
        predicted = self.predictor(slots).sigmoid() - 0.5
        points = predicted
        if targets is not None:
            labelled = (~torch.isnan(targets[..., 0])).any(dim=1).nonzero().flatten().tolist()
            if labelled:
                points = predicted.clone()
                for sample in labelled:
                    slot_index, target_index = match_points(predicted[sample], targets[sample])
                    points[sample, slot_index] = targets[sample, target_index].to(points.dtype)
        return slots + self.encoder(points), predicted
