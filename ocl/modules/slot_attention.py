"""Slot attention (Locatello et al. 2020), the corrector shared by every method."""

from __future__ import annotations

import torch
from torch import nn


class SlotAttention(nn.Module):
    """Iterative competitive attention of ``K`` slots over ``N`` input tokens.

    LayerNorm on inputs and slots; bias-free q, k, v; logits ``q k^T * scale`` with a softmax
    over slots; attention renormalised over inputs (``eps``) gives a weighted mean of ``v``;
    GRU update; optional residual MLP.

    Args:
        input_dim: token dimension ``D``.
        slot_dim: slot dimension ``d``.
        num_iterations: iterations per call unless the caller passes another number.
        mlp_hidden_dim: hidden size of the residual MLP; ``0`` disables it.
        temperature: logit scale; ``None`` means ``d ** -0.5``.
        eps: added to the attention before the renormalisation over inputs.
    """

    def __init__(
        self,
        input_dim: int,
        slot_dim: int,
        num_iterations: int = 3,
        mlp_hidden_dim: int = 0,
        temperature: float | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=False)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = (
            nn.Sequential(
                nn.LayerNorm(slot_dim),
                nn.Linear(slot_dim, mlp_hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(mlp_hidden_dim, slot_dim),
            )
            if mlp_hidden_dim
            else None
        )
        self.num_iterations = num_iterations
        self.scale = temperature if temperature is not None else slot_dim**-0.5
        self.eps = eps

    def forward(
        self, slots: torch.Tensor, inputs: torch.Tensor, num_iterations: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]``, ``inputs [B, N, D]`` -> (slots ``[B, K, d]``, attention ``[B, K, N]``).

        The attention returned is the last iteration's softmax over slots (sums to 1 over K).
        """
        batch, num_slots, dim = slots.shape
        inputs = self.norm_inputs(inputs)
        keys = self.to_k(inputs)
        values = self.to_v(inputs)
        attention = slots.new_zeros(batch, num_slots, inputs.shape[1])
        for _ in range(num_iterations or self.num_iterations):
            queries = self.to_q(self.norm_slots(slots))
            logits = torch.einsum("bkd,bnd->bkn", queries, keys) * self.scale
            attention = logits.softmax(dim=1)
            weights = attention + self.eps
            weights = weights / weights.sum(dim=-1, keepdim=True)
            updates = torch.einsum("bkn,bnd->bkd", weights, values)
            slots = self.gru(updates.reshape(-1, dim), slots.reshape(-1, dim)).reshape(batch, num_slots, dim)
            if self.mlp is not None:
                slots = slots + self.mlp(slots)
        return slots, attention
