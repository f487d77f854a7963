"""Slot attention (Locatello et al. 2020), the corrector shared by every method."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ocl.modules.ark import AttentionRefiningKernel
from ocl.modules.points import PointPredictorEncoder

GRU_STATES = ("raw", "normalised")


class CorrectorOutput(NamedTuple):
    """What :class:`SlotAttention` returns.

    Attributes:
        slots: ``[B, K, d]`` updated slots.
        attention: ``[B, K, N]`` last iteration's softmax over slots (sums to 1 over ``K``).
        points: ``[B, I, K, 2]`` IPPE's point predictions of each of the ``I`` iterations, or
            None without IPPE.
        logits: ``[B, K, N]`` last iteration's attention logits (before the softmax; SMTC's
            semantic areas threshold them).
        assigned_points: ``[B, K, 2]`` the ground-truth point IPPE encoded for each slot in the
            last iteration (NaN where the slot encoded its prediction), or None without IPPE.
    """

    slots: torch.Tensor
    attention: torch.Tensor
    points: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    assigned_points: torch.Tensor | None = None


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

    SLASH's options: ``ark`` smooths each slot's logits over the token grid before the softmax
    in every iteration (:class:`~ocl.modules.ark.AttentionRefiningKernel`); ``point_encoding``
    adds IPPE (:class:`~ocl.modules.points.PointPredictorEncoder`) right after the GRU of
    every iteration (before the residual MLP).

    Args:
        input_dim: token dimension ``D``.
        slot_dim: slot dimension ``d``.
        num_iterations: iterations per call unless the caller passes another number.
        mlp_hidden_dim: hidden size of the residual MLP; ``0`` disables it.
        temperature: logit scale; ``None`` means ``d ** -0.5``.
        eps: added to the attention before the renormalisation over inputs.
        ark: ARK variant (``wnconv``, ``gaussian``, ``conv``) or None (off).
        ark_size: ARK kernel side; ``ark_sigma``: the ``gaussian`` variant's standard deviation
            (None: drawn on every call, the authors' code); ``ark_learn``: the ``wnconv`` kernel
            learns (False: the authors' in-place re-normalisation, it never trains);
            ``ark_padding``: ``zeros``, ``reflect`` or None (the variant's padding in the authors'
            code). See :class:`~ocl.modules.ark.AttentionRefiningKernel`.
        point_encoding: IPPE on or off; ``point_match_once``, ``point_match_absent``: how it
            matches slots to ground-truth points (see :class:`~ocl.modules.points.PointPredictorEncoder`).
        update: ``gru`` (Locatello et al.) or ``residual`` (SMTC: ``slots + updates``).
        straight_through: before the last iteration, pass the gradient straight to the initial slots.
        qkv_bias: give the q, k and v projections biases (SMTC's code).
        gru_state: the GRU's hidden state: ``raw`` (the slots entering the iteration; Locatello
            et al.) or ``normalised`` (those slots after ``norm_slots``, the same that give the
            queries; the VideoSAUR / SlotContrast / SlotCurri code).
    """

    def __init__(
        self,
        input_dim: int,
        slot_dim: int,
        num_iterations: int = 3,
        mlp_hidden_dim: int = 0,
        temperature: float | None = None,
        eps: float = 1e-8,
        ark: str | None = None,
        ark_size: int = 5,
        ark_sigma: float | None = 1.0,
        ark_learn: bool = True,
        ark_padding: str | None = None,
        point_encoding: bool = False,
        point_match_once: bool = False,
        point_match_absent: bool = False,
        update: str = "gru",
        straight_through: bool = False,
        qkv_bias: bool = False,
        gru_state: str = "raw",
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
        self.ark = AttentionRefiningKernel(ark, ark_size, ark_sigma, ark_learn, ark_padding) if ark else None
        self.points = PointPredictorEncoder(slot_dim, point_match_once, point_match_absent) if point_encoding else None

    def forward(
        self,
        slots: torch.Tensor,
        inputs: torch.Tensor,
        num_iterations: int | None = None,
        grid: tuple[int, int] | None = None,
        points: torch.Tensor | None = None,
        input_weights: torch.Tensor | None = None,
        groups: int = 1,
        weights_eps: bool = True,
    ) -> CorrectorOutput:
        """``slots [B, K, d]``, ``inputs [B, N, D]`` -> :class:`CorrectorOutput`.

        ``grid``: the ``(h, w)`` layout of the ``N`` tokens (row-major), needed by ARK.
        ``points``: ground-truth object centres ``[B, M, 2]`` (NaN = absent) for IPPE's weak
        supervision; ignored without IPPE. With ``point_match_once`` the slots are matched to them
        in the first iteration of this call.
        ``groups``: the ``K`` slots are ``groups`` consecutive groups of ``K / groups`` slots; the
        softmax over slots runs within each group.
        ``input_weights [B, N]`` or ``[B, groups, N]`` in [0, 1]: each input's weight in the slot
        updates of all slots or of each group (0 = the slots ignore it; SMTC's semantic areas, hard
        0/1 or soft). It multiplies the attention (the ``eps`` included) before the renormalisation
        over inputs, as SMTC's code does, so a group whose area is empty gets zero updates; the
        returned attention is multiplied by it too. ``weights_eps``: that renormalisation divides
        by ``sum + eps`` (SMTC's code at HEAD) or, if False, by the plain sum (its first release).
        """
        if self.ark is not None and grid is None:
            raise ValueError("slot attention with ARK needs the token grid (h, w): pass grid=")
        batch, num_slots, dim = slots.shape
        if groups < 1 or num_slots % groups:
            raise ValueError(f"{num_slots} slots do not split into {groups} equal groups")
        if input_weights is not None:
            area = input_weights[:, None, None] if input_weights.ndim == 2 else input_weights[:, :, None]
        inputs = self.norm_inputs(inputs)
        keys = self.to_k(inputs)
        values = self.to_v(inputs)
        attention = slots.new_zeros(batch, num_slots, inputs.shape[1])
        logits = None
        predictions: list[torch.Tensor] = []
        assigned = None
        initial = slots
        iterations = num_iterations or self.num_iterations
        for iteration in range(iterations):
            if self.straight_through and iteration == iterations - 1:
                slots = slots.detach() + initial - initial.detach()
            normalised = self.norm_slots(slots)
            queries = self.to_q(normalised)
            logits = torch.einsum("bkd,bnd->bkn", queries, keys) * self.scale
            if self.ark is not None:
                logits = self.ark(logits, grid)
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
            if self.points is not None:
                slots, predicted, assigned = self.points(slots, points, assigned)
                predictions.append(predicted)
            if self.mlp is not None:
                slots = slots + self.mlp(slots)
        predicted = torch.stack(predictions, dim=1) if predictions else None
        return CorrectorOutput(slots, attention, predicted, logits, assigned)
