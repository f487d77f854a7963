"""The interface every loss term implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from ocl.contracts.output import ModelOutput


class LossTerm(nn.Module, ABC):
    """A loss term: reads the model output and the batch, returns an unweighted scalar.

    The method multiplies it by ``weight`` and logs it as ``train/loss/<name>``. A term reads
    only fields of :class:`~ocl.contracts.output.ModelOutput` and the batch, so it works on any
    method whose output has what it needs.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    @abstractmethod
    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        """The unweighted scalar loss."""
