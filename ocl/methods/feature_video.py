"""Slot models on frozen ViT features: VideoSAUR, SlotContrast (and SlotCurri on top).

One module, configured per paper (``configs/model/videosaur.yaml``, ``slotcontrast.yaml``):

- VideoSAUR: Gaussian init, corrector without residual MLP, SlotMixer decoder that predicts
  each patch's similarity logits over the next frame's patches (``predict_similarity``), plus
  block-feature reconstruction on YT-VIS (``reconstruct_features``).
- SlotContrast: learned fixed init, corrector with residual MLP, MLP broadcast decoder that
  reconstructs the block features; its slot-slot contrastive loss reads only the slots.

The frozen encoder is called in :meth:`FeatureVideoMethod.encode` and nowhere else, so a
feature cache can replace it without touching the rest of the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ocl.data.batch import POINTS, VIDEO
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS
from ocl.methods.base import ObjectCentricMethod
from ocl.methods.output import PREDICTED_POINTS, ModelOutput
from ocl.modules.encoders import TokenMLP
from ocl.modules.video import VideoSlotProcessor
from ocl.modules.vit import FrozenViT, ViTFeatures

ENCODER_PREFIX = "encoder."
ENCODER_FINGERPRINT = "ocl_encoder_fingerprint"


def encoder_fingerprint(encoder: nn.Module) -> float:
    """A float64 checksum of the encoder's weights (sum of |w| weighted by position in each tensor)."""
    total = 0.0
    for tensor in encoder.state_dict().values():
        flat = tensor.detach().double().flatten()
        total += float((flat.abs() * torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64)).sum())
    return total


DecoderFactory = Callable[..., nn.Module]
"""``(num_tokens=N, output_dim=C) -> decoder``; the decoder maps slots ``[B, K, d]`` to
``(values [B, N, C], masks [B, K, N])``."""


class FeatureVideoMethod(ObjectCentricMethod):
    """Frozen ViT -> token MLP -> initialiser -> corrector -> predictor -> feature decoder.

    Output: ``slots [B, T, K, d]``, ``masks [B, T, K, h, w]`` (the decoder's alpha masks on the
    patch grid), ``features [B, T, N, token_dim]`` (the corrector's input), and, as configured,
    ``reconstruction``/``target`` ``[B, T, N, D]`` (target = frozen block features) and
    ``extras["keys"] [B, T, N, D]`` / ``extras["similarity_logits"] [B, T, N, N]``.

    Args:
        encoder: the frozen feature extractor.
        processor: the recurrent slot processor over frames.
        decoder: factory of the decoder (a Hydra ``_partial_``); this module passes the
            number of patches and the channels to decode, which follow from the encoder.
        token_dim: dimension of the corrector's input tokens (the token MLP's output).
        reconstruct_features: decode the encoder's block features (MSE target).
        predict_similarity: decode ``N`` logits per patch over the next frame's patches
            (VideoSAUR's temporal similarity loss).
        cyclic_inference: evaluate with the processor's cyclic inference (see
            :class:`~ocl.modules.video.VideoSlotProcessor`); training is unaffected.
        **kwargs: :class:`ObjectCentricMethod` arguments (losses, optimizer, scheduler, eval_seed).
    """

    def __init__(
        self,
        encoder: FrozenViT,
        processor: VideoSlotProcessor,
        decoder: DecoderFactory,
        token_dim: int,
        reconstruct_features: bool = True,
        predict_similarity: bool = False,
        cyclic_inference: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (reconstruct_features or predict_similarity):
            raise ValueError("the decoder needs something to decode: set reconstruct_features or predict_similarity")
        self.encoder = encoder
        self.token_mlp = TokenMLP(encoder.embed_dim, token_dim)
        self.processor = processor
        self.processor.cyclic_inference = cyclic_inference
        self.num_tokens = encoder.num_tokens()
        self.reconstruct_features = reconstruct_features
        self.predict_similarity = predict_similarity
        output_dim = (encoder.embed_dim if reconstruct_features else 0) + (self.num_tokens if predict_similarity else 0)
        self.decoder = decoder(num_tokens=self.num_tokens, output_dim=output_dim)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave pretrained encoder weights out (they are rebuilt from ``model.encoder.weights``;
        ViT-B would add 340 MB to every checkpoint); keep a fingerprint to check them on load."""
        super().on_save_checkpoint(checkpoint)
        if self.encoder.pretrained:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(ENCODER_PREFIX)]:
                del state[key]
            checkpoint[ENCODER_FINGERPRINT] = encoder_fingerprint(self.encoder)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if ENCODER_FINGERPRINT not in checkpoint:
            return
        if abs(checkpoint[ENCODER_FINGERPRINT] - encoder_fingerprint(self.encoder)) > 1e-6 * abs(
            checkpoint[ENCODER_FINGERPRINT]
        ):
            raise ValueError(
                f"the encoder weights loaded from model.encoder.weights ({self.encoder.model_name}) differ from "
                "those the checkpoint was trained with; pass the same weights file (or 'hub') as in training"
            )
        checkpoint["state_dict"].update({ENCODER_PREFIX + k: v for k, v in self.encoder.state_dict().items()})

    def encode(self, video: torch.Tensor) -> ViTFeatures:
        """``video [B, T, 3, H, W]`` -> frozen features of all frames (``[B*T, N, D]`` each)."""
        return self.encoder(video.flatten(0, 1))

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        video = batch[VIDEO]
        batch_size, num_frames = video.shape[:2]
        encoded = self.encode(video)
        tokens = self.token_mlp(encoded.features).unflatten(0, (batch_size, num_frames))
        slots, attention, points = self.processor(tokens, encoded.grid, batch.get(POINTS))
        decoded, masks = self.decoder(slots.flatten(0, 1))
        decoded = decoded.unflatten(0, (batch_size, num_frames))
        height, width = encoded.grid
        output = ModelOutput(
            slots=slots,
            masks=masks.unflatten(0, (batch_size, num_frames)).unflatten(-1, (height, width)),
            features=tokens,
            attention=attention,
        )
        if points is not None:
            output.extras[PREDICTED_POINTS] = points
        if self.reconstruct_features:
            output.reconstruction = decoded[..., : self.encoder.embed_dim]
            output.target = encoded.features.unflatten(0, (batch_size, num_frames))
        if self.predict_similarity:
            output.extras[SIMILARITY_LOGITS] = decoded[..., -self.num_tokens :]
            output.extras[KEYS] = encoded.keys.unflatten(0, (batch_size, num_frames))
        return output
