"""SlotContrast's slot-slot temporal contrastive loss (Manasyan et al. 2025)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ocl.losses.base import LossTerm
from ocl.methods.output import ModelOutput
from ocl.utils.distributed import gather_with_gradient, rank, world_size


def slot_contrastive_loss(
    slots: torch.Tensor, temperature: float, candidates: torch.Tensor | None = None, offset: int = 0
) -> torch.Tensor:
    """InfoNCE between consecutive frames' slots, negatives pooled over the batch.

    For each pair ``(t, t+1)``: every anchor slot of frame ``t`` is scored against every
    candidate slot of frame ``t+1`` (``logits = s_t c_{t+1}^T / temperature`` of L2-normalised
    slots); cross-entropy with the same (video, slot) as the positive. Averaged over anchors and
    frame pairs. Computed in fp32 with autocast off (mixed precision would round the logits).

    Args:
        slots: anchors ``[B, T, K, d]`` with ``T >= 2``.
        candidates: ``[B', T, K, d]`` pooled (video, slot) pairs holding ``slots`` at videos
            ``offset .. offset + B - 1`` (e.g. the slots of all DDP ranks); None: ``slots`` itself.
    """
    with torch.autocast(device_type=slots.device.type, enabled=False):
        anchors = F.normalize(slots.float(), dim=-1)
        pooled = anchors if candidates is None else F.normalize(candidates.float(), dim=-1)
        current = anchors[:, :-1].transpose(0, 1).flatten(1, 2)  # [T-1, B*K, d]
        following = pooled[:, 1:].transpose(0, 1).flatten(1, 2)  # [T-1, B'*K, d]
        logits = torch.einsum("tid,tjd->tij", current, following) / temperature  # [T-1, B*K, B'*K]
        first = offset * slots.shape[2]
        labels = torch.arange(first, first + current.shape[1], device=slots.device).expand(logits.shape[0], -1)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


class SlotSlotContrastive(LossTerm):
    """:func:`slot_contrastive_loss` on ``output.slots``.

    Under DDP, training pools the negatives of all ranks (a differentiable all-gather), so the
    loss and its gradient are those of one process with the global batch. Evaluation does not
    gather: each rank evaluates whole batches (:class:`~ocl.data.sampling.RoundRobinBatchSampler`),
    so a batch's negatives are the same as on one process.

    Args:
        temperature: logit temperature (SlotContrast: 0.1).
        weight: loss weight (SlotContrast: 0.5).
    """

    def __init__(self, temperature: float = 0.1, weight: float = 0.5) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        slots = output.slots
        if slots.shape[1] < 2:
            raise ValueError("SlotSlotContrastive needs clips of at least 2 frames")
        if self.training and world_size() > 1:
            pooled = gather_with_gradient(slots).flatten(0, 1)  # [world * B, T, K, d]
            return slot_contrastive_loss(slots, self.temperature, pooled, rank() * slots.shape[0])
        return slot_contrastive_loss(slots, self.temperature)
