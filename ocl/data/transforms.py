"""Spatial transforms applied identically to a clip's frames and its instance masks.

Frames are resized by interpolation, masks by nearest neighbour (``nearest-exact``), so ids stay
ids. By default frames are resized with antialiased bilinear interpolation on uint8: torch's
uint8 antialiased resize is about 20x faster than float32 on a 720p clip (one thread) and differs
by less than one grey level. Any other interpolation (``bicubic``, or ``antialias=False``) runs
on float32 frames in [0, 1] and is clamped to [0, 1] after the resize: exactly the resize of
VideoSAUR's, SlotContrast's and SlotCurri's data pipelines (``torch.nn.functional.interpolate``,
``align_corners=False``, then ``clamp(0, 1)``).

Geometries (``mode``): ``resize`` stretches to a square; ``short_side_crop`` scales the short
side to ``size`` and crops the long side (random or centred); ``center_square`` crops the
centred square of side ``min(H, W)`` first and resizes it to ``size`` (the authors' evaluation
crop, ``crop_type: central``); ``none`` keeps the stored size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("resize", "short_side_crop", "center_square", "none")
CROPS = ("center", "random")
INTERPOLATIONS = ("bilinear", "bicubic")
LONG_SIDE_ROUNDINGS = ("round", "floor")


@dataclass(frozen=True)
class VideoTransform:
    """Resize (and crop) a clip to ``size x size``.

    Args:
        size: output side in pixels.
        mode: ``resize`` (stretch to a square), ``short_side_crop`` (scale the short side to
            ``size``, then crop the long side), ``center_square`` (crop the centred
            ``min(H, W)`` square, then resize it to ``size``; the offset rounds halves to even
            as torchvision's video centre crop) or ``none`` (keep the stored size).
        crop: ``center`` or ``random`` (training; only with ``short_side_crop``: the offset is
            drawn from the ``rng`` passed to :meth:`__call__`, the same for every frame).
        horizontal_flip: flip the whole clip with probability 1/2 when an ``rng`` is given.
        interpolation: frame interpolation, ``bilinear`` or ``bicubic``.
        antialias: antialias when downsampling (torch's ``antialias``). ``bilinear`` with
            ``antialias`` resizes uint8 frames (fast); anything else resizes float32 frames and
            clamps them to [0, 1].
        long_side_rounding: ``short_side_crop``'s long side, ``size * long / short`` rounded to
            the nearest integer (``round``) or down (``floor``: torchvision's and the authors').
        stored_short_side: if set, frames and masks are first resized (nearest-exact, long side
            floored) to this short side, as the authors store YouTube-VIS
            (``save_ytvis2021.py --resize``: 320); ``None`` uses the frames as read.
    """

    size: int = 224
    mode: str = "short_side_crop"
    crop: str = "center"
    horizontal_flip: bool = False
    interpolation: str = "bilinear"
    antialias: bool = True
    long_side_rounding: str = "round"
    stored_short_side: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown transform mode {self.mode!r}; known: {list(MODES)}")
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; known: {list(CROPS)}")
        if self.mode == "center_square" and self.crop != "center":
            raise ValueError("mode 'center_square' crops the centre only: use crop='center'")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; known: {list(INTERPOLATIONS)}")
        if self.long_side_rounding not in LONG_SIDE_ROUNDINGS:
            raise ValueError(
                f"unknown long_side_rounding {self.long_side_rounding!r}; known: {list(LONG_SIDE_ROUNDINGS)}"
            )
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.stored_short_side is not None and self.stored_short_side < 1:
            raise ValueError(f"stored_short_side must be >= 1 or None, got {self.stored_short_side}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the output for a frame of ``height x width`` as read."""
        if self.mode != "none":
            return (self.size, self.size)
        if self.stored_short_side is None:
            return (height, width)
        return short_side_shape(height, width, self.stored_short_side, "floor")

    def __call__(
        self, frames: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 ``frames [T, H, W, 3]`` and int ``masks [T, H, W]`` (or None) ->
        float32 ``[T, 3, h, w]`` in [0, 1] and int64 ``[T, h, w]``.

        ``rng`` is given for training draws (random crop/flip), None for evaluation.
        """
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # uint8, channels-last memory
        labels = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks))
        if self.stored_short_side is not None:
            stored = short_side_shape(*video.shape[-2:], self.stored_short_side, "floor")
            video, labels = _nearest(video, stored), None if labels is None else _nearest(labels, stored)
        height, width = video.shape[-2:]
        if self.mode == "resize":
            video, labels = self._resize(video, labels, (self.size, self.size))
        elif self.mode == "short_side_crop":
            resized = short_side_shape(height, width, self.size, self.long_side_rounding)
            video, labels = self._resize(video, labels, resized)
            top, left = self._crop_offset(resized, rng)
            video, labels = _crop(video, labels, top, left, self.size)
        elif self.mode == "center_square":
            side = min(height, width)
            # Python's round: halves to even, as the authors' int(round((h - th) / 2.0)).
            video, labels = _crop(video, labels, round((height - side) / 2), round((width - side) / 2), side)
            video, labels = self._resize(video, labels, (self.size, self.size))
        if self.horizontal_flip and rng is not None and rng.random() < 0.5:
            video = video.flip(-1)
            labels = None if labels is None else labels.flip(-1)
        video = video.contiguous()
        if video.dtype == torch.uint8:
            video = video.float().div_(255.0)
        return video, None if labels is None else labels.long()

    def _crop_offset(self, resized: tuple[int, int], rng: np.random.Generator | None) -> tuple[int, int]:
        spare_h, spare_w = resized[0] - self.size, resized[1] - self.size
        if self.crop == "random" and rng is not None:
            return int(rng.integers(spare_h + 1)), int(rng.integers(spare_w + 1))
        return spare_h // 2, spare_w // 2

    def _resize(
        self, video: torch.Tensor, labels: torch.Tensor | None, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames ``[T, 3, H, W]`` (uint8, or float32 after a float resize) by this transform's
        interpolation, labels ``[T, H, W]`` by nearest-exact."""
        if tuple(video.shape[-2:]) == size:
            return video, labels
        if self.interpolation == "bilinear" and self.antialias:
            video = F.interpolate(
                video.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", antialias=True
            )
        else:
            as_float = video.contiguous().float().div_(255.0) if video.dtype == torch.uint8 else video.contiguous()
            video = F.interpolate(
                as_float, size=size, mode=self.interpolation, align_corners=False, antialias=self.antialias
            ).clamp_(0.0, 1.0)
        return video, None if labels is None else _nearest(labels, size)


def short_side_shape(height: int, width: int, side: int, rounding: str) -> tuple[int, int]:
    """``(h, w)`` of a ``height x width`` frame whose short side is scaled to ``side``.

    ``floor``: the long side is ``floor(long / short * side)``, computed in that order as
    torchvision and the authors' ``Resize(short_side_scale=True)``; ``round``: ``round(long * side
    / short)``, at least ``side``.
    """
    if rounding == "floor":
        if width < height:
            return math.floor(height / width * side), side
        return side, math.floor(width / height * side)
    scale = side / min(height, width)
    return max(side, round(height * scale)), max(side, round(width * scale))


def _crop(
    video: torch.Tensor, labels: torch.Tensor | None, top: int, left: int, side: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``side x side`` window at ``(top, left)`` of frames ``[T, 3, H, W]`` and labels ``[T, H, W]``."""
    window = (slice(top, top + side), slice(left, left + side))
    return video[..., window[0], window[1]], None if labels is None else labels[..., window[0], window[1]]


def _nearest(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-exact resize of the last two dimensions of ``tensor`` (any dtype: a gather, so ids
    and uint8 frames keep their values and dtype)."""
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    rows = _nearest_indices(tensor.shape[-2], size[0])
    columns = _nearest_indices(tensor.shape[-1], size[1])
    return tensor[..., rows, :][..., columns]


def _nearest_indices(source: int, target: int) -> torch.Tensor:
    """Source index of each of ``target`` output positions: the pixel containing its centre
    (``mode="nearest-exact"``, float32 like torch's), computed as a gather so labels keep their dtype."""
    return ((torch.arange(target, dtype=torch.float32) + 0.5) * (source / target)).floor().long().clamp_(max=source - 1)
