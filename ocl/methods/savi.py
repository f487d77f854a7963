"""SAVi (Kipf et al. 2022) and Slot Attention (Locatello et al. 2020) on pixels.

Slot Attention is SAVi on single frames without a predictor (``configs/model/slot_attention.yaml``),
so both are this one module configured differently.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ocl.contracts.batch import VIDEO
from ocl.contracts.output import ASSIGNED_POINTS, PREDICTED_POINTS, ModelOutput
from ocl.methods.base import ObjectCentricMethod
from ocl.modules.ark import token_grid
from ocl.modules.decoders import SpatialBroadcastDecoder
from ocl.modules.video import VideoSlotProcessor


class SAVi(ObjectCentricMethod):
    """CNN encoder -> initialiser -> slot-attention corrector -> predictor -> broadcast decoder.

    The reconstruction target is the video resized (area) to the decoder's output size, so a
    decoder cheaper than full resolution trains on a faithful low-resolution target; the
    masks are resized to the label size by the metrics.

    Args:
        encoder: frames ``[B*T, 3, H, W]`` -> tokens ``[B*T, N, D]``.
        processor: tokens ``[B, T, N, D]`` -> slots ``[B, T, K, d]`` and attention.
        decoder: slots ``[B*T, K, d]`` -> reconstruction ``[B*T, 3, h, w]`` and masks ``[B*T, K, h, w]``.
        cyclic_inference: evaluate with the processor's cyclic inference (see
            :class:`~ocl.modules.video.VideoSlotProcessor`); training is unaffected.
        **kwargs: :class:`ObjectCentricMethod` arguments (losses, optimizer, scheduler).
    """

    def __init__(
        self,
        encoder: nn.Module,
        processor: VideoSlotProcessor,
        decoder: SpatialBroadcastDecoder,
        cyclic_inference: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.processor = processor
        self.processor.cyclic_inference = cyclic_inference
        self.decoder = decoder

    def slot_initialiser(self) -> nn.Module:
        return self.processor.initialiser

    def uses_cyclic_inference(self) -> bool:
        return self.processor.cyclic_inference

    def forward(self, batch: dict[str, Any], previous_slots: torch.Tensor | None = None) -> ModelOutput:
        """``previous_slots [B, K, d]``: continue a video from the slots of the frame before this
        batch's first (see :class:`~ocl.modules.video.VideoSlotProcessor`); None starts it."""
        video = batch[VIDEO]
        batch_size, num_frames = video.shape[:2]
        frames = video.flatten(0, 1)
        features = self.encoder(frames).unflatten(0, (batch_size, num_frames))
        grid = token_grid(features.shape[2], video.shape[-2:])
        slots, attention, points = self.processor(features, grid, self.processor.select_context(batch), previous_slots)
        reconstruction, masks = self.decoder(slots.flatten(0, 1))
        size = reconstruction.shape[-2:]
        target = frames if frames.shape[-2:] == size else F.interpolate(frames, size=size, mode="area")
        output = ModelOutput(
            slots=slots,
            masks=masks.unflatten(0, (batch_size, num_frames)),
            features=features,
            reconstruction=reconstruction.unflatten(0, (batch_size, num_frames)),
            target=target.unflatten(0, (batch_size, num_frames)),
            attention=attention,
        )
        if points is not None:
            output.extras[PREDICTED_POINTS] = points.predicted
            output.extras[ASSIGNED_POINTS] = points.assigned
        return output
