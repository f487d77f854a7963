"""YouTube-VOS (2018 or 2019) training frames, read from the official download as it is, without labels.

SMTC trains on these frames (self-supervised; its segmentation numbers come from DAVIS-2017).
``train.zip`` of the VOS challenge (https://youtube-vos.org/dataset/vos/, downloaded from the
CodaLab competition linked there) unzips to a folder ``train`` (``data.root``) with::

    JPEGImages/<video id>/<frame>.jpg     the frames read here
    Annotations/<video id>/<frame>.png    palette PNGs: not read (no labels are needed)
    meta.json                             object categories per video: not read

Frames of a video are its ``*.jpg`` files in name order; a video's id is its folder name, and
videos are ordered by id. Frame names are never parsed (``train_all_frames.zip`` has the same
``JPEGImages/<video id>/`` layout, with every frame, and its numbering may not start at 0).

What was checked, and where (public pages and code read while writing this module):

- youtube-vos.org/dataset/vos: the 2018 training set has 3471 videos annotated at 6 fps; the
  2019 version adds videos and annotations. The Refer-YouTube-VOS description: masks every 5th
  frame of the 30 fps videos, which last about 3 to 6 seconds (so about 18 to 36 stored frames).
- SMTC (github.com/shvdiwnkozbw/SMTC): ``src/config.py`` reads ``<basepath>/JPEGImages``;
  ``src/data.py`` lists each video's ``*.jpg`` sorted and draws ``num_frames`` frames ``gap``
  apart in that list; ``start_twostage.sh`` sets ``--num_frames 4 --gap 4``; ``src/train.py``
  resizes frames to 256 x 256 (``cv2.resize``, no crop or flip; colour jitter, greyscale and blur
  come later, on the GPU, in the training step). Its README shows ``YTVOS/train/JPEGImages`` beside
  ``train/Annotations``, which points to ``train.zip`` (inferred: in other repositories' layouts
  the all-frames archives hold ``JPEGImages`` only), so its gap of 4 counts every-5th frames.
- Other repositories' setup notes: ``train/JPEGImages``, ``train/Annotations``, ``train/meta.json``
  and ``train_all_frames/JPEGImages``; one notes that some all-frames videos are not numbered from 0.

Assumed, not checked on the files: frame names are zero-padded numbers (``00000.jpg``,
``00005.jpg``, ...), so that name order is time order, as in the YouTube-VIS download of the same videos.

The gap: ``frame_stride`` counts stored frames, as SMTC's ``gap`` does. With ``train.zip`` (every
5th frame) a gap of 4 is 20 frames of the original video (0.67 s); with ``train_all_frames.zip``
the same spacing in time needs ``frame_stride=20``. A clip starts at any frame from which it fits
(SMTC's draw never lets a clip end in a video's last ``gap`` frames, a difference we do not copy).

Short videos: training clips span ``(clip length - 1) * frame_stride + 1`` stored frames (13 for
SMTC's recipe). Shorter training videos are **left out** of the training split, and their number
is logged: padding them (repeating the last frame) or shrinking the gap (what SMTC does) would
train on clips whose motion differs from the recipe's. A video folder with no JPEG at all is a
broken extraction and raises :class:`~ocl.data.errors.DataError`.

Splits: no labels are public for the official valid and test sets, and this module reads no
labels at all. ``val`` is the *last* ``num_val_videos`` videos (by id) of the folder, ``train``
the others (the same hold-out as :mod:`ocl.data.ytvis`); validation items have no ``masks``, so
validation reports the method's losses and writes mask visualisations, but no segmentation
metrics. There is no ``test`` split: asking for it raises DataError.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocl.data.clips import VideoSource, hold_out_last
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.images import list_stems, read_rgb

log = logging.getLogger(__name__)

IMAGE_DIR = "JPEGImages"
"""Frame folder of the download, relative to ``data.root``."""
DOWNLOAD_HELP = (
    "Download train.zip of YouTube-VOS 2019 (or 2018) from the CodaLab competition linked on "
    "https://youtube-vos.org/dataset/vos/ (registration needed), unzip it and point data.root at its train "
    "folder, the one that holds JPEGImages/ (or set OCL_DATA_ROOT so that <OCL_DATA_ROOT>/ytvos/train is it)."
)
NO_TEST_SPLIT = (
    "YouTube-VOS frames have no test split: the official valid and test labels are withheld and this data "
    "module reads no labels. Use eval.split=val (losses and mask visualisations of the held-out videos) or "
    "score segmentation on DAVIS-2017 with data=davis2017"
)


@dataclass(frozen=True)
class FrameFolder:
    """One video of the download.

    Attributes:
        name: its folder name (the video id, e.g. ``"003234408d"``), used as the batch's ``video_id``.
        frames: its JPEG names without ``.jpg``, in name (= time) order.
    """

    name: str
    frames: tuple[str, ...]


def list_frame_folders(image_dir: Path) -> list[FrameFolder]:
    """The videos of ``JPEGImages/``, sorted by id; files beside the folders are ignored.

    Raises DataError if ``image_dir`` has no video folder or a folder has no JPEG.
    """
    names = sorted(entry.name for entry in image_dir.iterdir() if entry.is_dir())
    if not names:
        raise DataError(f"{image_dir} has no video folders; the download is incomplete. {DOWNLOAD_HELP}")
    videos = []
    for name in names:
        frames = list_stems(image_dir / name, ".jpg")
        if not frames:
            raise DataError(f"{image_dir / name} has no JPEG frames; re-extract it from train.zip")
        videos.append(FrameFolder(name, tuple(frames)))
    return videos


class YouTubeVOSSource(VideoSource):
    """Frames of YouTube-VOS videos, no labels (``read`` returns ``masks = None``).

    Args:
        image_dir: ``JPEGImages`` of the download.
        videos: the videos of the split (:func:`list_frame_folders`, :func:`~ocl.data.clips.hold_out_last`).

    Frames are decoded, and their sizes compared, when a clip is read.
    """

    def __init__(self, image_dir: Path, videos: Sequence[FrameFolder]) -> None:
        self.image_dir = Path(image_dir)
        self.videos = list(videos)

    def __len__(self) -> int:
        return len(self.videos)

    def video_id(self, index: int) -> str:
        return self.videos[index].name

    def num_frames(self, index: int) -> int:
        return len(self.videos[index].frames)

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, None]:
        """uint8 frames ``[T, H, W, 3]`` of video ``index`` and no labels; DataError naming a corrupt JPEG
        or a frame whose size differs from the clip's first frame."""
        video = self.videos[index]
        paths = [self.image_dir / video.name / f"{video.frames[int(t)]}.jpg" for t in frame_indices]
        frames = [read_rgb(path) for path in paths]
        for path, frame in zip(paths[1:], frames[1:]):
            if frame.shape != frames[0].shape:
                raise DataError(
                    f"{path} is {frame.shape[0]}x{frame.shape[1]} (HxW) but {paths[0]} of the same video is "
                    f"{frames[0].shape[0]}x{frames[0].shape[1]}; re-extract the video from the download"
                )
        return np.stack(frames), None


class YouTubeVOSDataModule(StoredVideoDataModule):
    """YouTube-VOS training frames without labels (see the module docs for layout, gap and splits).

    Args:
        root: the ``train`` folder of the download (holding ``JPEGImages/``).
        num_val_videos: the last videos (by id) that form ``val``.
        **kwargs: clip lengths, transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`; ``frame_stride`` counts stored frames.
    """

    def __init__(self, root: str, num_val_videos: int = 50, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        if num_val_videos < 1:
            raise ValueError(f"num_val_videos must be >= 1, got {num_val_videos}")
        self.num_val_videos = num_val_videos
        self._videos: list[FrameFolder] | None = None

    @property
    def train_span(self) -> int:
        """Stored frames a training clip spans: ``(train_clip_length - 1) * frame_stride + 1``."""
        return (self.train_clip_length - 1) * self.frame_stride + 1

    def splits_for(self, stage: str | None) -> tuple[str, ...]:
        """As the base class, without ``test`` unless the stage is ``test`` (which then fails clearly)."""
        return ("test",) if stage == "test" else tuple(s for s in super().splits_for(stage) if s != "test")

    def open_source(self, split: str) -> YouTubeVOSSource:
        """The videos of ``split``; ``train`` without the videos shorter than :attr:`train_span` (logged)."""
        if split == "test":
            raise DataError(NO_TEST_SPLIT)
        videos = hold_out_last(self._list_videos(), split, self.num_val_videos, "the download")
        if split == "train":
            videos = self._long_enough(videos)
        return YouTubeVOSSource(self.root / IMAGE_DIR, videos)

    def _list_videos(self) -> list[FrameFolder]:
        """Every video of the download, listed once for both splits."""
        if self._videos is None:
            image_dir = self.root / IMAGE_DIR
            if not self.root.is_dir():
                raise DataError(f"YouTube-VOS not found: {self.root} does not exist. {DOWNLOAD_HELP}")
            if not image_dir.is_dir():
                raise DataError(
                    f"YouTube-VOS frames not found: {image_dir} does not exist.{_root_hint(self.root)} {DOWNLOAD_HELP}"
                )
            self._videos = list_frame_folders(image_dir)
        return self._videos

    def _long_enough(self, videos: list[FrameFolder]) -> list[FrameFolder]:
        """``videos`` with at least :attr:`train_span` frames; logs how many were left out, fails if none is left."""
        kept = [video for video in videos if len(video.frames) >= self.train_span]
        clip = f"a {self.train_clip_length}-frame clip with frame_stride {self.frame_stride}"
        if not kept:
            raise DataError(
                f"no training video in {self.root / IMAGE_DIR} has the {self.train_span} frames that {clip} spans "
                f"(the longest has {max(len(video.frames) for video in videos)}); lower data.frame_stride or "
                "data.train_clip_length"
            )
        if len(kept) < len(videos):
            short = [video.name for video in videos if len(video.frames) < self.train_span]
            log.warning(
                "YouTube-VOS: left %d of %d training videos out, shorter than the %d frames that %s spans (e.g. %s)",
                len(short),
                len(videos),
                self.train_span,
                clip,
                short[0],
            )
        return kept


def _root_hint(root: Path) -> str:
    """`` Did you mean ...?`` naming the sub-folders of ``root`` that hold ``JPEGImages`` (or ``""``)."""
    candidates = sorted(str(path.parent) for path in root.glob(f"*/{IMAGE_DIR}") if path.is_dir())
    if root.name == IMAGE_DIR:
        candidates.insert(0, str(root.parent))
    return f" Did you mean data.root={' or data.root='.join(candidates)}?" if candidates else ""
