"""SAVi-style recurrent processing of a video: correct, then predict, frame by frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ocl.modules.points import VideoPoints, stack_iterations
from ocl.modules.slot_attention import SlotAttention


class ProcessorOutput(NamedTuple):
    """What :class:`VideoSlotProcessor` returns: ``slots [B, T, K, d]``, ``attention [B, T, K, N]``
    and the corrector's IPPE points (:class:`~ocl.modules.points.VideoPoints`; None without IPPE)."""

    slots: torch.Tensor
    attention: torch.Tensor
    points: VideoPoints | None = None


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

    def select_context(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The entries of ``batch`` (per frame, ``[B, T, ...]``) the corrector reads as its context
        (its refiners' ``context_keys``), so other labels never reach the model."""
        return {key: batch[key] for key in self.corrector.context_keys if key in batch}

    def forward(
        self,
        features: torch.Tensor,
        grid: tuple[int, int] | None = None,
        context: Mapping[str, torch.Tensor] | None = None,
        previous_slots: torch.Tensor | None = None,
    ) -> ProcessorOutput:
        """``features [B, T, N, D]`` -> :class:`ProcessorOutput`.

        ``grid``: the ``(h, w)`` token layout (for a logit refiner); ``context``: per-frame batch
        entries ``[B, T, ...]`` for the corrector (:meth:`select_context`; SLASH's ground-truth
        points ``[B, T, M, 2]``, NaN = absent). The backward pass of cyclic inference gets none.
        ``previous_slots``: ``[B, K, d]`` slots of the frame just before ``features[:, 0]`` (the last
        frame's ``slots`` of a call on the preceding frames). The video then continues from them:
        frame 0 starts from their prediction, not from the initialiser, with the corrector's usual
        iterations, so consecutive chunks give the slots of one pass over the whole video.
        """
        frames = range(features.shape[1])
        if previous_slots is None:
            forward = self._run(self.initialiser(features.shape[0]), features, frames, grid, context)
        else:
            if self.cyclic_inference and not self.training:
                raise ValueError("cyclic inference runs backward over the whole video: it cannot continue a chunk")
            initial = previous_slots if self.predictor is None else self.predictor(previous_slots)
            forward = self._run(initial, features, frames, grid, context, first=False)
        if not (self.cyclic_inference and not self.training and len(frames) > 1):
            return forward
        backward_frames = list(reversed(frames))[1:]
        backward = self._run(self.predictor(forward.slots[:, -1]), features, backward_frames, grid, None, first=False)

        def cyclic(back: Any, fwd: Any) -> Any:
            if isinstance(back, tuple):  # VideoPoints
                return type(back)(*(cyclic(b, f) for b, f in zip(back, fwd, strict=True)))
            return None if back is None else torch.cat([back.flip(1), fwd[:, -1:]], dim=1)

        return ProcessorOutput(*(cyclic(back, fwd) for back, fwd in zip(backward, forward, strict=True)))

    def _run(
        self,
        slots: torch.Tensor,
        features: torch.Tensor,
        frames: Sequence[int],
        grid: tuple[int, int] | None,
        context: Mapping[str, torch.Tensor] | None,
        first: bool = True,
    ) -> ProcessorOutput:
        """Correct then predict over ``frames`` in the given order, from initial ``slots [B, K, d]``;
        ``first``: the first of them gets ``first_frame_iterations``. -> outputs over ``len(frames)``."""
        outputs = []
        for step, t in enumerate(frames):
            iterations = self.first_frame_iterations if first and step == 0 else None
            frame_context = {key: value[:, t] for key, value in (context or {}).items()}
            output = self.corrector(slots, features[:, t], grid=grid, context=frame_context, num_iterations=iterations)
            outputs.append(output)
            slots = output.slots
            if self.predictor is not None and step + 1 < len(frames):
                slots = self.predictor(slots)
        points = None
        if outputs[0].predictions is not None:
            points = VideoPoints(
                stack_iterations([o.predictions for o in outputs]),
                torch.stack([o.refiner_state for o in outputs], dim=1),
            )
        return ProcessorOutput(
            torch.stack([o.slots for o in outputs], dim=1), torch.stack([o.attention for o in outputs], dim=1), points
        )
