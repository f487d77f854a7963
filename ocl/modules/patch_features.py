"""A frozen stand-in for DINO on the embedded videos: local patch features with explicit position.

No DINO weights exist on a machine without internet, and a tiny random ViT gives features that the
feature methods cannot group: its attention blocks mix every token with the whole frame, so a
patch's features say little about the object under it (docs/benchmarks.md, "Why the DINO-feature
methods do not segment the embedded data"). :class:`PatchFeatureEncoder` keeps what slot attention
needs from DINO features and drops what the embedded data cannot teach:

- **local content**: each ``p x p`` patch's own pixels through a small MLP (no token mixing), so
  patches of one object look alike and differ from the background and from other objects;
- **smooth position**: sine and cosine of the patch centre's ``y`` and ``x`` at a few frequencies,
  as DINO's tokens carry their position, so that a slot can hold one place;
- **standardised channels**: each channel's mean and standard deviation over the train videos,
  so that no channel dominates the reconstruction loss.

The MLP and the statistics are a weights file that ``scripts/build_patch_encoder.py`` writes
(deterministic from its seed; its docstring says what the MLP learns and what it leaks); the file
the feature ``*_synthetic`` experiments use ships in the package (:data:`SHIPPED_WEIGHTS`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ocl.modules.encoders import sinusoidal_position
from ocl.modules.vit import PatchTokenGrid, ViTEncoder, ViTFeatures, weights_digest

SHIPPED = "shipped"
SHIPPED_WEIGHTS = Path(__file__).with_name("weights") / "patch_features_synthetic.pt"
"""The weights file the feature ``*_synthetic`` experiments use (``weights: shipped``)."""


class PatchFeatureEncoder(PatchTokenGrid, nn.Module):
    """Local patch features: ``MLP(patch pixels) ++ sinusoidal position``, standardised; frozen unless ``trainable``.

    Features have ``embed_dim`` channels: ``embed_dim - 4 * len(position_frequencies)`` content
    channels (the MLP's output), then the position channels.

    Args:
        image_size: side of the input frames (a multiple of ``patch_size``).
        patch_size: side of a patch in pixels; the token grid is ``image_size / patch_size``.
        hidden_dim: the MLP's hidden width (one ReLU layer).
        embed_dim: feature channels, content and position together (model configs read it as
            ``${model.encoder.embed_dim}``).
        position_frequencies: the sinusoids' frequencies ``f``: channels ``sin(f * pi/2 * y)`` etc.
            for patch centres ``y, x`` in (-1, 1) (:func:`~ocl.modules.encoders.sinusoidal_position`).
        weights: ``"shipped"`` (:data:`SHIPPED_WEIGHTS`), the path of a file written by
            ``scripts/build_patch_encoder.py``, or ``"random"`` (a seeded MLP, no standardisation:
            tests, and the build script's starting point).
        seed: the seed of the random MLP (``weights: random`` only).
        trainable: fine-tune the content MLP (SMTC's student); the position channels and the
            standardisation stay fixed. Frozen (the default): no gradients, always in eval mode.
        keys_with_position: the keys are the features with the position channels zeroed (False:
            the cosines between keys, VideoSAUR's next-frame similarity target, then say which
            patches look alike, not which are near) or the features themselves (True: SMTC,
            whose slots attend over the keys).
        position_scale: factor on the position channels after standardising (1: unit variance,
            as the content channels); larger values make slot attention group by place more.
    """

    model_name = "patch_features"

    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 4,
        hidden_dim: int = 256,
        embed_dim: int = 64,
        position_frequencies: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
        weights: str = SHIPPED,
        seed: int = 0,
        trainable: bool = False,
        keys_with_position: bool = False,
        position_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.position_frequencies = tuple(float(f) for f in position_frequencies)
        self.embed_dim = embed_dim
        content_dim = embed_dim - 4 * len(self.position_frequencies)
        if content_dim < 1:
            raise ValueError(
                f"embed_dim {embed_dim} leaves no content channels beside 4 x {len(self.position_frequencies)} position channels"
            )
        self.pretrained = weights != "random"
        generator = torch.Generator().manual_seed(seed)
        self.content = nn.Sequential(
            nn.Linear(3 * patch_size * patch_size, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, content_dim)
        )
        for layer in (self.content[0], self.content[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        self.register_buffer("mean", torch.zeros(self.embed_dim))
        self.register_buffer("std", torch.ones(self.embed_dim))
        if self.pretrained:
            self.load_weights(SHIPPED_WEIGHTS if weights == SHIPPED else Path(weights))
        self.requires_grad_(trainable)
        self.trainable = trainable
        self.keys_with_position = keys_with_position
        self.position_scale = position_scale
        is_position = torch.arange(embed_dim) >= content_dim
        # derived from the arguments, so left out of the state dict: per-channel factors after
        # standardising [D], 1 on the content channels [D], the position channels at image_size [h * w, 4 F]
        self.register_buffer("channel_scale", torch.where(is_position, position_scale, 1.0), persistent=False)
        self.register_buffer("content_mask", (~is_position).float(), persistent=False)
        grid = self.grid_size(image_size)  # raises if image_size is not a multiple of the patch size
        self.register_buffer("position", sinusoidal_position(*grid, self.position_frequencies), persistent=False)
        self.train(False)

    def architecture(self) -> dict[str, Any]:
        """The arguments a weights file must have been built with."""
        return {
            "patch_size": self.patch_size,
            "hidden_dim": self.content[0].out_features,
            "embed_dim": self.embed_dim,
            "position_frequencies": list(self.position_frequencies),
        }

    def load_weights(self, path: Path) -> None:
        """Load a file of ``scripts/build_patch_encoder.py``; ValueError if it was built for another architecture."""
        if not path.is_file():
            raise FileNotFoundError(
                f"no patch-encoder weights at {path}; build them with `python scripts/build_patch_encoder.py --out {path}`"
            )
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["architecture"] != self.architecture():
            raise ValueError(
                f"{path} was built for {stored['architecture']}, but the encoder is configured as {self.architecture()}"
            )
        self.load_state_dict(stored["state_dict"])

    def cache_fingerprint(self) -> dict[str, dict[str, Any]]:
        """What the features depend on, as a frozen-feature cache records it (see :meth:`ViTEncoder.cache_fingerprint`)."""
        if self.trainable:
            raise ValueError(f"{self.model_name} is trainable: its features change in training and cannot be cached")
        return {
            "encoder": {
                "model_name": self.model_name,
                **self.architecture(),
                "position_scale": self.position_scale,
                "keys_with_position": self.keys_with_position,
                "weights_sha256": weights_digest(self),
            },
            "resolution": {"image_size": [self.image_size, self.image_size], "patch_size": self.patch_size},
        }

    def train(self, mode: bool = True) -> PatchFeatureEncoder:
        """Follow ``mode`` if trainable; a frozen encoder stays in eval mode (it has no dropout either way)."""
        return super().train(mode and self.trainable)

    def unstandardised(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 3, H, W]`` in [0, 1] -> raw features ``[B, h * w, embed_dim]`` (before standardising)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected frames [B, 3, H, W], got shape {tuple(images.shape)}")
        height, width = self.grid_size((images.shape[2], images.shape[3]))
        p = self.patch_size
        patches = images.unflatten(2, (height, p)).unflatten(4, (width, p))  # [B, 3, h, p, w, p]
        patches = patches.permute(0, 2, 4, 1, 3, 5).flatten(3).flatten(1, 2)  # [B, h*w, 3*p*p]
        position = self.position
        if position.shape[0] != height * width:  # another frame size than image_size
            position = sinusoidal_position(height, width, self.position_frequencies).to(images)
        content = self.content(patches * 2.0 - 1.0)
        return torch.cat([content, position.expand(images.shape[0], -1, -1)], dim=-1)

    def forward(self, images: torch.Tensor) -> ViTFeatures:
        """``images [B, 3, H, W]`` in [0, 1] -> standardised features and keys ``[B, h * w, D]``
        (``keys_with_position``); without autograd unless trainable."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            features = (self.unstandardised(images) - self.mean) / self.std * self.channel_scale
        # position channels zeroed rather than dropped: keys keep the features' shape (caches)
        keys = features if self.keys_with_position else features * self.content_mask
        return ViTFeatures(features=features, keys=keys, grid=self.grid_size((images.shape[2], images.shape[3])))


PatchEncoder = ViTEncoder | PatchFeatureEncoder
"""The encoders the feature methods accept: frames ``[B, 3, H, W]`` -> :class:`ViTFeatures`."""
