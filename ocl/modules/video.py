"""SAVi-style recurrent processing of a video: correct, then predict, frame by frame."""

from __future__ import annotations

from collections.abc import Sequence

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

    ``cyclic_inference`` (set by the method from ``model.cyclic_inference``, off by default): in
    evaluation (not training), SlotCurri's cyclic inference: after the forward pass, run the
    corrector and predictor backward from the last frame's prediction over frames ``T-2 .. 0``;
    frame ``T-1`` keeps its forward output, every other frame takes its backward output. Needs
    a predictor.
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
        self._cyclic_inference = False

    @property
    def cyclic_inference(self) -> bool:
        return self._cyclic_inference

    @cyclic_inference.setter
    def cyclic_inference(self, enabled: bool) -> None:
        if enabled and self.predictor is None:
            raise ValueError("cyclic_inference needs a predictor (it starts from the last frame's prediction)")
        self._cyclic_inference = enabled

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features [B, T, N, D]`` -> (slots ``[B, T, K, d]``, attention ``[B, T, K, N]``)."""
        frames = range(features.shape[1])
        slots, attention = self._run(self.initialiser(features.shape[0]), features, frames)
        if self.cyclic_inference and not self.training and len(frames) > 1:
            backward = list(reversed(frames))[1:]
            back_slots, back_attention = self._run(self.predictor(slots[:, -1]), features, backward, first=False)
            slots = torch.cat([back_slots.flip(1), slots[:, -1:]], dim=1)
            attention = torch.cat([back_attention.flip(1), attention[:, -1:]], dim=1)
        return slots, attention

    def _run(
        self, slots: torch.Tensor, features: torch.Tensor, frames: Sequence[int], first: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct then predict over ``frames`` in the given order, from initial ``slots [B, K, d]``;
        ``first``: the first of them gets ``first_frame_iterations``. -> ``[B, len(frames), K, d]``, ``[..., N]``."""
        all_slots, all_attention = [], []
        for step, t in enumerate(frames):
            iterations = self.first_frame_iterations if first and step == 0 else None
            slots, attention = self.corrector(slots, features[:, t], num_iterations=iterations)
            all_slots.append(slots)
            all_attention.append(attention)
            if self.predictor is not None and step + 1 < len(frames):
                slots = self.predictor(slots)
        return torch.stack(all_slots, dim=1), torch.stack(all_attention, dim=1)
