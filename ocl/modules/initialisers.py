"""Initial slots for the first frame."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedInit(nn.Module):
    """Learned fixed slots: one parameter ``[K, d]`` initialised ``randn * d**-0.5``.

    ``num_active`` limits training to the first rows (a slot curriculum grows it,
    :class:`~ocl.callbacks.curriculum.SlotCurriculum`); evaluation always uses all ``K`` slots.
    It is a Python int (no device sync in ``forward``) saved in checkpoints as the module's
    extra state.
    """

    def __init__(self, num_slots: int, dim: int) -> None:
        super().__init__()
        self.slots = nn.Parameter(torch.randn(num_slots, dim) * dim**-0.5)
        self.num_slots = num_slots
        self.num_active = num_slots

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> ``[B, K_active, d]`` in training, ``[B, K, d]`` in evaluation."""
        slots = self.slots[: self.num_active] if self.training else self.slots
        return slots.unsqueeze(0).expand(batch_size, -1, -1)

    def get_extra_state(self) -> dict[str, int]:
        return {"num_active": self.num_active}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.num_active = int(state["num_active"])


class GaussianInit(nn.Module):
    """Slots sampled from one learned Gaussian ``N(mu, sigma^2)`` shared by all slots.

    Sampling uses the reparameterisation ``mu + sigma * eps`` so that ``mu`` and ``sigma``
    both receive gradients; ``learn_sigma=False`` keeps ``sigma`` at its initial value.
    """

    def __init__(self, num_slots: int, dim: int, learn_sigma: bool = True) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.log_sigma = nn.Parameter(torch.full((1, 1, dim), -0.5 * math.log(dim)))  # sigma = d ** -0.5
        self.log_sigma.requires_grad_(learn_sigma)
        self.num_slots = num_slots

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> ``[B, K, d]``."""
        eps = torch.randn(batch_size, self.num_slots, self.mu.shape[-1], device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.log_sigma.exp() * eps
