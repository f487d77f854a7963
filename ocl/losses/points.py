"""SLASH's weak point supervision: MSE between IPPE's predicted centres and labelled ones."""

from __future__ import annotations

from typing import Any

import torch

from ocl.contracts.batch import POINTS
from ocl.contracts.output import ASSIGNED_POINTS, PREDICTED_POINTS, ModelOutput
from ocl.losses.base import LossTerm

AVERAGES = ("labelled", "matched")


class PointSupervision(LossTerm):
    """Squared error of IPPE's point predictions against the ground-truth points the model
    assigned to the slots (``output.extras``: ``predicted_points [B, T, I, K, 2]``,
    ``assigned_points [B, T, K, 2]``, :class:`~ocl.modules.points.VideoPoints`), on the labelled
    frames of the batch (those whose ``batch["points"] [B, T, M, 2]`` holds a point). A batch
    without any gives 0. Published weight: 0.01.

    Args:
        weight: the term's weight.
        all_iterations: sum the error of every corrector iteration's predictions (SLASH's code);
            False: only the last iteration's (ocl).
        average: ``labelled``: each iteration's mean runs over all ``K x 2`` entries of the
            labelled frames, the entries of slots without a point counting as 0 (SLASH's code,
            whose MSE multiplies both sides by the presence mask); ``matched``: over the entries
            of the slots that got a point (ocl).
    """

    def __init__(self, weight: float = 1.0, all_iterations: bool = False, average: str = "matched") -> None:
        super().__init__(weight)
        if average not in AVERAGES:
            raise ValueError(f"unknown average {average!r}; choose one of {list(AVERAGES)}")
        self.all_iterations = all_iterations
        self.average = average

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if PREDICTED_POINTS not in output.extras:
            raise ValueError(
                "PointSupervision needs IPPE: add +model/ippe@model.processor.corrector.slot_refiner=default"
            )
        predicted = output.extras[PREDICTED_POINTS].flatten(0, 1)  # [F, I, K, 2]
        if POINTS not in batch:
            return predicted.nan_to_num().sum() * 0.0
        labelled = (~torch.isnan(batch[POINTS].flatten(0, 1)[..., 0])).any(dim=1)
        assigned = output.extras[ASSIGNED_POINTS].flatten(0, 1)[labelled]  # [L, K, 2]
        present = ~torch.isnan(assigned)
        iterations = predicted[labelled].unbind(1) if self.all_iterations else [predicted[labelled, -1]]
        total = predicted.nan_to_num().sum() * 0.0
        for iteration in iterations:
            frames = ~torch.isnan(iteration[:, 0, 0])  # frames that ran this iteration
            if not frames.any():
                continue
            mask = present[frames]
            errors = (iteration[frames] - assigned[frames].nan_to_num()).pow(2) * mask
            count = mask.numel() if self.average == "labelled" else mask.sum()
            if count:
                total = total + errors.sum() / count
        return total
