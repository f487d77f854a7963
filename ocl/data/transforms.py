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

**Speed, same values.** Nearest-exact resizes (``stored_short_side``, masks) are numpy gathers on
the frames as decoded (``[T, H, W, 3]``); frames become float32 by a numpy division (the same
IEEE quotient as torch's ``div_(255.0)``); non-antialiased bilinear runs on channels-last float32
(the same values as on contiguous frames, 10x faster at 720p); the clamp to [0, 1] runs after
the crop. ``tests/test_fast_loading.py`` checks every path bit for bit against the plain torch
calls above.

**Reduced decoding** (``reduced_decoding``, off by default and in the recipes): a JPEG source may
decode a frame at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's ``Image.draft``) as long as
the decoded frame stays at least :data:`REDUCED_DECODING_MARGIN` times the first resize's output
(:meth:`VideoTransform.decode_size`); the transform then resizes the smaller frame to the same output. This changes pixel values slightly, within
:data:`REDUCED_DECODING_TOLERANCE` (tested on the readers' fixtures; measured on 720p stand-ins in
docs/benchmarks.md, "Loaders").
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
REDUCED_DECODING_MARGIN = 1.5
"""A frame is decoded at a reduced scale only if it stays this many times the first resize's output."""
REDUCED_DECODING_TOLERANCE = {"mean": 2.5 / 255, "max": 32 / 255}
"""Largest mean and largest absolute difference, per clip, between frames resized from a reduced
decode and from the full decode (values in [0, 1])."""


@dataclass(frozen=True)
class Placement:
    """Where one clip's crop sits and whether it is flipped (:meth:`VideoTransform.draw`).

    Attributes:
        top, left: offset of the ``short_side_crop`` window in the frame after its short side is
            scaled (other modes ignore it).
        flip: mirror the clip horizontally.
    """

    top: int = 0
    left: int = 0
    flip: bool = False


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
        reduced_decoding: let JPEG sources decode frames at a reduced scale (see the module docs;
            changes values within :data:`REDUCED_DECODING_TOLERANCE`); only for an antialiased
            ``resize`` or ``short_side_crop`` without ``stored_short_side``.
    """

    size: int = 224
    mode: str = "short_side_crop"
    crop: str = "center"
    horizontal_flip: bool = False
    interpolation: str = "bilinear"
    antialias: bool = True
    long_side_rounding: str = "round"
    stored_short_side: int | None = None
    reduced_decoding: bool = False

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
        if self.reduced_decoding and (
            self.mode not in ("resize", "short_side_crop") or not self.antialias or self.stored_short_side is not None
        ):
            raise ValueError(
                "reduced_decoding needs an antialiased resize of the frames as read: mode resize or "
                "short_side_crop, antialias=true, stored_short_side=null"
            )

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The smallest ``(h, w)`` a source may decode a ``height x width`` frame at (JPEG draft
        mode keeps at least this size), or None: decode it whole (``reduced_decoding`` off)."""
        if not self.reduced_decoding:
            return None
        target = (self.size, self.size) if self.mode == "resize" else self._scaled(height, width)
        return math.ceil(target[0] * REDUCED_DECODING_MARGIN), math.ceil(target[1] * REDUCED_DECODING_MARGIN)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the output for a frame of ``height x width`` as read."""
        if self.mode != "none":
            return (self.size, self.size)
        if self.stored_short_side is None:
            return (height, width)
        return short_side_shape(height, width, self.stored_short_side, "floor")

    def __call__(
        self,
        frames: np.ndarray,
        masks: np.ndarray | None,
        rng: np.random.Generator | None = None,
        source_size: tuple[int, int] | None = None,
        keep_uint8: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 ``frames [T, H, W, 3]`` and int ``masks [T, H', W']`` (or None) ->
        float32 ``[T, 3, h, w]`` in [0, 1] and int64 ``[T, h, w]``.

        ``rng`` is given for training draws (random crop/flip), None for evaluation;
        ``source_size`` and ``keep_uint8``: see :meth:`apply`.
        """
        height, width = source_size or frames.shape[1:3]
        return self.apply(frames, masks, self.draw(height, width, rng), source_size, keep_uint8)

    def draw(self, height: int, width: int, rng: np.random.Generator | None = None) -> Placement:
        """The crop offset and flip of a clip of ``height x width`` frames (as read): drawn from
        ``rng`` (the offset first, then the flip) where the transform is random, else fixed."""
        top, left = 0, 0
        if self.mode == "short_side_crop":
            spare_h, spare_w = self.spare(height, width)
            if self.crop == "random" and rng is not None:
                top, left = int(rng.integers(spare_h + 1)), int(rng.integers(spare_w + 1))
            else:
                top, left = spare_h // 2, spare_w // 2
        flip = self.horizontal_flip and rng is not None and bool(rng.random() < 0.5)
        return Placement(top, left, flip)

    def spare(self, height: int, width: int) -> tuple[int, int]:
        """``short_side_crop``: the rows and columns the crop leaves out of a ``height x width``
        frame (as read) after scaling its short side; ``(0, 0)`` for the other modes."""
        if self.mode != "short_side_crop":
            return (0, 0)
        resized = self._scaled(height, width)
        return resized[0] - self.size, resized[1] - self.size

    def _scaled(self, height: int, width: int) -> tuple[int, int]:
        """``short_side_crop``: the frame size before the crop, for frames of ``height x width`` as read."""
        if self.stored_short_side is not None:
            height, width = short_side_shape(height, width, self.stored_short_side, "floor")
        return short_side_shape(height, width, self.size, self.long_side_rounding)

    def apply(
        self,
        frames: np.ndarray,
        masks: np.ndarray | None,
        placement: Placement,
        source_size: tuple[int, int] | None = None,
        keep_uint8: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`__call__` with the crop offset and flip of ``placement`` (see :meth:`draw`).

        Args:
            frames: uint8 ``[T, H, W, 3]``, as read or decoded at a reduced scale (:meth:`decode_size`).
            masks: int ``[T, H', W']`` at the size as read, or None.
            placement: the crop offset and flip.
            source_size: ``(H, W)`` of the frames as read, when ``frames`` were decoded smaller;
                None: ``frames``' own size. The geometry (resize, crop) follows it.
            keep_uint8: return uint8 frames (``[T, 3, h, w]``, values x 255) where the resize
                kept them uint8 (antialiased bilinear, or no resize); float32 otherwise.

        Returns:
            frames ``[T, 3, h, w]`` (float32 in [0, 1], or uint8) and int64 labels ``[T, h, w]`` (or None).
        """
        height, width = source_size or frames.shape[1:3]
        if frames.shape[1:3] != (height, width) and self.decode_size(height, width) is None:
            raise ValueError(f"frames of {frames.shape[1:3]} need reduced_decoding (read at {(height, width)})")
        video: np.ndarray | torch.Tensor = frames
        labels = masks
        if self.stored_short_side is not None:
            height, width = short_side_shape(height, width, self.stored_short_side, "floor")
            video, labels = _nearest(frames, (height, width)), _nearest(masks, (height, width))
        if self.mode == "resize":
            video, labels = self._resize(video, labels, (self.size, self.size))
        elif self.mode == "short_side_crop":
            video, labels = self._resize(
                video, labels, short_side_shape(height, width, self.size, self.long_side_rounding)
            )
            video, labels = _crop(video, labels, placement.top, placement.left, self.size)
        elif self.mode == "center_square":
            side = min(height, width)
            # Python's round: halves to even, as the authors' int(round((h - th) / 2.0)).
            video, labels = _crop(video, labels, round((height - side) / 2), round((width - side) / 2), side)
            video, labels = self._resize(video, labels, (self.size, self.size))
        video = _as_tensor(video)
        if placement.flip:
            video = video.flip(-1)
            labels = None if labels is None else labels[..., ::-1]
        video = video.contiguous()
        if video.dtype != torch.uint8:
            video.clamp_(0.0, 1.0)  # after the crop: the same values, fewer of them
        elif not keep_uint8:
            video = to_unit_float(video)
        return video, None if labels is None else torch.from_numpy(labels.astype(np.int64))

    def _resize(
        self, video: np.ndarray, labels: np.ndarray | None, size: tuple[int, int]
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray | None]:
        """Frames (uint8 ``[T, H, W, 3]``) by this transform's interpolation to a ``[T, 3, h, w]``
        tensor (uint8 for antialiased bilinear, else float32, not yet clamped; the frames as they
        are if already of ``size``); labels ``[T, H, W]`` by nearest-exact."""
        labels = _nearest(labels, size)
        if tuple(video.shape[1:3]) == size:
            return video, labels
        if self.interpolation == "bilinear" and self.antialias:
            channels_last = _as_tensor(video).contiguous(memory_format=torch.channels_last)
            return F.interpolate(channels_last, size=size, mode="bilinear", antialias=True), labels
        as_float = _as_tensor(np.divide(video, np.float32(255.0), dtype=np.float32))  # channels-last memory
        if self.interpolation != "bilinear" or self.antialias:
            as_float = as_float.contiguous()  # bicubic is faster on contiguous frames (same values)
        resized = F.interpolate(
            as_float, size=size, mode=self.interpolation, align_corners=False, antialias=self.antialias
        )
        return resized, labels


def to_unit_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 frames (any shape, on any device) -> float32 in [0, 1]: ``x / 255`` (IEEE division, so
    the same values on every device and as the transform's own conversion)."""
    return video.float().div_(255.0)


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


def _as_tensor(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Frames ``[T, H, W, 3]`` (numpy) as a ``[T, 3, H, W]`` tensor view (channels-last memory);
    tensors are returned as they are."""
    return (
        video if isinstance(video, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)
    )


def _crop(
    video: np.ndarray | torch.Tensor, labels: np.ndarray | None, top: int, left: int, side: int
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | None]:
    """The ``side x side`` window at ``(top, left)`` of frames (numpy ``[T, H, W, 3]`` or a tensor
    ``[T, 3, H, W]``) and labels ``[T, H, W]``."""
    rows, columns = slice(top, top + side), slice(left, left + side)
    video = video[:, rows, columns] if isinstance(video, np.ndarray) else video[..., rows, columns]
    return video, None if labels is None else labels[:, rows, columns]


def _nearest(array: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """Nearest-exact resize of axes 1 and 2 (rows, columns) of ``array`` (frames ``[T, H, W, 3]``
    or labels ``[T, H, W]``; any dtype: a gather, so ids and uint8 frames keep their values)."""
    if array is None or tuple(array.shape[1:3]) == size:
        return array
    rows = _nearest_indices(array.shape[1], size[0])
    columns = _nearest_indices(array.shape[2], size[1])
    return np.take(np.take(array, rows, axis=1), columns, axis=2)


def _nearest_indices(source: int, target: int) -> np.ndarray:
    """Source index of each of ``target`` output positions: the pixel containing its centre
    (``mode="nearest-exact"``, float32 like torch's)."""
    centres = (torch.arange(target, dtype=torch.float32) + 0.5) * (source / target)
    return centres.floor().long().clamp_(max=source - 1).numpy()
