"""Cycle-consistency losses (Didolkar et al., ICLR 2024) on any slot model.

Per frame, with the corrector's input features ``F [N, D]`` and the slots ``S [K, D]``:
``A_sf = softmax_rows(S F^T / tau)`` (``[K, N]``) and ``A_fs = softmax_rows(F S^T / tau)``
(``[N, K]``). Slot-feature-slot wants ``A_sf A_fs`` to be the identity; feature-slot-feature
wants ``A_fs A_sf`` to match the (stop-gradient) feature-feature affinity.

Defaults (the paper's exact values were not retrievable; docs/methods.md says why these):
slots and features are L2-normalised, so logits are cosines / ``tau`` with ``tau = 0.1`` (the
temperature of SlotContrast's contrastive loss on normalised slots, bounded logits whatever the
feature scale); the FSF target keeps feature pairs of cosine >= 0 with ``tau_t = 0.1``
(VideoSAUR's similarity target drops negative affinities the same way); at most 512 tokens per
frame (FSF is ``N x N``), drawn at random per step.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ocl.contracts.output import ModelOutput
from ocl.losses.base import LossTerm

LOG_FLOOR = 1e-6
"""Probabilities are clamped to this before the log (fp32)."""


class CycleConsistencyLoss(LossTerm):
    """Shared part of both cycle losses: per-frame slot/feature affinities in fp32.

    Args:
        weight: loss weight (0 = off; every loss config lists both cycle terms at 0).
        temperature: ``tau`` of ``A_sf`` and ``A_fs``.
        normalize: L2-normalise slots and features first (cosine logits).
        max_tokens: use at most this many tokens per frame (random subset, same for all
            frames of the batch); ``None`` = all.
        slot_dim, feature_dim: give both when they differ: slots are then mapped to the
            feature dimension by a learned linear layer (trained with the model).
    """

    def __init__(
        self,
        weight: float = 0.0,
        temperature: float = 0.1,
        normalize: bool = True,
        max_tokens: int | None = 512,
        slot_dim: int | None = None,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize
        self.max_tokens = max_tokens
        needs_projection = slot_dim is not None and feature_dim is not None and slot_dim != feature_dim
        self.projection = nn.Linear(slot_dim, feature_dim, bias=False) if needs_projection else None

    def inputs(self, output: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """-> fp32 slots ``[B*T, K, D]`` and features ``[B*T, N', D]`` (subsampled tokens)."""
        if output.features is None:
            raise ValueError(f"{type(self).__name__} needs a method whose output has 'features'")
        slots = output.slots.flatten(0, 1).float()  # half-precision slots meet the fp32 projection
        features = output.features.flatten(0, 1)
        if self.projection is not None:
            slots = self.projection(slots)
        if slots.shape[-1] != features.shape[-1]:
            raise ValueError(
                f"slots have dimension {slots.shape[-1]} and features {features.shape[-1]}: set "
                "loss.<cycle term>.slot_dim and feature_dim so that a learned projection maps one to the other"
            )
        if self.max_tokens is not None and features.shape[1] > self.max_tokens:
            keep = torch.randperm(features.shape[1], device=features.device)[: self.max_tokens]
            features = features[:, keep]
        return slots, features.float()

    def affinities(self, slots: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [F, K, D]``, ``features [F, N, D]`` -> ``A_sf [F, K, N]``, ``A_fs [F, N, K]``."""
        if self.normalize:
            slots, features = F.normalize(slots, dim=-1), F.normalize(features, dim=-1)
        logits = torch.einsum("fkd,fnd->fkn", slots, features) / self.temperature
        return logits.softmax(dim=-1), logits.transpose(1, 2).softmax(dim=-1)

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        device_type = output.slots.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            slots, features = self.inputs(output)
            return self.cycle_loss(slots, features)

    @abstractmethod
    def cycle_loss(self, slots: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The loss of fp32 ``slots [F, K, D]`` and ``features [F, N, D]``."""


class SlotFeatureSlotCycle(CycleConsistencyLoss):
    """``L_sfs = -(1/K) sum_i log (A_sf A_fs)_ii``, averaged over frames: a slot's attention
    over features, sent back to the slots, should return to it. Near 0 when each slot owns a
    disjoint set of features."""

    def cycle_loss(self, slots: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        slot_to_feature, feature_to_slot = self.affinities(slots, features)
        cycle = torch.bmm(slot_to_feature, feature_to_slot)
        return -cycle.diagonal(dim1=1, dim2=2).clamp_min(LOG_FLOOR).log().mean()


class FeatureSlotFeatureCycle(CycleConsistencyLoss):
    """``L_fsf = -(1/N) sum_ij T_ij log (A_fs A_sf)_ij``, averaged over frames, with target
    ``T = softmax_rows(thresholded F^ F^T / tau_t)`` (``F^`` L2-normalised features; pairs of
    cosine below ``threshold`` get no target mass): features should come back, through the
    slots, to the features similar to them.

    Args:
        target_temperature: ``tau_t``.
        threshold: cosine below which a pair is not a target (the diagonal always is).
        detach_target: stop the gradient through the target (the formula's stop-gradient).
        **kwargs: :class:`CycleConsistencyLoss` arguments.
    """

    def __init__(
        self, target_temperature: float = 0.1, threshold: float = 0.0, detach_target: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.target_temperature = target_temperature
        self.threshold = threshold
        self.detach_target = detach_target

    def target(self, features: torch.Tensor) -> torch.Tensor:
        """``features [F, N, D]`` -> row-stochastic target ``[F, N, N]``."""
        if self.detach_target:
            features = features.detach()
        normalised = F.normalize(features, dim=-1)
        similarity = torch.bmm(normalised, normalised.transpose(1, 2))
        eye = torch.eye(similarity.shape[-1], dtype=torch.bool, device=similarity.device)
        keep = (similarity >= self.threshold) | eye
        return (similarity / self.target_temperature).masked_fill(~keep, float("-inf")).softmax(dim=-1)

    def cycle_loss(self, slots: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        slot_to_feature, feature_to_slot = self.affinities(slots, features)
        cycle = torch.bmm(feature_to_slot, slot_to_feature)
        return -(self.target(features) * cycle.clamp_min(LOG_FLOOR).log()).sum(dim=-1).mean()
