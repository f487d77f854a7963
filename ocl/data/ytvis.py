"""YouTube-VIS 2019 and 2021, read from the official downloads as they are.

Layout under ``root`` (``data.root``), as unzipped from the CodaLab pages linked on
https://youtube-vos.org/dataset/vis/ (the same paths Mask2Former / VITA register)::

    2019: root/train.json                  root/train/JPEGImages/<video>/<frame>.jpg
    2021: root/train/instances.json        root/train/JPEGImages/<video>/<frame>.jpg

The JSON is COCO-like: ``videos`` (``id``, ``file_names`` relative to ``train/JPEGImages``,
``height``, ``width``, ``length``), ``annotations`` (one per object track: ``video_id``,
``segmentations`` with one entry per frame: an RLE dict ``{"size": [h, w], "counts": str}``
(compressed) or ``{"counts": [int, ...]}`` (uncompressed), a polygon list
``[[x0, y0, x1, y1, ...], ...]``, or ``null`` where the object is absent) and ``categories``.
Only the annotated frames (every 5th frame of the 30 fps videos) are listed in ``file_names``;
they are the frames read. ``iscrowd`` is not used (YouTube-VIS has no crowd tracks).

Labels (``read``): per video, instance ``m`` (1-based, in the order of the JSON's
``annotations``) is id ``m`` in every frame, ``0`` is background. **Overlaps**: YouTube-VIS
masks of different objects may overlap; pixels covered by more than one object are
:data:`~ocl.contracts.batch.IGNORE_ID` (no metric scores them), so that no object's extent depends
on the order of the annotations.

Splits: only the train labels are public. ``val`` is the *last* ``num_val_videos`` videos of
the train JSON's ``videos`` list (300, as VideoSAUR and SlotContrast), ``train`` the others.
There is no ``test`` split: the official valid/test labels are withheld, and an unlabelled
split would yield no metric, so asking for it raises :class:`~ocl.data.errors.DataError`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ocl.contracts.batch import IGNORE_ID
from ocl.data.clips import DecodeSize, ReadClip, VideoSource, hold_out_last
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.images import read_rgb_scaled

ANNOTATION_FILES = {2019: "train.json", 2021: "train/instances.json"}
"""Train JSON of each version, relative to the dataset root."""
IMAGE_DIR = "train/JPEGImages"
DOWNLOAD_HELP = (
    "Get YouTube-VIS {version} from its CodaLab competition, linked on https://youtube-vos.org/dataset/vis/ "
    "(2019: https://codalab.lisn.upsaclay.fr/competitions/6064, 2021: https://codalab.lisn.upsaclay.fr/competitions/7680), "
    "unzip train.zip (2019: and train.json) into {root} so that {images} and {annotations} exist, "
    "or point data.root (or OCL_DATA_ROOT) at the folder that has them."
)
NO_TEST_SPLIT = (
    "YouTube-VIS has no test split with public labels (the official valid and test labels are withheld); "
    "evaluate on split 'val' (the last num_val_videos training videos), e.g. eval.split=val"
)


@dataclass(frozen=True)
class YTVISVideo:
    """One video of the train JSON.

    Attributes:
        json_id: the video's ``id`` in the JSON.
        name: its frame folder (e.g. ``"0043f083b5"``), used as the video id of batches.
        height, width: frame size in pixels, as the JSON says.
        file_names: ``T`` frame paths relative to ``train/JPEGImages``.
        tracks: ``M`` object tracks, each ``T`` segmentations (RLE dict, polygon list or None).
    """

    json_id: int
    name: str
    height: int
    width: int
    file_names: tuple[str, ...]
    tracks: tuple[tuple[Any, ...], ...] = ()


def _field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``record[key]``, or a DataError if it is absent or not of type ``kind``."""
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{where} has no '{key}' field")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: '{key}' must be {kind}, got {type(value).__name__}")
    return value


def _parse_video(record: Any, position: int, json_path: Path) -> YTVISVideo:
    """A ``videos`` entry of the JSON, checked: ``len(file_names) == length``."""
    where = f"{json_path}: videos[{position}]"
    file_names = _field(record, "file_names", list, where)
    length = _field(record, "length", int, where)
    if not file_names or len(file_names) != length:
        raise DataError(f"{where} has length {length} but {len(file_names)} file_names; the JSON is inconsistent")
    if not all(isinstance(name, str) for name in file_names):
        raise DataError(f"{where}: file_names must be strings")
    return YTVISVideo(
        json_id=_field(record, "id", int, where),
        name=PurePosixPath(file_names[0]).parent.as_posix(),
        height=_field(record, "height", int, where),
        width=_field(record, "width", int, where),
        file_names=tuple(file_names),
    )


def load_ytvis_annotations(json_path: Path) -> list[YTVISVideo]:
    """The videos of a YouTube-VIS train JSON with their object tracks, in the JSON's order.

    Raises DataError if the file is missing or unreadable, an annotation names an unknown
    video, or a track's number of segmentations differs from its video's number of frames.
    """
    json_path = Path(json_path)
    try:
        with json_path.open("rb") as file:
            data = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{json_path} is not a readable JSON file: {error}") from error
    videos = [
        _parse_video(record, i, json_path) for i, record in enumerate(_field(data, "videos", list, str(json_path)))
    ]
    by_id = {video.json_id: video for video in videos}
    if len(by_id) != len(videos):
        raise DataError(f"{json_path}: the 'id's of 'videos' are not unique")
    tracks: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for position, annotation in enumerate(_field(data, "annotations", list, str(json_path))):
        where = f"{json_path}: annotations[{position}]"
        video_id = _field(annotation, "video_id", int, where)
        if video_id not in by_id:
            raise DataError(f"{where} refers to video_id {video_id}, which is not in 'videos'")
        segmentations = _field(annotation, "segmentations", list, where)
        video = by_id[video_id]
        if len(segmentations) != len(video.file_names):
            raise DataError(
                f"{where} has {len(segmentations)} segmentations but video {video.name} (id {video_id}) has "
                f"{len(video.file_names)} frames; there must be one entry (or null) per frame"
            )
        tracks[video_id].append(tuple(segmentations))
    return [replace(video, tracks=tuple(tracks[video.json_id])) for video in videos]


MAX_COMPRESSED_DIGITS = 6
"""Most characters of one run length in a COCO compressed RLE string: 6 carry 30 bits, enough for
any frame under 2**29 pixels; pycocotools' decoder overflows (C ``int``) on longer ones."""


def compressed_rle_counts(counts: str | bytes, where: str) -> np.ndarray:
    """int64 run lengths of a COCO compressed RLE string, decoded as pycocotools' ``rleFrString`` does.

    Each run length is a little-endian sequence of 5-bit digits, one character each (its code minus
    48, so ``'0'..'o'``): bit 0x20 set means more digits follow, bit 0x10 of the last digit makes
    the number negative; from the fourth run length on, the number is the difference to the run
    length two before. Vectorised over the characters (no Python loop). Raises DataError naming
    ``where`` for a character outside ``'0'..'o'``, a string that ends in the middle of a run length
    (pycocotools would read past its end) or a run length of more than :data:`MAX_COMPRESSED_DIGITS`
    characters.
    """
    raw = counts.encode("utf-8") if isinstance(counts, str) else bytes(counts)
    codes = np.frombuffer(raw, np.uint8)
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if codes.min() < 48 or codes.max() > 111:
        bad = int(np.argmax((codes < 48) | (codes > 111)))
        raise DataError(
            f"{where}: the compressed RLE counts have an invalid character {raw[bad : bad + 1]!r} at position {bad}"
        )
    last = np.flatnonzero(codes < 80)  # digit (code - 48) without the continuation bit 0x20: a number ends
    if last.size == 0 or last[-1] != codes.size - 1:
        raise DataError(
            f"{where}: the compressed RLE counts ({codes.size} characters) end in the middle of a run length; "
            "the string is truncated"
        )
    first = np.empty_like(last)
    first[0], first[1:] = 0, last[:-1] + 1
    lengths = last - first + 1
    if lengths.max() > MAX_COMPRESSED_DIGITS:
        raise DataError(
            f"{where}: the compressed RLE counts have a run length of {int(lengths.max())} characters "
            f"(at most {MAX_COMPRESSED_DIGITS} decode exactly)"
        )
    place = np.arange(codes.size) - np.repeat(first, lengths)
    values = np.add.reduceat(((codes - 48) & 0x1F).astype(np.int64) << (5 * place), first)
    values -= (codes[last] >= 64) * (np.int64(1) << (5 * lengths))  # last digit has 0x10: sign-extend
    runs = values.copy()  # cnts[0..2] as stored, cnts[i] = x[i] + cnts[i - 2] after: running sums per parity
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def _check_rle_counts(counts: Any, height: int, width: int, where: str) -> None:
    """DataError naming ``where`` unless the RLE ``counts`` (a list of run lengths or a COCO compressed
    string) are non-negative integers that add up to exactly ``height * width``: pycocotools fills
    the pixels after short counts from uninitialised memory."""
    if isinstance(counts, list):
        try:
            runs = np.asarray(counts)
        except (ValueError, OverflowError) as error:
            raise DataError(f"{where}: the RLE counts must be a flat list of integers: {error}") from error
        if runs.ndim != 1 or (runs.size and runs.dtype.kind not in "iu"):
            raise DataError(f"{where}: the RLE counts must be a flat list of integers, got {runs.dtype} {runs.shape}")
        kind = "uncompressed"
    elif isinstance(counts, (str, bytes)):
        runs = compressed_rle_counts(counts, where)
        kind = "compressed"
    else:
        raise DataError(
            f"{where}: RLE 'counts' must be a list of run lengths or a compressed string, got {type(counts).__name__}"
        )
    if runs.size and runs.min() < 0:
        position = int(np.argmax(runs < 0))
        raise DataError(
            f"{where}: the {kind} RLE counts have a negative run length {int(runs[position])} at index {position}"
        )
    pixels = height * width
    if runs.size and runs.max() > pixels:  # an int64 sum could overflow: add exactly (rare, already invalid)
        total = sum(int(run) for run in runs)
    else:
        total = int(runs.sum())
    if total != pixels:
        raise DataError(
            f"{where}: the {kind} RLE counts ({runs.size} runs) add up to {total} pixels, "
            f"but the mask is {height}x{width} = {pixels} pixels"
        )


def decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """bool ``[height, width]`` mask of one YouTube-VIS segmentation (RLE dict or polygon list).

    ``where`` names the annotation in error messages. RLE counts must add up to exactly
    ``height * width`` (see :func:`_check_rle_counts`).
    """
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if not isinstance(size, list) or size != [height, width]:
            raise DataError(f"{where}: mask size {size} differs from the frame size [{height}, {width}]")
        if "counts" not in segmentation:
            raise DataError(f"{where}: the RLE dict has no 'counts' field")
        _check_rle_counts(segmentation["counts"], height, width, where)
    elif not isinstance(segmentation, list):
        raise DataError(f"{where}: expected an RLE dict, a polygon list or null, got {type(segmentation).__name__}")
    try:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:  # compressed RLE
            rle = segmentation
        mask = mask_utils.decode(rle)
    except Exception as error:  # pycocotools raises bare Exceptions and TypeErrors for malformed input
        raise DataError(f"{where}: cannot decode the segmentation: {error}") from error
    return mask.view(bool)  # 0/1 bytes, column-major as decoded


def _check_frames_exist(image_dir: Path, videos: Sequence[YTVISVideo], json_path: Path) -> None:
    """DataError naming the first frame listed in the JSON that is missing on disk (one listing per folder)."""
    for video in videos:
        folders: dict[str, list[str]] = defaultdict(list)
        for file_name in video.file_names:
            relative = PurePosixPath(file_name)
            folders[relative.parent.as_posix()].append(relative.name)
        for folder, names in folders.items():
            path = image_dir / folder
            present = set(os.listdir(path)) if path.is_dir() else set()
            missing = [name for name in names if name not in present]
            if missing:
                found = sum(name.endswith(".jpg") for name in present)
                raise DataError(
                    f"video {video.name}: {json_path} lists {len(names)} frames in {path}, {len(missing)} of them "
                    f"missing (found {found} JPEGs there), e.g. {path / missing[0]}; the download is incomplete"
                )


class YTVISSource(VideoSource):
    """Frames and instance ids of YouTube-VIS videos.

    Args:
        image_dir: ``root/train/JPEGImages``.
        videos: the videos of the split (see :func:`load_ytvis_annotations`, :func:`~ocl.data.clips.hold_out_last`).
        json_path: the JSON they come from (named in error messages).

    The existence of every listed frame is checked here; frame decoding, frame sizes and mask
    sizes are checked when a video is read.
    """

    def __init__(self, image_dir: Path, videos: Sequence[YTVISVideo], json_path: Path) -> None:
        self.image_dir = Path(image_dir)
        self.videos = list(videos)
        self.json_path = Path(json_path)
        _check_frames_exist(self.image_dir, self.videos, self.json_path)

    def __len__(self) -> int:
        return len(self.videos)

    def video_id(self, index: int) -> str:
        return self.videos[index].name

    def num_frames(self, index: int) -> int:
        return len(self.videos[index].file_names)

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames ``[T, H, W, 3]`` and int16 ids ``[T, H, W]`` (0 background, 1..M, IGNORE_ID on overlaps)."""
        clip = self.read_clip(index, frame_indices)
        return clip.frames, clip.masks

    def read_clip(
        self, index: int, frame_indices: np.ndarray, labels: bool = True, decode_size: DecodeSize | None = None
    ) -> ReadClip:
        """As :meth:`read`; the segmentations of the clip's frames are decoded only with ``labels``,
        frames at a reduced scale down to ``decode_size``."""
        video = self.videos[index]
        frames = np.stack([self._frame(video, int(t), decode_size) for t in frame_indices])
        masks = np.stack([self._labels(video, int(t)) for t in frame_indices]) if labels else None
        return ReadClip(frames, masks, (video.height, video.width))

    def _frame(self, video: YTVISVideo, t: int, decode_size: DecodeSize | None) -> np.ndarray:
        path = self.image_dir / video.file_names[t]
        frame, size = read_rgb_scaled(path, decode_size)
        if size != (video.height, video.width):
            raise DataError(
                f"{path} is {size[0]}x{size[1]} (HxW) but {self.json_path} says video {video.name} "
                f"is {video.height}x{video.width}"
            )
        return frame

    def _labels(self, video: YTVISVideo, t: int) -> np.ndarray:
        """int16 ids ``[H, W]`` of frame ``t`` (column-major memory, as pycocotools decodes masks)."""
        labels = np.zeros((video.height, video.width), np.int16, order="F")
        coverage = np.zeros((video.height, video.width), np.uint8, order="F")
        for instance, track in enumerate(video.tracks, start=1):
            if track[t] is None:
                continue
            where = f"{self.json_path}: video {video.name}, object {instance}, frame {t} ({video.file_names[t]})"
            mask = decode_segmentation(track[t], video.height, video.width, where)
            labels[mask] = instance
            coverage += mask
        labels[coverage > 1] = IGNORE_ID
        return labels


class YTVISDataModule(StoredVideoDataModule):
    """YouTube-VIS 2019 or 2021 (see the module docs for layout, labels and splits).

    Args:
        root: the dataset folder (holding ``train/JPEGImages``).
        version: 2019 or 2021.
        num_val_videos: the last videos of the train JSON that form ``val``.
        annotation_file: the train JSON, relative to ``root`` or absolute; ``None`` = the
            official place (:data:`ANNOTATION_FILES`).
        **kwargs: clip lengths, transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`.
    """

    def __init__(
        self,
        root: str,
        version: int = 2021,
        num_val_videos: int = 300,
        annotation_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if version not in ANNOTATION_FILES:
            raise ValueError(f"unknown YouTube-VIS version {version!r}; known: {list(ANNOTATION_FILES)}")
        if num_val_videos < 1:
            raise ValueError(f"num_val_videos must be >= 1, got {num_val_videos}")
        self.version = version
        self.num_val_videos = num_val_videos
        self.json_path = self.root / (annotation_file or ANNOTATION_FILES[version])
        self._videos: list[YTVISVideo] | None = None

    def splits_for(self, stage: str | None) -> tuple[str, ...]:
        """As the base class, without ``test`` unless the stage is ``test`` (which then fails clearly)."""
        return ("test",) if stage == "test" else tuple(s for s in super().splits_for(stage) if s != "test")

    def open_source(self, split: str) -> YTVISSource:
        if split == "test":
            raise DataError(NO_TEST_SPLIT)
        if self._videos is None:  # parsed once for both splits: the JSON is large
            help_text = DOWNLOAD_HELP.format(
                version=self.version, root=self.root, images=self.root / IMAGE_DIR, annotations=self.json_path
            )
            if not self.root.is_dir():
                raise DataError(f"YouTube-VIS {self.version} not found: {self.root} does not exist. {help_text}")
            if not self.json_path.is_file():
                raise DataError(
                    f"YouTube-VIS {self.version} annotation file {self.json_path} does not exist. {help_text}"
                )
            self._videos = load_ytvis_annotations(self.json_path)
        return YTVISSource(
            self.root / IMAGE_DIR,
            hold_out_last(self._videos, split, self.num_val_videos, "the train JSON"),
            self.json_path,
        )
