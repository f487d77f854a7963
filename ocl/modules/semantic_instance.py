"""SMTC's slot head: correspondence fusion, then semantic and instance slots from one slot attention.

Qian et al., "Semantics meets temporal correspondence" (ICCV 2023); behaviour checked against the
authors' ``src/model/model_twostage.py`` (shvdiwnkozbw/SMTC 4a31e5c, unchanged since 4040186;
``tests/golden_checks/smtc.py`` compares it with their outputs). Shapes: ``B`` batch, ``T``
frames, ``N`` tokens per frame on an ``(h, w)`` grid, ``D`` key dimension, ``S`` semantic slots,
``I`` instance slots per semantic, ``d`` slot dimension (``d = D`` in SMTC).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ocl.modules.slot_attention import SlotAttention


class CorrespondenceFusion(nn.Module):
    """Add to each frame's keys what its positions correlate with in the previous frame.

    ``Corr_t = K_{t-1}^T K_t``: raw dot products between the previous frame's keys, resized
    bilinearly to ``reference_grid`` (``R`` positions), and the current frame's keys; frame 0
    pairs with frame ``T - 1`` (a cyclic shift, as the authors' ``torch.roll``). A 1x1 convolution
    maps the ``R`` correlation channels of each position to ``D`` channels, added to ``K_t``.

    Args:
        dim: key dimension ``D``.
        reference_grid: ``(h', w')`` the previous frame's keys are resized to (16x16 in SMTC: the
            token grid of its 256x256 training frames), which fixes the convolution's input size.
    """

    def __init__(self, dim: int, reference_grid: tuple[int, int] = (16, 16)) -> None:
        super().__init__()
        self.reference_grid = (int(reference_grid[0]), int(reference_grid[1]))
        self.project = nn.Conv1d(self.reference_grid[0] * self.reference_grid[1], dim, kernel_size=1)

    def forward(self, keys: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``keys [B, T, N, D]`` on the token ``grid (h, w)`` -> fused keys ``[B, T, N, D]``."""
        batch, frames = keys.shape[:2]
        current = keys.flatten(0, 1)  # [B*T, N, D]
        previous = keys.roll(1, dims=1).flatten(0, 1).transpose(1, 2).unflatten(2, grid)  # [B*T, D, h, w]
        previous = F.interpolate(previous, size=self.reference_grid, mode="bilinear", align_corners=False)
        correlation = torch.bmm(previous.flatten(2).transpose(1, 2), current.transpose(1, 2))  # [B*T, R, N]
        return keys + self.project(correlation).transpose(1, 2).unflatten(0, (batch, frames))


class SemanticInstanceSlots(NamedTuple):
    """What :class:`SemanticInstanceAttention` returns for ``B'`` frames (the head unflattens
    ``B'`` to ``B, T``; the shapes below then gain that leading dimension).

    Attributes:
        semantic_slots: ``[B', S, d]``.
        semantic_logits: ``[B', S, N]`` last iteration's attention logits of the semantic slots.
        instance_slots: ``[B', S, I, d]``.
        instance_logits: ``[B', S, I, N]`` last iteration's attention logits of the instance slots.
    """

    semantic_slots: torch.Tensor
    semantic_logits: torch.Tensor
    instance_slots: torch.Tensor
    instance_logits: torch.Tensor

    def instance_masks(self) -> torch.Tensor:
        """``[..., S, I, N]``: softmax over a semantic's instances times that semantic's soft mask
        (softmax over semantics), as the authors' evaluation; sums to 1 over ``(S, I)``."""
        return self.instance_logits.softmax(dim=-2) * self.semantic_logits.softmax(dim=-2)[..., None, :]

    def instance_similarity(self) -> torch.Tensor:
        """``[..., S, I]``: cosine between each instance slot and its semantic slot (the authors'
        evaluation keeps the instances where it is at least 0.5; their loss counts those above 0.5)."""
        semantic = F.normalize(self.semantic_slots, dim=-1)[..., None, :]
        return (semantic * F.normalize(self.instance_slots, dim=-1)).sum(dim=-1)


class _SampleWithoutGradient(torch.autograd.Function):
    """``mu + sigma * noise`` whose backward gives ``mu`` and ``sigma`` zero gradients, as
    ``torch.normal(mu, sigma)`` does: zeros rather than no gradient, so an optimiser still
    applies weight decay to them (the authors' AdamW shrinks their never-trained ``sigma``)."""

    @staticmethod
    def forward(ctx, mu: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ctx.shapes = (mu.shape, sigma.shape)
        return mu + sigma * noise

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        mu_shape, sigma_shape = ctx.shapes
        return grad.new_zeros(mu_shape), grad.new_zeros(sigma_shape), None


class SemanticInstanceAttention(nn.Module):
    """Two slot-attention stages sharing all weights and ``S`` learned Gaussians ``N(mu_s, sigma_s^2)``.

    Stage 1: the ``S`` semantic slots start at the means and compete over all tokens. Stage 2:
    semantic ``s`` starts ``I`` instance slots at ``mu_s + sigma_s * noise``; they compete among
    themselves only and attend only inside the semantic's area: ``hard_area`` = tokens whose
    stage-1 logit exceeds ``area_threshold`` (the authors' code), else the soft semantic mask
    (softmax over semantics; the first release, which also renormalises the masked attention
    without the ``eps``). Both stages use the same
    :class:`~ocl.modules.slot_attention.SlotAttention` (SMTC: residual updates, residual MLP,
    straight-through initialisation).

    Initial values as the authors': ``mu ~ N(0, 1)``; ``log_sigma`` as their ``xavier_uniform_``
    of a ``(1, S, 1, d)`` tensor, ``U(-b, b)`` with ``b = sqrt(6 / ((S + 1) d))``.

    Args:
        corrector: the shared slot attention (``slot_dim`` = ``dim``).
        num_semantic: ``S``.
        num_instances: ``I``.
        dim: slot dimension ``d``.
        learn_sigma: True: the instance initialisation is reparameterised, so stage 2 trains
            ``mu`` and ``sigma`` (ocl's choice). False: it passes zero gradients, as the authors'
            ``torch.normal``: ``sigma`` keeps its initial value (up to weight decay) and ``mu``
            learns from stage 1 only.
        hard_area: threshold the stage-1 logits (True) or use the soft semantic mask (False).
        area_threshold: the logit threshold of ``hard_area``.
    """

    def __init__(
        self,
        corrector: SlotAttention,
        num_semantic: int = 16,
        num_instances: int = 4,
        dim: int = 384,
        learn_sigma: bool = True,
        hard_area: bool = True,
        area_threshold: float = 0.3,
    ) -> None:
        super().__init__()
        self.corrector = corrector
        self.num_semantic = num_semantic
        self.num_instances = num_instances
        self.mu = nn.Parameter(torch.randn(num_semantic, dim))
        self.log_sigma = nn.Parameter(torch.empty(num_semantic, dim))
        nn.init.xavier_uniform_(self.log_sigma.data.view(1, num_semantic, 1, dim))
        self.learn_sigma = learn_sigma
        self.hard_area = hard_area
        self.area_threshold = area_threshold

    def forward(
        self, inputs: torch.Tensor, noise: torch.Tensor, num_iterations: int | None = None
    ) -> SemanticInstanceSlots:
        """``inputs [B', N, D]`` and standard normal ``noise [B', S, I, d]`` -> :class:`SemanticInstanceSlots`;
        ``num_iterations`` of each stage (default: the corrector's)."""
        frames = inputs.shape[0]
        semantic = self.corrector(self.mu.expand(frames, -1, -1), inputs, num_iterations=num_iterations)
        if self.hard_area:
            area = (semantic.logits > self.area_threshold).to(inputs.dtype)
        else:
            area = semantic.logits.softmax(dim=1)
        mu, sigma = self.mu[:, None], self.log_sigma.exp()[:, None]
        initial = mu + sigma * noise if self.learn_sigma else _SampleWithoutGradient.apply(mu, sigma, noise)
        instance = self.corrector(
            initial.flatten(1, 2),  # [B', S*I, d]
            inputs,
            num_iterations=num_iterations,
            input_weights=area,
            groups=self.num_semantic,
            weights_eps=self.hard_area,
        )
        shape = (self.num_semantic, self.num_instances)
        return SemanticInstanceSlots(
            semantic.slots, semantic.logits, instance.slots.unflatten(1, shape), instance.logits.unflatten(1, shape)
        )


class SemanticInstanceOutput(NamedTuple):
    """What :class:`SemanticInstanceHead` returns for a clip.

    Attributes:
        slots: :class:`SemanticInstanceSlots` with a leading ``[B, T]`` instead of ``B'``.
        embeddings: ``[B, T, S, I, d]`` L2-normalised projections of the instance slots.
    """

    slots: SemanticInstanceSlots
    embeddings: torch.Tensor


class SemanticInstanceHead(nn.Module):
    """Everything SMTC runs after the encoder (the part its EMA teacher averages).

    Keys -> :class:`CorrespondenceFusion` -> :class:`SemanticInstanceAttention` per frame ->
    instance projection head (``d -> hidden -> d`` MLP, L2-normalised).

    Args:
        fusion: the correspondence fusion.
        attention: the two-stage slot attention.
        projection_hidden_dim: hidden width of the projection head (768 in SMTC).
    """

    def __init__(
        self, fusion: CorrespondenceFusion, attention: SemanticInstanceAttention, projection_hidden_dim: int = 768
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.attention = attention
        dim = attention.mu.shape[1]
        self.projection = nn.Sequential(
            nn.Linear(dim, projection_hidden_dim), nn.ReLU(inplace=True), nn.Linear(projection_hidden_dim, dim)
        )

    def forward(
        self, keys: torch.Tensor, grid: tuple[int, int], noise: torch.Tensor, num_iterations: int | None = None
    ) -> SemanticInstanceOutput:
        """``keys [B, T, N, D]`` on ``grid``, ``noise [B, T, S, I, d]`` -> :class:`SemanticInstanceOutput`;
        ``num_iterations``: slot-attention iterations of each stage (default: the corrector's)."""
        batch, frames = keys.shape[:2]
        fused = self.fusion(keys, grid)
        slots = self.attention(fused.flatten(0, 1), noise.flatten(0, 1), num_iterations)
        slots = SemanticInstanceSlots(*(tensor.unflatten(0, (batch, frames)) for tensor in slots))
        return SemanticInstanceOutput(slots, F.normalize(self.projection(slots.instance_slots), dim=-1))
