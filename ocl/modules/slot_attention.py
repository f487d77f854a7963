"""Slot attention (Locatello et al. 2020), the corrector shared by every method."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

GRU_STATES = ("raw", "normalised")


class CorrectorOutput(NamedTuple):
    """What :class:`SlotAttention` returns.

    Attributes:
        slots: ``[B, K, d]`` updated slots.
        attention: ``[B, K, N]`` last iteration's softmax over slots (sums to 1 over ``K``).
        predictions: ``[B, I, K, ...]`` the slot refiner's predictions of each of the ``I``
            iterations (IPPE: points ``[B, I, K, 2]``), or None without a slot refiner.
        logits: ``[B, K, N]`` last iteration's attention logits (before the softmax; SMTC's
            semantic areas threshold them).
        refiner_state: the slot refiner's state after the last iteration (IPPE: the ground-truth
            points ``[B, K, 2]`` it encoded, NaN where a slot encoded its prediction), or None.
    """

    slots: torch.Tensor
    attention: torch.Tensor
    predictions: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    refiner_state: Any = None


class LogitRefiner(Protocol):
    """Refines the attention logits of every iteration before the softmax (SLASH's ARK,
    :class:`~ocl.modules.ark.AttentionRefiningKernel`)."""

    def __call__(self, logits: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``logits [B, K, N]`` over the ``grid`` ``(h, w)`` of the ``N`` tokens -> ``[B, K, N]``."""
        ...


class SlotRefiner(Protocol):
    """Changes the slots after every update of an iteration and predicts something from them
    (SLASH's IPPE, :class:`~ocl.modules.points.PointPredictorEncoder`).

    ``context_keys`` name the batch entries it reads from the frame's ``context`` (the method
    passes only those). A call returns ``(slots [B, K, d], prediction [B, K, ...], state)``; the
    state goes to its next call within the same corrector call (None at the first).
    """

    context_keys: tuple[str, ...]

    def __call__(self, slots: torch.Tensor, context: Mapping[str, torch.Tensor], state: Any) -> tuple: ...


class SlotAttention(nn.Module):
    """Iterative competitive attention of ``K`` slots over ``N`` input tokens.

    LayerNorm on inputs and slots; q, k, v projections (bias-free unless ``qkv_bias``); logits
    ``q k^T * scale`` with a softmax over slots; attention renormalised over inputs (``eps``)
    gives a weighted mean of ``v``; GRU update; optional residual MLP.

    SMTC's options: ``qkv_bias`` (its q, k, v projections have biases); ``update="residual"``
    replaces the GRU by ``slots + updates``;
    ``straight_through`` makes the last iteration's input ``slots.detach() + init - init.detach()``
    (gradients reach the initial slots directly, BO-QSA's trick); the forward pass's
    ``input_weights`` restrict each slot group to an area of the inputs.

    Refiners, injected by the config (a new variant is a new module, not a new argument here):
    ``logit_refiner`` smooths each slot's logits over the token grid before the softmax in every
    iteration (SLASH's ARK); ``slot_refiner`` runs right after the slot update of every iteration
    (before the residual MLP; SLASH's IPPE) and may read the frame's ``context``.

    Args:
        input_dim: token dimension ``D``.
        slot_dim: slot dimension ``d``.
        num_iterations: iterations per call unless the caller passes another number.
        mlp_hidden_dim: hidden size of the residual MLP; ``0`` disables it.
        temperature: logit scale; ``None`` means ``d ** -0.5``.
        eps: added to the attention before the renormalisation over inputs.
        update: ``gru`` (Locatello et al.) or ``residual`` (SMTC: ``slots + updates``).
        straight_through: before the last iteration, pass the gradient straight to the initial slots.
        qkv_bias: give the q, k and v projections biases (SMTC's code).
        gru_state: the GRU's hidden state: ``raw`` (the slots entering the iteration; Locatello
            et al.) or ``normalised`` (those slots after ``norm_slots``, the same that give the
            queries; the VideoSAUR / SlotContrast / SlotCurri code).
        logit_refiner: a :class:`LogitRefiner` or None.
        slot_refiner: a :class:`SlotRefiner` (an ``nn.Module``) or None.
    """

    def __init__(
        self,
        input_dim: int,
        slot_dim: int,
        num_iterations: int = 3,
        mlp_hidden_dim: int = 0,
        temperature: float | None = None,
        eps: float = 1e-8,
        update: str = "gru",
        straight_through: bool = False,
        qkv_bias: bool = False,
        gru_state: str = "raw",
        logit_refiner: nn.Module | None = None,
        slot_refiner: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=qkv_bias)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        if update not in ("gru", "residual"):
            raise ValueError(f"unknown slot update {update!r}; choose 'gru' or 'residual'")
        self.gru = nn.GRUCell(slot_dim, slot_dim) if update == "gru" else None
        if gru_state not in GRU_STATES:
            raise ValueError(f"unknown gru_state {gru_state!r}; choose one of {list(GRU_STATES)}")
        self.gru_state = gru_state
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
        self.straight_through = straight_through
        self.logit_refiner = logit_refiner
        self.slot_refiner = slot_refiner

    @property
    def context_keys(self) -> tuple[str, ...]:
        """The batch entries the refiners read from the per-frame ``context``."""
        return tuple(getattr(self.slot_refiner, "context_keys", ()))

    def forward(
        self,
        slots: torch.Tensor,
        features: torch.Tensor,
        *,
        grid: tuple[int, int] | None = None,
        context: Mapping[str, torch.Tensor] | None = None,
        num_iterations: int | None = None,
        input_weights: torch.Tensor | None = None,
        groups: int = 1,
        weights_eps: bool = True,
    ) -> CorrectorOutput:
        """``slots [B, K, d]``, ``features [B, N, D]`` -> :class:`CorrectorOutput`.

        ``grid``: the ``(h, w)`` layout of the ``N`` tokens (row-major), needed by a logit refiner.
        ``context``: per-frame batch entries the slot refiner reads (:attr:`context_keys`; e.g.
        SLASH's ground-truth ``points [B, M, 2]``, NaN = absent).
        ``num_iterations``: this call's iterations (None: the constructor's).
        ``groups``: the ``K`` slots are ``groups`` consecutive groups of ``K / groups`` slots; the
        softmax over slots runs within each group.
        ``input_weights [B, N]`` or ``[B, groups, N]`` in [0, 1]: each input's weight in the slot
        updates of all slots or of each group (0 = the slots ignore it; SMTC's semantic areas, hard
        0/1 or soft). It multiplies the attention (the ``eps`` included) before the renormalisation
        over inputs, as SMTC's code does, so a group whose area is empty gets zero updates; the
        returned attention is multiplied by it too. ``weights_eps``: that renormalisation divides
        by ``sum + eps`` (SMTC's code at HEAD) or, if False, by the plain sum (its first release).
        """
        if self.logit_refiner is not None and grid is None:
            raise ValueError("slot attention with a logit refiner (ARK) needs the token grid (h, w): pass grid=")
        context = context or {}
        batch, num_slots, dim = slots.shape
        if groups < 1 or num_slots % groups:
            raise ValueError(f"{num_slots} slots do not split into {groups} equal groups")
        if input_weights is not None:
            area = input_weights[:, None, None] if input_weights.ndim == 2 else input_weights[:, :, None]
        inputs = self.norm_inputs(features)
        keys = self.to_k(inputs)
        values = self.to_v(inputs)
        attention = slots.new_zeros(batch, num_slots, inputs.shape[1])
        logits = None
        predictions: list[torch.Tensor] = []
        refiner_state = None
        initial = slots
        iterations = num_iterations or self.num_iterations
        for iteration in range(iterations):
            if self.straight_through and iteration == iterations - 1:
                slots = slots.detach() + initial - initial.detach()
            normalised = self.norm_slots(slots)
            queries = self.to_q(normalised)
            logits = torch.einsum("bkd,bnd->bkn", queries, keys) * self.scale
            if self.logit_refiner is not None:
                logits = self.logit_refiner(logits, grid)
            attention = logits.unflatten(1, (groups, -1)).softmax(dim=2)  # [B, groups, K / groups, N]
            if input_weights is None:
                weights = attention + self.eps
                weights = weights / weights.sum(dim=-1, keepdim=True)
            else:
                weights = (attention + self.eps) * area
                total = weights.sum(dim=-1, keepdim=True)
                weights = weights / (total + self.eps if weights_eps else total)
                attention = attention * area
            attention, weights = attention.flatten(1, 2), weights.flatten(1, 2)
            updates = torch.einsum("bkn,bnd->bkd", weights, values)
            if self.gru is None:
                slots = slots + updates
            else:
                state = normalised if self.gru_state == "normalised" else slots
                slots = self.gru(updates.reshape(-1, dim), state.reshape(-1, dim)).reshape(batch, num_slots, dim)
            if self.slot_refiner is not None:
                slots, predicted, refiner_state = self.slot_refiner(slots, context, refiner_state)
                predictions.append(predicted)
            if self.mlp is not None:
                slots = slots + self.mlp(slots)
        predicted = torch.stack(predictions, dim=1) if predictions else None
        return CorrectorOutput(slots, attention, predicted, logits, refiner_state)
