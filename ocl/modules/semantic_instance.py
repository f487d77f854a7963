"""SMTC's slot head: correspondence fusion, then semantic and instance slots from one slot attention.

Qian et al., "Semantics meets temporal correspondence" (ICCV 2023); behaviour checked against the
authors' ``src/model/model_twostage.py`` (shvdiwnkozbw/SMTC 4040186). Shapes: ``B`` batch, ``T``
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


class SemanticInstanceAttention(nn.Module):
    """Two slot-attention stages sharing all weights and ``S`` learned Gaussians ``N(mu_s, sigma_s^2)``.

    Stage 1: the ``S`` semantic slots start at the means and compete over all tokens. Stage 2:
    semantic ``s`` starts ``I`` instance slots at ``mu_s + sigma_s * noise`` (the
    reparameterisation, so ``sigma`` learns); they compete among themselves only and attend only
    inside the semantic's area: ``hard_area`` = tokens whose stage-1 logit exceeds
    ``area_threshold`` (the authors' code), else the soft semantic mask (softmax over semantics;
    the first release). Both stages use the same :class:`~ocl.modules.slot_attention.SlotAttention`
    (SMTC: residual updates, residual MLP, straight-through initialisation).

    Args:
        corrector: the shared slot attention (``slot_dim`` = ``dim``).
        num_semantic: ``S``.
        num_instances: ``I``.
        dim: slot dimension ``d``.
        learn_sigma: False keeps ``sigma`` at its initial value 1 (the authors' ``torch.normal``
            passes no gradient to it).
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
        self.mu = nn.Parameter(torch.randn(num_semantic, dim))  # N(0, 1) as the authors' slots_mu
        self.log_sigma = nn.Parameter(torch.zeros(num_semantic, dim), requires_grad=learn_sigma)
        self.hard_area = hard_area
        self.area_threshold = area_threshold

    def forward(self, inputs: torch.Tensor, noise: torch.Tensor) -> SemanticInstanceSlots:
        """``inputs [B', N, D]`` and standard normal ``noise [B', S, I, d]`` -> :class:`SemanticInstanceSlots`."""
        frames = inputs.shape[0]
        semantic = self.corrector(self.mu.expand(frames, -1, -1), inputs)
        if self.hard_area:
            area = (semantic.logits > self.area_threshold).to(inputs.dtype)
        else:
            area = semantic.logits.softmax(dim=1)
        initial = self.mu[:, None] + self.log_sigma.exp()[:, None] * noise  # [B', S, I, d]
        instance = self.corrector(initial.flatten(1, 2), inputs, input_weights=area, groups=self.num_semantic)
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

    def forward(self, keys: torch.Tensor, grid: tuple[int, int], noise: torch.Tensor) -> SemanticInstanceOutput:
        """``keys [B, T, N, D]`` on ``grid``, ``noise [B, T, S, I, d]`` -> :class:`SemanticInstanceOutput`."""
        batch, frames = keys.shape[:2]
        fused = self.fusion(keys, grid)
        slots = self.attention(fused.flatten(0, 1), noise.flatten(0, 1))
        slots = SemanticInstanceSlots(*(tensor.unflatten(0, (batch, frames)) for tensor in slots))
        return SemanticInstanceOutput(slots, F.normalize(self.projection(slots.instance_slots), dim=-1))
