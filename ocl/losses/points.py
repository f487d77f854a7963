"""SLASH's weak point supervision: MSE between IPPE's predicted centres and labelled ones."""

from __future__ import annotations

from typing import Any

import torch

from ocl.data.batch import POINTS
from ocl.losses.base import LossTerm
from ocl.methods.output import PREDICTED_POINTS, ModelOutput
from ocl.modules.points import match_points


class PointSupervision(LossTerm):
    """Mean squared error of the last corrector iteration's point predictions
    (``output.extras["predicted_points"] [B, T, K, 2]``) against ``batch["points"] [B, T, M, 2]``
    after Hungarian matching per frame (the matching IPPE itself uses). Frames without labels
    (all NaN) contribute nothing; a batch without any gives 0. Published weight: 0.01.
    """

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if PREDICTED_POINTS not in output.extras:
            raise ValueError("PointSupervision needs IPPE: set model.processor.corrector.point_encoding=true")
        predicted = output.extras[PREDICTED_POINTS].flatten(0, 1)
        if POINTS not in batch:
            return predicted.sum() * 0.0
        targets = batch[POINTS].flatten(0, 1)
        errors = []
        for frame in (~torch.isnan(targets[..., 0])).any(dim=1).nonzero().flatten().tolist():
            slot_index, target_index = match_points(predicted[frame], targets[frame])
            errors.append(predicted[frame, slot_index] - targets[frame, target_index].to(predicted.dtype))
        if not errors:
            return predicted.sum() * 0.0
        return torch.cat(errors).pow(2).mean()
