"""Helpers for code that must give the same result on one process and on several DDP ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of DDP ranks (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's DDP rank (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward sends every rank's gradient of a shard back to that shard's rank."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(shards, tensor.contiguous())
        return torch.stack(shards)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, gradient: torch.Tensor) -> torch.Tensor:
        # Rank r's loss depends on every shard: the gradient of the sum of all ranks' losses with
        # respect to this rank's shard is the sum over ranks of their gradients for it.
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        return gradient[dist.get_rank()]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor [...]`` of every rank, stacked in rank order: ``[world_size, ...]``.

    Differentiable: gradients flow back to the rank that owns each shard, summed over the ranks
    whose losses used it. DDP averages parameter gradients over ranks, so a loss that is the mean
    over ranks of per-rank means of equal size gets the gradient of the one-process loss.
    Every rank must call it with a tensor of the same shape. Without DDP: ``tensor[None]``.
    """
    if world_size() == 1:
        return tensor[None]
    return _GatherWithGradient.apply(tensor)
