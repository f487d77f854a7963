"""SlotContrast's slot-slot temporal contrastive loss (Manasyan et al. 2025)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ocl.contracts.output import ModelOutput
from ocl.losses.base import LossTerm
from ocl.utils.distributed import gather_with_gradient, rank, world_size
from ocl.utils.precision import at_least_float32

SOFTMAX_OVER = ("current", "next")


def slot_contrastive_loss(
    slots: torch.Tensor,
    temperature: float,
    candidates: torch.Tensor | None = None,
    offset: int = 0,
    softmax_over: str = "current",
    pool_videos: int | None = None,
) -> torch.Tensor:
    """InfoNCE between consecutive frames' slots, negatives pooled over the batch.

    For each pair ``(t, t+1)`` the logits are ``s_t s_{t+1}^T / temperature`` of L2-normalised
    slots, pooled over the (video, slot) pairs; cross-entropy with the same (video, slot) as the
    positive. ``softmax_over="current"``: for each slot of frame ``t+1`` the softmax runs over the
    pooled slots of frame ``t`` (SlotContrast's code, whose cross-entropy takes its classes along
    dim 1); ``"next"``: for each slot of frame ``t`` it runs over the pooled slots of frame ``t+1``.
    ``pool_videos`` splits the pooled videos into consecutive groups of that many (the last may
    be smaller): an anchor's softmax runs over its own group's slots only, as if each group were
    the batch of one GPU of the authors' unsynchronised multi-GPU runs (SlotCurri).
    Averaged over anchors and frame pairs: with groups of equal size, the mean of the groups'
    losses (what those GPUs' averaged gradients descend). Computed in at least fp32 with autocast
    off (mixed precision would round the logits).

    Args:
        slots: anchors ``[B, T, K, d]`` with ``T >= 2``.
        candidates: ``[B', T, K, d]`` pooled (video, slot) pairs holding ``slots`` at videos
            ``offset .. offset + B - 1`` (e.g. the slots of all DDP ranks); None: ``slots`` itself.
        softmax_over: the frame whose pooled slots the softmax runs over: ``current`` (``t``) or
            ``next`` (``t+1``).
        pool_videos: videos per pool of negatives, counted over ``candidates`` (video ``offset + b``
            of ``slots`` is in group ``(offset + b) // pool_videos``); None: one pool of all of them.
    """
    _check_options(softmax_over, pool_videos)
    with torch.autocast(device_type=slots.device.type, enabled=False):
        anchors = F.normalize(at_least_float32(slots), dim=-1)
        pooled = anchors if candidates is None else F.normalize(at_least_float32(candidates), dim=-1)
        if softmax_over == "next":
            anchors, pooled = anchors[:, :-1], pooled[:, 1:]
        else:
            anchors, pooled = anchors[:, 1:], pooled[:, :-1]
        anchors = anchors.transpose(0, 1).flatten(1, 2)  # [T-1, B*K, d]
        pooled = pooled.transpose(0, 1).flatten(1, 2)  # [T-1, B'*K, d]
        logits = torch.einsum("tid,tjd->tij", anchors, pooled) / temperature  # [T-1, B*K, B'*K]
        if pool_videos is not None:
            logits = logits.masked_fill(_outside_pool(slots, pooled.shape[1], offset, pool_videos), float("-inf"))
        first = offset * slots.shape[2]
        labels = torch.arange(first, first + anchors.shape[1], device=slots.device).expand(logits.shape[0], -1)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _outside_pool(slots: torch.Tensor, num_candidates: int, offset: int, pool_videos: int) -> torch.Tensor:
    """``[B*K, B'*K]`` True where anchor slot ``i`` (video ``offset + i // K``) and candidate slot
    ``j`` (video ``j // K``) are in different groups of ``pool_videos`` consecutive videos."""
    num_slots = slots.shape[2]
    anchor_videos = offset + torch.arange(slots.shape[0] * num_slots, device=slots.device) // num_slots
    candidate_videos = torch.arange(num_candidates, device=slots.device) // num_slots
    return (anchor_videos[:, None] // pool_videos) != (candidate_videos[None, :] // pool_videos)


def _check_options(softmax_over: str, pool_videos: int | None) -> None:
    if softmax_over not in SOFTMAX_OVER:
        raise ValueError(f"unknown softmax_over {softmax_over!r}; choose one of {list(SOFTMAX_OVER)}")
    if pool_videos is not None and pool_videos < 1:
        raise ValueError(f"pool_videos must be a positive number of videos or null, got {pool_videos}")


class SlotSlotContrastive(LossTerm):
    """:func:`slot_contrastive_loss` on ``output.slots``.

    Under DDP, training pools the negatives of all ranks (a differentiable all-gather), so the
    loss and its gradient are those of one process with the global batch; with ``pool_videos``
    the groups are counted over the gathered batch, as on one process. Evaluation does not
    gather: each rank evaluates whole batches (:class:`~ocl.data.sampling.RoundRobinBatchSampler`),
    so a batch's negatives are the same as on one process.

    Args:
        temperature: logit temperature (SlotContrast: 0.1).
        weight: loss weight (SlotContrast: 0.5).
        softmax_over: ``current`` (SlotContrast's code) or ``next``; see :func:`slot_contrastive_loss`.
        pool_videos: videos sharing one pool of negatives, consecutive groups of the global batch
            (SlotCurri: its per-GPU batch, as its GPUs do not gather); None: the whole global batch.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        weight: float = 0.5,
        softmax_over: str = "current",
        pool_videos: int | None = None,
    ) -> None:
        super().__init__(weight)
        _check_options(softmax_over, pool_videos)
        self.temperature = temperature
        self.softmax_over = softmax_over
        self.pool_videos = pool_videos

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        slots = output.slots
        if slots.shape[1] < 2:
            raise ValueError("SlotSlotContrastive needs clips of at least 2 frames")
        if self.training and world_size() > 1:
            pooled = gather_with_gradient(slots).flatten(0, 1)  # [world * B, T, K, d]
            offset = rank() * slots.shape[0]
            return slot_contrastive_loss(slots, self.temperature, pooled, offset, self.softmax_over, self.pool_videos)
        return slot_contrastive_loss(
            slots, self.temperature, softmax_over=self.softmax_over, pool_videos=self.pool_videos
        )
