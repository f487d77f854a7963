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
the same spacing in time needs ``frame_stride=20``.

Training clips (``clip_draw``):

- ``smtc``, SMTC's draw (``src/data.py``): a centre frame ``c`` uniform in ``[lo, n - lo - 1]``,
  ``lo = (gap * L) // 2`` for a video of ``n`` frames and clips of ``L``, frames
  ``c + gap * (i - L // 2)``, ``i < L``; so for ``L = 4`` a clip never ends in a video's last
  ``gap`` frames. A video too short for that (``lo >= n - lo - 1``: no centre above ``lo``) is
  drawn with ``gap - 1``, once.
- ``uniform`` (ocl's): a clip starts at any frame from which it fits, ``gap`` never changes, so
  every clip has the recipe's motion.

Videos too short for their draw (with ``smtc`` and the recipe: under 13 frames, which SMTC's code
cannot draw from at all; with ``uniform``: under ``(L - 1) * gap + 1`` frames) are **left out** of
the training split, and their number is logged. Videos are drawn without replacement within an
epoch (SMTC's ``random.choice`` draws with replacement). A video folder with no JPEG at all is a
broken extraction and raises :class:`~ocl.data.errors.DataError`.

Splits: no labels are public for the official valid and test sets, and this module reads no
labels at all. ``val`` is the *last* ``num_val_videos`` videos (by id) of the folder; ``train``
is every video (``val_held_out=False``: SMTC trains on all of them) or the others (the hold-out of
:mod:`ocl.data.ytvis`). Validation items have no ``masks``, so validation reports the method's
losses and writes mask visualisations, but no segmentation metrics (SMTC's come from DAVIS-2017).
There is no ``test`` split: asking for it raises DataError.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocl.data.clips import ClipDataset, DecodeSize, ReadClip, VideoSource, hold_out_last
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.images import list_stems, read_video_frames

log = logging.getLogger(__name__)

IMAGE_DIR = "JPEGImages"
"""Frame folder of the download, relative to ``data.root``."""
DOWNLOAD_HELP = (
    "Download train.zip of YouTube-VOS 2019 (or 2018) from the CodaLab competition linked on "
    "https://youtube-vos.org/dataset/vos/ (registration needed), unzip it and point data.root at its train "
    "folder, the one that holds JPEGImages/ (or set OCL_DATA_ROOT so that <OCL_DATA_ROOT>/ytvos/train is it)."
)
CLIP_DRAWS = ("smtc", "uniform")
"""How training clips are drawn (see the module docs)."""
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


def smtc_clip_gap(num_frames: int, clip_length: int, gap: int) -> int:
    """The gap of SMTC's draw for a video of ``num_frames``: ``gap``, or ``gap - 1`` if the video
    is too short for it (its ``src/data.py``)."""
    reach = gap * clip_length // 2
    return gap - 1 if reach >= num_frames - reach - 1 else gap


def smtc_clip_fits(num_frames: int, clip_length: int, gap: int) -> bool:
    """Whether SMTC's draw has a centre frame for a video of ``num_frames``."""
    gap = smtc_clip_gap(num_frames, clip_length, gap)
    return gap >= 1 and num_frames - 2 * (gap * clip_length // 2) >= 1


class SMTCClips(ClipDataset):
    """:class:`~ocl.data.clips.ClipDataset` whose training clips are drawn as SMTC's code draws
    them (see the module docs); evaluation items are unchanged."""

    def clip_frames(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None or self.clip_length is None:
            return super().clip_frames(index, rng)
        length = self.source.num_frames(index)
        gap = smtc_clip_gap(length, self.clip_length, self.frame_stride)
        reach = gap * self.clip_length // 2
        centre = int(rng.integers(reach, length - reach))  # SMTC's randint(reach, length - reach - 1)
        return centre + gap * (np.arange(self.clip_length) - self.clip_length // 2)


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
        return self.read_clip(index, frame_indices).frames, None

    def read_clip(
        self, index: int, frame_indices: np.ndarray, labels: bool = True, decode_size: DecodeSize | None = None
    ) -> ReadClip:
        """As :meth:`read`, with frames decoded at a reduced scale down to ``decode_size`` (no labels either way)."""
        video = self.videos[index]
        paths = [self.image_dir / video.name / f"{video.frames[int(t)]}.jpg" for t in frame_indices]
        frames, size = read_video_frames(paths, decode_size)
        return ReadClip(frames, None, size)


class YouTubeVOSDataModule(StoredVideoDataModule):
    """YouTube-VOS training frames without labels (see the module docs for layout, gap and splits).

    Args:
        root: the ``train`` folder of the download (holding ``JPEGImages/``).
        num_val_videos: the last videos (by id) that form ``val``.
        val_held_out: leave the ``val`` videos out of ``train`` (False: train on every video).
        clip_draw: ``smtc`` or ``uniform`` (see the module docs).
        **kwargs: clip lengths, transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`; ``frame_stride`` counts stored frames.
    """

    def __init__(
        self, root: str, num_val_videos: int = 50, val_held_out: bool = True, clip_draw: str = "uniform", **kwargs: Any
    ) -> None:
        super().__init__(root, **kwargs)
        if num_val_videos < 1:
            raise ValueError(f"num_val_videos must be >= 1, got {num_val_videos}")
        if clip_draw not in CLIP_DRAWS:
            raise ValueError(f"unknown clip_draw {clip_draw!r}; known: {list(CLIP_DRAWS)}")
        self.num_val_videos = num_val_videos
        self.val_held_out = val_held_out
        self.clip_draw = clip_draw
        self._videos: list[FrameFolder] | None = None

    @property
    def train_span(self) -> int:
        """Stored frames a training clip spans: ``(train_clip_length - 1) * frame_stride + 1``."""
        return (self.train_clip_length - 1) * self.frame_stride + 1

    def _fits(self, num_frames: int) -> bool:
        """Whether the training draw has a clip in a video of ``num_frames``."""
        if self.clip_draw == "smtc":
            return smtc_clip_fits(num_frames, self.train_clip_length, self.frame_stride)
        return num_frames >= self.train_span

    def setup(self, stage: str | None = None) -> None:
        """As the base class; ``clip_draw="smtc"`` draws the training clips with :class:`SMTCClips`."""
        if self.clip_draw == "smtc" and self.train_set is None and "train" in self.splits_for(stage):
            self.train_set = SMTCClips(
                self.open_source("train"), self.train_clip_length, self.train_transform, self.frame_stride
            )
        super().setup(stage)

    def splits_for(self, stage: str | None) -> tuple[str, ...]:
        """As the base class, without ``test`` unless the stage is ``test`` (which then fails clearly)."""
        return ("test",) if stage == "test" else tuple(s for s in super().splits_for(stage) if s != "test")

    def open_source(self, split: str) -> YouTubeVOSSource:
        """The videos of ``split``; ``train`` without the videos shorter than :attr:`train_span` (logged)."""
        if split == "test":
            raise DataError(NO_TEST_SPLIT)
        videos = self._list_videos()
        held_out = hold_out_last(videos, split, self.num_val_videos, "the download")
        if split == "train":
            videos = self._long_enough(held_out if self.val_held_out else videos)
        else:
            videos = held_out
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
        """``videos`` the training draw has a clip in; logs how many were left out, fails if none is left."""
        kept = [video for video in videos if self._fits(len(video.frames))]
        needs = next(n for n in itertools.count(1) if self._fits(n))  # the shortest video the draw takes
        clip = f"a {self.train_clip_length}-frame clip with frame_stride {self.frame_stride} ({self.clip_draw} draw)"
        if not kept:
            raise DataError(
                f"no training video in {self.root / IMAGE_DIR} has the {needs} frames that {clip} needs "
                f"(the longest has {max(len(video.frames) for video in videos)}); lower data.frame_stride or "
                "data.train_clip_length"
            )
        if len(kept) < len(videos):
            short = [video.name for video in videos if not self._fits(len(video.frames))]
            log.warning(
                "YouTube-VOS: left %d of %d training videos out, shorter than the %d frames that %s needs (e.g. %s)",
                len(short),
                len(videos),
                needs,
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
