"""An exponential moving average of a module's weights (the teacher of teacher-student methods)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage(nn.Module):
    """A frozen copy of ``source`` whose parameters track it: ``p <- momentum * p + (1 - momentum) * q``.

    The copy never requires gradients; call :meth:`update` after each optimiser step (every rank
    of a DDP run holds the same student weights after the step, so every rank's average is the
    same). Buffers are copied, not averaged. Calling the module runs the averaged copy.

    Args:
        source: the module to average (the student); copied at construction.
        momentum: weight of the current average in each update (0.999 in SMTC).
    """

    def __init__(self, source: nn.Module, momentum: float) -> None:
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.average = copy.deepcopy(source).requires_grad_(False)
        self.momentum = momentum

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        """Move the average towards ``source``'s current weights."""
        averaged = list(self.average.parameters())
        current = [p.detach() for p in source.parameters()]
        if len(averaged) != len(current):
            raise ValueError(f"EMA of a module with {len(averaged)} parameters updated from one with {len(current)}")
        torch._foreach_lerp_(averaged, current, 1.0 - self.momentum)
        for average_buffer, buffer in zip(self.average.buffers(), source.buffers(), strict=True):
            average_buffer.copy_(buffer)

    def forward(self, *args, **kwargs):
        return self.average(*args, **kwargs)
