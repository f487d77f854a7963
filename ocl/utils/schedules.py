"""Learning-rate schedules, stepped once per optimiser step."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupExponentialDecay:
    """lr factor of the optimiser step ``s`` (0-based, Lightning's ``global_step`` before the
    step): with ``t = s + first_step``,

    * warm-up ``min(1, t / warmup_steps)`` (0 at ``t = 0``), times
    * decay ``decay_rate ** ((t - start) / (decay_steps - start))`` for ``t >= start`` (1 before),

    so the decay reaches ``decay_rate`` at ``t = decay_steps`` and keeps going after it (a run
    no longer than its warm-up, ``decay_steps <= start``, gets ``decay_rate`` from ``start`` on).

    ``start`` is ``warmup_steps`` (the decay begins when the warm-up ends; VideoSAUR's,
    SlotContrast's and SlotCurri's ``exp_decay_with_warmup`` with ``decay_steps = max_steps``) or,
    with ``decay_during_warmup``, 0 (the two multiply from the first step; SLASH's ``train.py``,
    whose loop counts its first step as 1: ``first_step=1``). Steps may be fractional (SLASH's
    are ratios of the run's length).
    """

    def __init__(
        self,
        warmup_steps: float,
        decay_steps: float,
        decay_rate: float = 0.5,
        decay_during_warmup: bool = False,
        first_step: int = 0,
    ) -> None:
        if warmup_steps < 0 or decay_steps <= 0:
            raise ValueError(f"need warmup_steps >= 0 and decay_steps > 0, got {warmup_steps}, {decay_steps}")
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.decay_start = 0 if decay_during_warmup else warmup_steps
        self.first_step = first_step

    def __call__(self, step: int) -> float:
        t = step + self.first_step
        warmup = min(1.0, t / self.warmup_steps) if self.warmup_steps else 1.0
        if t < self.decay_start:
            return warmup
        span = self.decay_steps - self.decay_start
        return warmup * self.decay_rate ** ((t - self.decay_start) / span if span > 0 else 1.0)


def warmup_exponential_decay(
    optimizer: torch.optim.Optimizer,
    warmup_steps: float,
    decay_steps: float,
    decay_rate: float = 0.5,
    decay_during_warmup: bool = False,
    first_step: int = 0,
    total_steps: int | None = None,
) -> LambdaLR:
    """A :class:`LambdaLR` following :class:`WarmupExponentialDecay`.

    ``total_steps``: if given, ``warmup_steps`` and ``decay_steps`` are fractions of it (SLASH's
    ``WARMUP_STEP_RATIO`` and ``DECAY_STEP_RATIO`` of its run's length; the products may be
    fractional, as theirs are).
    """
    if total_steps is not None:
        warmup_steps, decay_steps = warmup_steps * total_steps, decay_steps * total_steps
    return LambdaLR(
        optimizer, WarmupExponentialDecay(warmup_steps, decay_steps, decay_rate, decay_during_warmup, first_step)
    )


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
