"""Clips of stored videos: the dataset every real-data module is built from.

A dataset's reader implements :class:`VideoSource` (how many videos, their lengths, and
reading chosen frames); :class:`ClipDataset` turns it into items of the batch contract
(:mod:`ocl.contracts.batch`). Evaluation reads whole videos (or the first ``clip_length`` frames),
training draws random clips through :meth:`ClipDataset.sample`, whose randomness comes from
the generator the data module passes with each index (so a resumed run draws the same clips
and crops as an uninterrupted one, whatever the number of workers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ocl.data.errors import DataError
from ocl.data.transforms import VideoTransform

Video = TypeVar("Video")
DecodeSize = Callable[[int, int], tuple[int, int] | None]
"""``(height, width)`` of a stored frame -> the smallest size it may be decoded at, or None (whole);
:meth:`~ocl.data.transforms.VideoTransform.decode_size`."""


@dataclass(frozen=True)
class ReadClip:
    """Frames and labels of a clip as :meth:`VideoSource.read_clip` read them.

    Attributes:
        frames: uint8 ``[T, h, w, 3]``; smaller than stored when decoded at a reduced scale.
        masks: int ids ``[T, H, W]`` at the stored size, or None (no labels, or not asked for).
        size: ``(H, W)``, the stored frame size (what the transform's geometry follows).
    """

    frames: np.ndarray
    masks: np.ndarray | None
    size: tuple[int, int]


def hold_out_last(videos: Sequence[Video], split: str, num_val_videos: int, where: str) -> list[Video]:
    """``val``: the last ``num_val_videos`` of ``videos``, ``train``: the others (the YouTube-VIS / -VOS
    hold-out of VideoSAUR and SlotContrast). ``where`` names the list in errors (e.g. "the train JSON")."""
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; known: 'train', 'val'")
    if not 0 < num_val_videos < len(videos):
        raise DataError(
            f"num_val_videos={num_val_videos} must be between 1 and {len(videos) - 1}: {where} has "
            f"{len(videos)} videos and both splits need at least one"
        )
    return list(videos[:-num_val_videos] if split == "train" else videos[-num_val_videos:])


class VideoSource(ABC):
    """Random access to the videos of one split of a dataset, as stored on disk.

    Implementations validate what they can cheaply at construction (paths, indices) and
    raise ``ocl.data.errors.DataError`` naming the file for anything wrong found when reading.
    """

    @abstractmethod
    def __len__(self) -> int:
        """Number of videos."""

    @abstractmethod
    def video_id(self, index: int) -> str:
        """The dataset's own name of video ``index``."""

    @abstractmethod
    def num_frames(self, index: int) -> int:
        """Frames of video ``index``."""

    @abstractmethod
    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 frames ``[T, H, W, 3]`` and int instance ids ``[T, H, W]`` (0 background,
        -1 ignore; ``None`` without labels) of the given frames of video ``index``."""

    def read_clip(
        self, index: int, frame_indices: np.ndarray, labels: bool = True, decode_size: DecodeSize | None = None
    ) -> ReadClip:
        """:meth:`read` for a training or evaluation item: ``labels=False`` skips the labels, and a
        source that can decode frames at a reduced scale (JPEG) may do so down to ``decode_size``.
        This default reads everything as :meth:`read` does and drops the labels if not asked for."""
        frames, masks = self.read(index, frame_indices)
        return ReadClip(frames, masks if labels else None, frames.shape[1:3])


class ClipDataset(Dataset):
    """Items ``{"video", "masks"?, "meta"}`` (see :mod:`ocl.contracts.batch`) from a :class:`VideoSource`.

    Args:
        source: the videos.
        clip_length: frames per item; ``None`` = whole videos (the evaluation protocol).
        transform: spatial transform (resize/crop) applied to frames and masks.
        frame_stride: step between the frames of a clip (1 = consecutive).
        random_start: training clips start at a random frame; False: always at frame 0 (e.g.
            SLASH's "first frame of each video" image datasets).
        chunked: items are all consecutive ``clip_length``-frame chunks of every video (the last
            one may be shorter), each its own sample with id ``<video id>@<first frame>``;
            for chunked evaluation. Training draws (:meth:`sample` with an ``rng``) are unaffected.
        aligned_start: random starts are multiples of the clip span (``(clip_length - 1) *
            frame_stride + 1``): each video is cut into ``num_frames // span`` consecutive,
            non-overlapping chunks and one is drawn, as the VideoSAUR / SlotContrast / SlotCurri
            training pipelines do (``sample_one_chunk_per_video``; frames after the last whole
            chunk are never drawn). False: any start that fits.
        drop_partial_chunks: with ``chunked``, leave out each video's last chunk when it is
            shorter than ``clip_length`` (videos shorter than a chunk then yield no item), as the
            authors' chunked evaluation does.
        labels: items carry the source's ``masks``; False: the source skips reading them (a
            training step that reads no labels).
    """

    def __init__(
        self,
        source: VideoSource,
        clip_length: int | None = None,
        transform: VideoTransform | None = None,
        frame_stride: int = 1,
        chunked: bool = False,
        random_start: bool = True,
        aligned_start: bool = False,
        drop_partial_chunks: bool = False,
        labels: bool = True,
    ) -> None:
        if clip_length is not None and clip_length < 1:
            raise ValueError(f"clip_length must be >= 1 or None, got {clip_length}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.source = source
        self.clip_length = clip_length
        self.transform = transform or VideoTransform(mode="none")
        self.frame_stride = frame_stride
        self.random_start = random_start
        self.aligned_start = aligned_start
        self.labels = labels
        self.chunks: list[tuple[int, int]] | None = None
        if drop_partial_chunks and not chunked:
            raise ValueError("drop_partial_chunks needs chunked=True")
        if chunked:
            if clip_length is None:
                raise ValueError("chunked needs a clip_length (the chunk size)")
            self.chunks = [
                (video, start)
                for video in range(len(source))
                for start in range(0, source.num_frames(video), clip_length)
                if not drop_partial_chunks or start + clip_length <= source.num_frames(video)
            ]

    def __len__(self) -> int:
        return len(self.source) if self.chunks is None else len(self.chunks)

    def item_videos(self) -> list[int]:
        """The video (source index) of each item, in item order."""
        return list(range(len(self.source))) if self.chunks is None else [video for video, _ in self.chunks]

    def clip_frames(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """Frame indices of the clip: a random start with an ``rng`` (and ``random_start``; a
        multiple of the span with ``aligned_start``), the first frames otherwise.

        Videos shorter than a clip repeat their last frame (the indices say so).
        """
        length = self.source.num_frames(index)
        if self.clip_length is None:
            return np.arange(length)
        span = (self.clip_length - 1) * self.frame_stride + 1
        if rng is None or not self.random_start:
            start = 0
        elif self.aligned_start:
            start = span * int(rng.integers(max(1, length // span)))
        else:
            start = int(rng.integers(max(1, length - span + 1)))
        return np.minimum(start + np.arange(self.clip_length) * self.frame_stride, length - 1)

    def sample(self, index: int, rng: np.random.Generator | None, keep_uint8: bool = False) -> dict[str, Any]:
        """Video ``index`` as a clip: random start, crop and flip drawn from ``rng`` (None: deterministic).

        ``keep_uint8``: ``video`` stays uint8 (``x 255``) where the transform leaves it so (see
        :meth:`~ocl.data.transforms.VideoTransform.apply`), for loaders whose batches are made
        float on the device (:meth:`~ocl.data.datamodule.VideoDataModule.on_after_batch_transfer`).
        """
        return self._item(index, self.clip_frames(index, rng), rng, keep_uint8)

    def _item(
        self, index: int, frame_indices: np.ndarray, rng: np.random.Generator | None, keep_uint8: bool = False
    ) -> dict[str, Any]:
        """The given frames of video ``index``, transformed (random crop/flip from ``rng``)."""
        clip = self.source.read_clip(index, frame_indices, self.labels, self.transform.decode_size)
        placement = self.transform.draw(*clip.size, rng)
        video, labels = self.transform.apply(clip.frames, clip.masks, placement, clip.size, keep_uint8)
        item: dict[str, Any] = {
            "video": video,
            "meta": {"video_id": self.source.video_id(index), "frame_indices": torch.from_numpy(frame_indices)},
        }
        if labels is not None:
            item["masks"] = labels
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The deterministic item (evaluation): first clip (or chunk ``index``), centre crop."""
        if self.chunks is None:
            return self.sample(index, None)
        video, start = self.chunks[index]
        frame_indices = np.arange(start, min(start + self.clip_length, self.source.num_frames(video)))
        item = self._item(video, frame_indices, None)
        item["meta"]["video_id"] = f"{item['meta']['video_id']}@{start}"
        return item


class SeededDraws(Dataset):
    """Wraps a dataset with a ``sample(index, rng)`` method for a sampler that yields
    ``(index, position)``: item = ``sample(index, default_rng([seed, position]))``.

    ``keep_uint8`` (a :class:`ClipDataset` only): items keep uint8 frames where the transform
    leaves them so (:meth:`ClipDataset.sample`).
    """

    def __init__(self, dataset: ClipDataset, seed: int, keep_uint8: bool = False) -> None:
        self.dataset = dataset
        self.seed = seed
        self.keep_uint8 = keep_uint8

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, position = key
        rng = np.random.default_rng([self.seed, position])
        if self.keep_uint8:
            return self.dataset.sample(index, rng, keep_uint8=True)
        return self.dataset.sample(index, rng)
