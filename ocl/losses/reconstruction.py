"""Reconstruction losses."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ocl.contracts.output import ModelOutput
from ocl.losses.base import LossTerm


class ReconstructionMSE(LossTerm):
    """Mean squared error between ``output.reconstruction`` and ``output.target`` (any shape)."""

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if output.reconstruction is None or output.target is None:
            raise ValueError("ReconstructionMSE needs a method whose output has 'reconstruction' and 'target'")
        return F.mse_loss(output.reconstruction, output.target)
