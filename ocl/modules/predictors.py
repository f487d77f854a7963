"""Predictors that carry slots from frame t to the initialisation of frame t + 1."""

from __future__ import annotations

import torch

from ocl.modules.transformer import TransformerBlock


class TransformerPredictor(TransformerBlock):
    """One pre-LN transformer block of self-attention over the slots of a frame (SAVi,
    VideoSAUR, SlotContrast); see :class:`~ocl.modules.transformer.TransformerBlock` for the
    arguments (``dim`` = slot dimension; ``legacy_scale`` and ``attention_init="xavier"`` are
    the VideoSAUR / SlotContrast / SlotCurri code's).
    """

    def forward(self, slots: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``slots [B, K, d] -> [B, K, d]``."""
        return super().forward(slots)
