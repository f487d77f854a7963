"""Spatial transforms applied identically to a clip's frames and its instance masks.

Frames are resized with antialiased bilinear interpolation, masks with nearest neighbour, so
ids stay ids. Frames stay uint8 until the end: torch's uint8 antialiased resize is about 20x
faster than float32 on a 720p clip (one thread) and differs by less than one grey level. The two published protocols for ViT encoders are both instances of
:class:`VideoTransform`: ``short_side_crop`` to 224 (ViT/16) and ``resize`` to 518 (DINOv2/14).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("resize", "short_side_crop", "none")
CROPS = ("center", "random")


@dataclass(frozen=True)
class VideoTransform:
    """Resize (and crop) a clip to ``size x size``.

    Args:
        size: output side in pixels.
        mode: ``resize`` (stretch to a square), ``short_side_crop`` (scale the short side to
            ``size``, then crop the long side) or ``none`` (keep the stored size).
        crop: ``center`` or ``random`` (training; only with ``short_side_crop``: the offset is
            drawn from the ``rng`` passed to :meth:`__call__`, the same for every frame).
        horizontal_flip: flip the whole clip with probability 1/2 when an ``rng`` is given.
    """

    size: int = 224
    mode: str = "short_side_crop"
    crop: str = "center"
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown transform mode {self.mode!r}; known: {list(MODES)}")
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; known: {list(CROPS)}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the output for a stored frame of ``height x width``."""
        return (height, width) if self.mode == "none" else (self.size, self.size)

    def __call__(
        self, frames: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 ``frames [T, H, W, 3]`` and int ``masks [T, H, W]`` (or None) ->
        float32 ``[T, 3, h, w]`` in [0, 1] and int64 ``[T, h, w]``.

        ``rng`` is given for training draws (random crop/flip), None for evaluation.
        """
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # uint8, channels-last memory
        labels = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks))
        height, width = video.shape[-2:]
        if self.mode == "resize":
            video, labels = _resize(video, labels, (self.size, self.size))
        elif self.mode == "short_side_crop":
            scale = self.size / min(height, width)
            resized = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
            video, labels = _resize(video, labels, resized)
            top, left = self._crop_offset(resized, rng)
            video = video[..., top : top + self.size, left : left + self.size]
            labels = None if labels is None else labels[..., top : top + self.size, left : left + self.size]
        if self.horizontal_flip and rng is not None and rng.random() < 0.5:
            video = video.flip(-1)
            labels = None if labels is None else labels.flip(-1)
        video = video.contiguous().float().div_(255.0)
        return video, None if labels is None else labels.long()

    def _crop_offset(self, resized: tuple[int, int], rng: np.random.Generator | None) -> tuple[int, int]:
        spare_h, spare_w = resized[0] - self.size, resized[1] - self.size
        if self.crop == "random" and rng is not None:
            return int(rng.integers(spare_h + 1)), int(rng.integers(spare_w + 1))
        return spare_h // 2, spare_w // 2


def _resize(
    video: torch.Tensor, labels: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bilinear (antialiased) uint8 frames ``[T, 3, H, W]``, nearest-neighbour labels ``[T, H, W]``."""
    if tuple(video.shape[-2:]) == size:
        return video, labels
    video = F.interpolate(
        video.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", antialias=True
    )
    if labels is not None:
        labels = labels[:, _nearest_indices(labels.shape[1], size[0])][:, :, _nearest_indices(labels.shape[2], size[1])]
    return video, labels


def _nearest_indices(source: int, target: int) -> torch.Tensor:
    """Source index of each of ``target`` output positions: the pixel containing its centre
    (``mode="nearest-exact"``, float32 like torch's), computed as a gather so labels keep their dtype."""
    return ((torch.arange(target, dtype=torch.float32) + 0.5) * (source / target)).floor().long().clamp_(max=source - 1)
