"""SlotContrast's slot-slot temporal contrastive loss (Manasyan et al. 2025)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ocl.losses.base import LossTerm
from ocl.methods.output import ModelOutput


def slot_contrastive_loss(slots: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between consecutive frames' slots, negatives pooled over the batch.

    For each pair ``(t, t+1)``: the L2-normalised slots of all videos are pooled into
    ``[B*K, d]``; ``logits = s_t s_{t+1}^T / temperature``; cross-entropy with the same
    (video, slot) as the positive. Averaged over slots and frame pairs.

    Args:
        slots: ``[B, T, K, d]`` with ``T >= 2``.
    """
    slots = F.normalize(slots.float(), dim=-1)
    current, following = slots[:, :-1].transpose(0, 1).flatten(1, 2), slots[:, 1:].transpose(0, 1).flatten(1, 2)
    logits = torch.einsum("tid,tjd->tij", current, following) / temperature  # [T-1, B*K, B*K]
    labels = torch.arange(logits.shape[-1], device=slots.device).expand(logits.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


class SlotSlotContrastive(LossTerm):
    """:func:`slot_contrastive_loss` on ``output.slots``.

    Args:
        temperature: logit temperature (SlotContrast: 0.1).
        weight: loss weight (SlotContrast: 0.5).
    """

    def __init__(self, temperature: float = 0.1, weight: float = 0.5) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if output.slots.shape[1] < 2:
            raise ValueError("SlotSlotContrastive needs clips of at least 2 frames")
        return slot_contrastive_loss(output.slots, self.temperature)
