"""Slot models on frozen ViT features: VideoSAUR, SlotContrast (and SlotCurri on top).

One module, configured per paper (``configs/model/videosaur.yaml``, ``slotcontrast.yaml``):

- VideoSAUR: Gaussian init, corrector without residual MLP, SlotMixer decoder that predicts
  each patch's similarity logits over the next frame's patches (``predict_similarity``), plus
  block-feature reconstruction on YT-VIS (``reconstruct_features``).
- SlotContrast: learned fixed init, corrector with residual MLP, MLP broadcast decoder that
  reconstructs the block features; its slot-slot contrastive loss reads only the slots.

The frozen encoder is called in :meth:`FeatureVideoMethod.encode` and nowhere else; a batch
from a frozen-feature cache (``data.feature_cache``) carries the features instead, and the step
skips the encoder (:meth:`FeatureVideoMethod.frame_features`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from ocl.contracts.batch import FEATURE_KEYS, FEATURES, VIDEO
from ocl.contracts.output import ASSIGNED_POINTS, PREDICTED_POINTS, ModelOutput
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS
from ocl.methods.base import ObjectCentricMethod
from ocl.methods.encoder_weights import leave_out_frozen_encoder, put_back_frozen_encoder
from ocl.modules.encoders import TokenMLP
from ocl.modules.patch_features import PatchEncoder
from ocl.modules.video import VideoSlotProcessor
from ocl.modules.vit import ViTFeatures

DecoderFactory = Callable[..., nn.Module]
"""``(num_tokens=N, output_dim=C) -> decoder``; the decoder maps slots ``[B, K, d]`` to
``(values [B, N, C], masks [B, K, N])``."""


class FeatureVideoMethod(ObjectCentricMethod):
    """Frozen ViT -> token MLP -> initialiser -> corrector -> predictor -> feature decoder.

    Output: ``slots [B, T, K, d]``, ``masks [B, T, K, h, w]`` (the decoder's alpha masks on the
    patch grid), ``features [B, T, N, token_dim]`` (the corrector's input), and, as configured,
    ``reconstruction``/``target`` ``[B, T, N, D]`` (target: the frozen block features or keys) and
    ``extras["keys"] [B, T, N, D]`` / ``extras["similarity_logits"] [B, T, N, N]``.

    Args:
        encoder: the frozen feature extractor.
        processor: the recurrent slot processor over frames.
        decoder: factory of the decoder (a Hydra ``_partial_``); this module passes the
            number of patches and the channels to decode, which follow from the encoder.
        token_dim: dimension of the corrector's input tokens (the token MLP's output).
        reconstruct_features: decode the encoder's block features (MSE target).
        reconstruction_target: what ``reconstruct_features`` decodes: ``"features"`` (the
            recipes: the block features, the corrector's input too) or ``"keys"`` (ocl's option:
            the encoder's keys; on the stand-in patch encoder, its content channels without the
            position channels, which the decoder's own positions would predict without slots).
        predict_similarity: decode ``N`` logits per patch over the next frame's patches
            (VideoSAUR's temporal similarity loss).
        cyclic_inference: evaluate with the processor's cyclic inference (see
            :class:`~ocl.modules.video.VideoSlotProcessor`); training is unaffected.
        **kwargs: :class:`ObjectCentricMethod` arguments (losses, optimizer, scheduler, eval_seed).
    """

    def __init__(
        self,
        encoder: PatchEncoder,
        processor: VideoSlotProcessor,
        decoder: DecoderFactory,
        token_dim: int,
        reconstruct_features: bool = True,
        reconstruction_target: Literal["features", "keys"] = "features",
        predict_similarity: bool = False,
        cyclic_inference: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (reconstruct_features or predict_similarity):
            raise ValueError("the decoder needs something to decode: set reconstruct_features or predict_similarity")
        if reconstruction_target not in ("features", "keys"):
            raise ValueError(f"reconstruction_target must be 'features' or 'keys', got {reconstruction_target!r}")
        self.encoder = encoder
        self.token_mlp = TokenMLP(encoder.embed_dim, token_dim)
        self.processor = processor
        self.processor.cyclic_inference = cyclic_inference
        self.num_tokens = encoder.num_tokens()
        self.reconstruct_features = reconstruct_features
        self.reconstruction_target = reconstruction_target
        self.predict_similarity = predict_similarity
        output_dim = (encoder.embed_dim if reconstruct_features else 0) + (self.num_tokens if predict_similarity else 0)
        self.decoder = decoder(num_tokens=self.num_tokens, output_dim=output_dim)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        leave_out_frozen_encoder(checkpoint, self.encoder, "encoder.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        put_back_frozen_encoder(checkpoint, self.encoder, "encoder.")

    def slot_initialiser(self) -> nn.Module:
        return self.processor.initialiser

    def uses_cyclic_inference(self) -> bool:
        return self.processor.cyclic_inference

    def patch_encoder(self) -> PatchEncoder:
        return self.encoder

    def encode(self, video: torch.Tensor) -> ViTFeatures:
        """``video [B, T, 3, H, W]`` -> frozen features of all frames (``[B*T, N, D]`` each)."""
        return self.encoder(video.flatten(0, 1))

    def frame_features(self, batch: dict[str, Any]) -> tuple[ViTFeatures, int, int]:
        """The frozen features of the batch's ``B * T`` frames (``[B*T, N, D]`` each), ``B``, ``T``:
        the encoder's output on ``video``, or, without running the encoder, the ``features`` and
        ``feature_keys`` ``[B, T, N, D]`` of a frozen-feature cache (:mod:`ocl.data.feature_cache`),
        converted to the model's dtype."""
        if FEATURES not in batch:
            video = batch[VIDEO]
            return self.encode(video), video.shape[0], video.shape[1]
        features, keys = batch[FEATURES], batch.get(FEATURE_KEYS)
        batch_size, num_frames, tokens, dim = features.shape
        if (tokens, dim) != (self.num_tokens, self.encoder.embed_dim):
            raise ValueError(
                f"cached features have {tokens} tokens of {dim} channels; {self.encoder.model_name} at "
                f"{self.encoder.image_size} px gives {self.num_tokens} of {self.encoder.embed_dim}"
            )
        if self.reads_keys() and keys is None:
            raise ValueError(
                f"the batch has '{FEATURES}' but no '{FEATURE_KEYS}', which predict_similarity / reconstruction_target=keys read"
            )
        dtype = next(self.token_mlp.parameters()).dtype
        return (
            ViTFeatures(
                features=features.flatten(0, 1).to(dtype),
                keys=None if keys is None else keys.flatten(0, 1).to(dtype),
                grid=self.encoder.grid_size(self.encoder.image_size),
            ),
            batch_size,
            num_frames,
        )

    def frozen_feature_fingerprint(self) -> dict[str, Any]:
        """What a frozen-feature cache must match to stand in for :meth:`encode`: the encoder and
        resolution (:meth:`~ocl.modules.vit.ViTEncoder.cache_fingerprint`), and ``keys``: whether the attention keys
        are read (:meth:`reads_keys`)."""
        return {**self.encoder.cache_fingerprint(), "keys": self.reads_keys()}

    def reads_keys(self) -> bool:
        """Whether a step reads the encoder's keys: VideoSAUR's similarity target or ``reconstruction_target=keys``."""
        return self.predict_similarity or (self.reconstruct_features and self.reconstruction_target == "keys")

    def forward(self, batch: dict[str, Any], previous_slots: torch.Tensor | None = None) -> ModelOutput:
        """``previous_slots [B, K, d]``: continue a video from the slots of the frame before this
        batch's first (see :class:`~ocl.modules.video.VideoSlotProcessor`); None starts it."""
        encoded, batch_size, num_frames = self.frame_features(batch)
        tokens = self.token_mlp(encoded.features).unflatten(0, (batch_size, num_frames))
        slots, attention, points = self.processor(
            tokens, encoded.grid, self.processor.select_context(batch), previous_slots
        )
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
            output.extras[PREDICTED_POINTS] = points.predicted
            output.extras[ASSIGNED_POINTS] = points.assigned
        if self.reconstruct_features:
            output.reconstruction = decoded[..., : self.encoder.embed_dim]
            target = encoded.keys if self.reconstruction_target == "keys" else encoded.features
            output.target = target.unflatten(0, (batch_size, num_frames))
        if self.predict_similarity:
            output.extras[SIMILARITY_LOGITS] = decoded[..., -self.num_tokens :]
            output.extras[KEYS] = encoded.keys.unflatten(0, (batch_size, num_frames))
        return output
