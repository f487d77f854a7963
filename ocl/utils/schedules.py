"""Learning-rate schedules, stepped once per optimiser step."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupExponentialDecay:
    """lr factor ``min(1, (step + 1) / warmup_steps) * decay_rate ** (step / decay_steps)``;
    ``staircase``: the exponent is ``floor(step / decay_steps)`` (step decay).

    With ``decay_rate=0.5`` and ``decay_steps=max_steps`` the lr ends at half its peak, the
    VideoSAUR / SlotContrast / SlotCurri schedule; with ``staircase`` and ``decay_steps`` a fifth
    of the run it halves every 20% of the steps, SLASH's schedule.
    """

    def __init__(self, warmup_steps: int, decay_steps: int, decay_rate: float = 0.5, staircase: bool = False) -> None:
        if warmup_steps < 0 or decay_steps <= 0:
            raise ValueError(f"need warmup_steps >= 0 and decay_steps > 0, got {warmup_steps}, {decay_steps}")
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase

    def __call__(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        exponent = step // self.decay_steps if self.staircase else step / self.decay_steps
        return warmup * self.decay_rate**exponent


def warmup_exponential_decay(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    decay_steps: int,
    decay_rate: float = 0.5,
    staircase: bool = False,
) -> LambdaLR:
    """A :class:`LambdaLR` following :class:`WarmupExponentialDecay`."""
    return LambdaLR(optimizer, WarmupExponentialDecay(warmup_steps, decay_steps, decay_rate, staircase))


class CosineDecay:
    """lr factor ``final_ratio + (1 - final_ratio) * (1 + cos(pi * step / total_steps)) / 2``, then
    ``final_ratio`` after ``total_steps``: from the peak down to ``final_ratio`` of it, no warmup.

    SMTC's schedule (the authors' ``cosine_scheduler(lr, 0.1 * lr, ...)``: 2e-5 -> 2e-6).
    """

    def __init__(self, total_steps: int, final_ratio: float = 0.1) -> None:
        if total_steps <= 0 or not 0 <= final_ratio <= 1:
            raise ValueError(f"need total_steps > 0 and final_ratio in [0, 1], got {total_steps}, {final_ratio}")
        self.total_steps = total_steps
        self.final_ratio = final_ratio

    def __call__(self, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_decay(optimizer: torch.optim.Optimizer, total_steps: int, final_ratio: float = 0.1) -> LambdaLR:
    """A :class:`LambdaLR` following :class:`CosineDecay`."""
    return LambdaLR(optimizer, CosineDecay(total_steps, final_ratio))
