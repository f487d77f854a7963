"""What a prediction writes for each frame: an overlay mp4 and a palette PNG of slot ids.

Masks are drawn at the video's own resolution, over the part of each frame the model sees
(:func:`model_view`: the whole frame, or the centre crop of ``short_side_crop``): the soft masks
are resized to it bilinearly and the argmax taken, as the evaluation protocol does
(:func:`~ocl.metrics.protocol.hard_segmentation`).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from ocl.build import UsageError
from ocl.callbacks.visualisation import colour_slots, slot_palette
from ocl.data.images import write_palette_png
from ocl.data.transforms import VideoTransform
from ocl.metrics.protocol import hard_segmentation

VOID_ID = 255
"""Mask-PNG value of pixels the model does not see (cropped away), DAVIS's "void" value."""
VOID_COLOUR = (224, 224, 192)
"""Palette colour of :data:`VOID_ID`, as in the DAVIS annotations."""
OVERLAY_NAME = "overlay.mp4"
MASKS_FOLDER = "masks"


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and its ``masks/`` for a new prediction, and return ``out_dir``.

    Raises:
        UsageError: ``out_dir`` already holds a prediction (PNGs in ``masks/`` or an overlay), which
            a new one would mix with its own (a shorter video leaves the old frames' PNGs); or it
            cannot be created or written. Nothing is written then.
    """
    out_dir = Path(out_dir).expanduser()
    masks_dir = out_dir / MASKS_FOLDER
    if (out_dir / OVERLAY_NAME).exists() or (masks_dir.is_dir() and any(masks_dir.glob("*.png"))):
        raise UsageError(
            f"output folder {out_dir} already holds a prediction ({OVERLAY_NAME} or {MASKS_FOLDER}/*.png), which a new "
            "one would mix with its own: choose another out= or delete it"
        )
    try:
        masks_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create the output folder {out_dir} ({error.strerror or error}): choose another out="
        ) from None
    if not (os.access(out_dir, os.W_OK) and os.access(masks_dir, os.W_OK)):
        raise UsageError(f"cannot write to the output folder {out_dir} (permission denied): choose another out=")
    return out_dir


def model_view(transform: VideoTransform, height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of a ``height x width`` frame that ``transform`` turns into the model's input.

    ``resize`` and ``none`` use the whole frame; ``short_side_crop`` (centred when evaluating)
    scales the short side to the model's size and crops the long side to it, and ``center_square``
    crops that square before resizing, so both show the centred square whose side is the short side.
    """
    if transform.mode not in ("short_side_crop", "center_square"):
        return slice(0, height), slice(0, width)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return slice(top, top + side), slice(left, left + side)


def mask_palette(num_slots: int) -> list[int]:
    """The 768-entry PNG palette: index ``k < num_slots`` has slot ``k``'s overlay colour
    (:func:`~ocl.callbacks.visualisation.slot_palette`), :data:`VOID_ID` the void colour."""
    if num_slots > VOID_ID:
        raise ValueError(f"palette PNGs hold at most {VOID_ID} slot ids, the model has {num_slots} slots")
    colours = np.zeros((256, 3), np.uint8)
    colours[:num_slots] = (slot_palette(num_slots) * 255).round().to(torch.uint8).numpy()
    colours[VOID_ID] = VOID_COLOUR
    return colours.reshape(-1).tolist()


class OverlayVideoWriter:
    """H.264 mp4 (yuv420p, plays everywhere) of uint8 RGB frames at a fixed frame rate.

    H.264 4:2:0 needs even sizes: an odd height or width gets its last row or column repeated once.

    Args:
        path: the mp4 to write.
        height, width: frame size.
        rate: frames per second (e.g. ``Fraction(30000, 1001)``).
        crf: x264 quality (0 lossless, 18 visually lossless, 23 default).
    """

    def __init__(self, path: Path, height: int, width: int, rate: Fraction, crf: int = 18) -> None:
        self.padding = ((0, height % 2), (0, width % 2), (0, 0))
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.height, self.stream.width = height + height % 2, width + width % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}  # x264's default "medium": 4x slower

    def write(self, frame: np.ndarray) -> None:
        """Append uint8 ``[H, W, 3]``."""
        padded = np.pad(frame, self.padding, mode="edge")
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self.container.mux(self.stream.encode())
        self.container.close()


class PredictionWriter:
    """Writes ``<out_dir>/overlay.mp4`` (each frame with its slots' colours) and
    ``<out_dir>/masks/00000.png, ...`` (palette PNGs whose pixel values are slot ids ``0..K-1``,
    :data:`VOID_ID` where the model does not see the frame), frame by frame.

    Args:
        out_dir: the output folder (created; :func:`prepare_out_dir` checks it first).
        height, width: the video's frame size.
        rate: the video's frame rate.
        view: the region of a frame the model sees (:func:`model_view`).
        num_slots: the model's ``K``.
        alpha: weight of the slot colour in the overlay.
    """

    def __init__(
        self,
        out_dir: Path,
        height: int,
        width: int,
        rate: Fraction,
        view: tuple[slice, slice],
        num_slots: int,
        alpha: float = 0.5,
    ) -> None:
        self.masks_dir = Path(out_dir) / MASKS_FOLDER
        self.masks_dir.mkdir(parents=True, exist_ok=True)
        self.overlay_path = Path(out_dir) / OVERLAY_NAME
        self.size = (height, width)
        self.view = view
        self.num_slots = num_slots
        self.alpha = alpha
        self.palette = mask_palette(num_slots)
        self.frames_written = 0
        self.video = OverlayVideoWriter(self.overlay_path, height, width, rate)

    def write(self, frames: np.ndarray, soft_masks: torch.Tensor) -> None:
        """Append uint8 ``frames [T, H, W, 3]`` with the model's ``soft_masks [T, K, h, w]`` of them."""
        rows, columns = self.view
        view_size = (rows.stop - rows.start, columns.stop - columns.start)
        slot_ids = hard_segmentation(soft_masks.unsqueeze(0), view_size)[0].cpu()  # [T, h_view, w_view]
        for frame, ids in zip(frames, slot_ids, strict=True):
            page = np.full(self.size, VOID_ID, np.uint8)
            page[rows, columns] = ids.numpy()
            write_palette_png(self.masks_dir / f"{self.frames_written:05d}.png", page, self.palette)
            pixels = torch.from_numpy(frame).permute(2, 0, 1).float().div_(255.0)  # [3, H, W]
            pixels[:, rows, columns] = colour_slots(pixels[:, rows, columns], ids, self.num_slots, self.alpha)
            self.video.write((pixels.clamp_(0, 1) * 255).round_().to(torch.uint8).permute(1, 2, 0).numpy())
            self.frames_written += 1

    def close(self) -> None:
        """Finish the mp4."""
        self.video.close()
