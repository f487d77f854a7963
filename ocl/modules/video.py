"""SAVi-style recurrent processing of a video: correct, then predict, frame by frame."""

from __future__ import annotations

import torch
from torch import nn

from ocl.modules.slot_attention import SlotAttention


class VideoSlotProcessor(nn.Module):
    """For ``t = 0..T-1``: ``slots_t = corrector(init_t, features_t)``; ``init_{t+1} = predictor(slots_t)``.

    Args:
        initialiser: module ``batch_size -> [B, K, d]`` giving the first frame's initial slots.
        corrector: slot attention applied at every frame.
        predictor: ``[B, K, d] -> [B, K, d]``; ``None`` carries the slots over unchanged
            (Slot Attention on images is the ``T = 1`` case).
        first_frame_iterations: corrector iterations on frame 0 (``None``: the corrector's default).
    """

    def __init__(
        self,
        initialiser: nn.Module,
        corrector: SlotAttention,
        predictor: nn.Module | None = None,
        first_frame_iterations: int | None = None,
    ) -> None:
        super().__init__()
        self.initialiser = initialiser
        self.corrector = corrector
        self.predictor = predictor
        self.first_frame_iterations = first_frame_iterations

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features [B, T, N, D]`` -> (slots ``[B, T, K, d]``, attention ``[B, T, K, N]``)."""
        slots = self.initialiser(features.shape[0])
        all_slots, all_attention = [], []
        for t in range(features.shape[1]):
            iterations = self.first_frame_iterations if t == 0 else None
            slots, attention = self.corrector(slots, features[:, t], num_iterations=iterations)
            all_slots.append(slots)
            all_attention.append(attention)
            if self.predictor is not None and t + 1 < features.shape[1]:
                slots = self.predictor(slots)
        return torch.stack(all_slots, dim=1), torch.stack(all_attention, dim=1)
