"""Unlabelled videos from plain files: mp4 or anything else decord (FFmpeg) reads.

``python eval.py ckpt_path=... data=video_files data.paths=[my.mp4]`` runs a trained model on
a user's videos: there are no labels, so no metrics, but the mask visualisations work. The
same files can also be trained on (every split is the given videos).

Frames are decoded with decord's ``VideoReader``, which indexes a file's packets once when it
is opened and then reads any frames (``get_batch``) with an accurate seek. Readers hold FFmpeg
state that cannot be pickled or shared with forked loader workers, so each process opens its
own on first use and keeps the last few open (:data:`MAX_OPEN_READERS`).
:func:`read_clip_pyav` decodes the same frames with PyAV (seek + decode), for comparisons.
"""

from __future__ import annotations

import bisect
import glob
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import decord
import numpy as np

from ocl.data.clips import VideoSource
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
"""Suffixes (any case) of the files taken from a folder; files and globs may name any format."""
MAX_OPEN_READERS = 8
"""Readers a process keeps open (least recently used closed first): each holds a packet index."""
_GLOB_CHARS = frozenset("*?[")


def _open_reader(path: Path) -> decord.VideoReader:
    """A decord reader of ``path``; DataError naming it if missing or not a readable video."""
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    try:
        return decord.VideoReader(str(path))
    except (RuntimeError, decord.DECORDError) as error:
        raise DataError(f"cannot open video {path}: {error}. Is it a complete video file?") from error


def _read_frames(reader: decord.VideoReader, path: Path, frame_indices: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames ``frame_indices`` of an open reader; DataError naming ``path``."""
    indices = _checked_indices(frame_indices, len(reader), path)
    try:
        return reader.get_batch(indices).asnumpy()
    except (RuntimeError, decord.DECORDError) as error:
        raise DataError(f"cannot decode frames {indices.tolist()} of {path}: {error}") from error


def _checked_indices(frame_indices: Sequence[int] | np.ndarray, num_frames: int, path: Path) -> np.ndarray:
    """``frame_indices`` as int64 ``[T]``; IndexError if one is outside ``0..num_frames-1``."""
    indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= num_frames):
        raise IndexError(f"frame indices {indices.tolist()} out of range for {path} ({num_frames} frames)")
    return indices


def read_clip(path: str | Path, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frames of a video file, decoded by decord.

    Args:
        path: the video file.
        frame_indices: ``[T]`` frame numbers (presentation order, from 0; any order, repeats allowed).

    Returns:
        uint8 ``[T, H, W, 3]`` RGB frames. Raises DataError naming the file if it is missing or corrupt.
    """
    path = Path(path).expanduser()
    return _read_frames(_open_reader(path), path, np.asarray(frame_indices))


def read_clip_pyav(path: str | Path, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The frames :func:`read_clip` returns, decoded by PyAV.

    Frame ``i`` is the ``i``-th timestamp of the first video stream in presentation order. The
    packets are indexed first (demuxed, not decoded); each wanted frame is then reached by
    decoding forward, seeking to the keyframe before it when that skips frames.

    Args:
        path: the video file.
        frame_indices: ``[T]`` frame numbers (any order, repeats allowed).

    Returns:
        uint8 ``[T, H, W, 3]`` RGB frames. Raises DataError naming the file if it is missing or corrupt.
    """
    import av

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
            timestamps = sorted(pts for pts, _ in packets)
            if stream.frames and stream.frames != len(timestamps):  # stream.frames: the container's count, if any
                raise DataError(f"video {path} lists {stream.frames} frames but holds {len(timestamps)}: truncated?")
            keyframes = sorted(pts for pts, key in packets if key)
            indices = _checked_indices(frame_indices, len(timestamps), path)
            decoded: dict[int, np.ndarray] = {}
            frames = None
            last_pts = None
            for index in sorted(set(indices.tolist())):
                target = timestamps[index]
                keyframe = keyframes[max(bisect.bisect_right(keyframes, target) - 1, 0)]
                if frames is None or last_pts >= target or keyframe > last_pts:
                    container.seek(target, stream=stream, backward=True)
                    frames = container.decode(stream)
                for frame in frames:
                    last_pts = frame.pts
                    if frame.pts >= target:
                        break
                if last_pts != target:
                    raise DataError(f"cannot decode frame {index} of {path}: the stream ends or skips it")
                decoded[index] = frame.to_ndarray(format="rgb24")
    except av.FFmpegError as error:
        raise DataError(f"cannot read video {path}: {error}. Is it a complete video file?") from error
    return np.stack([decoded[i] for i in indices.tolist()])


def find_video_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The video files named by ``paths``: files, folders (their files with a
    :data:`VIDEO_EXTENSIONS` suffix, sorted, not recursive) or glob patterns (sorted, ``**`` recursive).

    Raises DataError naming an entry that does not exist or matches no file.
    """
    entries = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not entries:
        raise DataError("no video paths given: set data.paths to files, folders or glob patterns")
    files: list[Path] = []
    for entry in entries:
        text = os.path.expanduser(str(entry))
        if _GLOB_CHARS & set(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"no file matches {text!r}")
            files.extend(matches)
        elif Path(text).is_dir():
            matches = sorted(p for p in Path(text).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not matches:
                raise DataError(f"no video file ({', '.join(VIDEO_EXTENSIONS)}) in folder {text}")
            files.extend(matches)
        elif Path(text).is_file():
            files.append(Path(text))
        else:
            raise DataError(f"video file or folder not found: {text}")
    return files


def common_folder(files: Sequence[Path]) -> Path:
    """The deepest folder that contains all ``files``."""
    return Path(os.path.commonpath([str(f.resolve().parent) for f in files]))


class VideoFileSource(VideoSource):
    """Video files without labels (``read`` returns ``masks = None``), decoded by decord.

    Every file is opened once here, to count its frames, so a missing or corrupt file fails
    now with a DataError naming it. Readers are then reopened lazily in each process.

    Args:
        paths: the video files.
        max_frames: keep at most this many (subsampled) frames of each video; ``None`` = all.
        frame_stride: keep every ``frame_stride``-th stored frame (e.g. 3 turns 30 fps into 10 fps).
    """

    def __init__(self, paths: Sequence[str | Path], max_frames: int | None = None, frame_stride: int = 1) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        if not paths:
            raise DataError("no video files given")
        self.paths = [Path(p).expanduser() for p in paths]
        self.max_frames = max_frames
        self.frame_stride = frame_stride
        self.stored_frames = [len(_open_reader(path)) for path in self.paths]
        for path, count in zip(self.paths, self.stored_frames):
            if count == 0:
                raise DataError(f"video {path} has no frames")
        root = common_folder(self.paths)
        self.video_ids = [p.resolve().relative_to(root).with_suffix("").as_posix() for p in self.paths]
        self._readers: OrderedDict[int, decord.VideoReader] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open readers (they are reopened on first use)."""
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self.paths)

    def video_id(self, index: int) -> str:
        """The file's path relative to the folder that holds all the files, without suffix."""
        return self.video_ids[index]

    def num_frames(self, index: int) -> int:
        """Frames of video ``index`` after ``frame_stride`` and ``max_frames``."""
        count = -(-self.stored_frames[index] // self.frame_stride)
        return count if self.max_frames is None else min(count, self.max_frames)

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, None]:
        """uint8 frames ``[T, H, W, 3]`` of video ``index`` (indices after subsampling) and no labels."""
        indices = _checked_indices(frame_indices, self.num_frames(index), self.paths[index])
        return _read_frames(self._reader(index), self.paths[index], indices * self.frame_stride), None

    def _reader(self, index: int) -> decord.VideoReader:
        """This process's reader of video ``index``, opened on first use."""
        if self._pid != os.getpid():  # a forked worker: the parent's readers are not ours
            self._readers = OrderedDict()
            self._pid = os.getpid()
        if index in self._readers:
            self._readers.move_to_end(index)
        else:
            self._readers[index] = _open_reader(self.paths[index])
            if len(self._readers) > MAX_OPEN_READERS:
                self._readers.popitem(last=False)
        return self._readers[index]


class VideoFilesDataModule(StoredVideoDataModule):
    """Any video files, unlabelled: every split (train, val, test) is the given videos.

    Evaluation reads whole videos (``eval_clip_length=None``); videos of different lengths
    cannot share a batch, hence ``val_batch_size=1`` by default (a larger one is refused unless
    all videos have the same length, or ``eval_clip_length`` is set).

    Args:
        paths: video files, folders and glob patterns (see :func:`find_video_files`).
        max_frames: keep at most this many frames of each video (after ``source_frame_stride``).
        source_frame_stride: keep every ``n``-th stored frame, in every split.
        val_batch_size: evaluation batch size (1: whole videos of different lengths).
        **kwargs: clip lengths, transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule` (``frame_stride`` spaces the
            frames of training clips, on top of ``source_frame_stride``).
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        max_frames: int | None = None,
        source_frame_stride: int = 1,
        val_batch_size: int | None = 1,
        **kwargs: Any,
    ) -> None:
        files = find_video_files(paths)
        super().__init__(str(common_folder(files)), val_batch_size=val_batch_size, **kwargs)
        self.files = files
        self.max_frames = max_frames
        self.source_frame_stride = source_frame_stride
        self._source: VideoFileSource | None = None

    def open_source(self, split: str) -> VideoFileSource:
        """The same videos for every split (opened once)."""
        if self._source is None:
            self._source = VideoFileSource(self.files, self.max_frames, self.source_frame_stride)
        if split != "train":
            self._check_eval_batches(self._source)
        return self._source

    def _check_eval_batches(self, source: VideoFileSource) -> None:
        """Refuse whole-video batches of videos with different lengths (they cannot be stacked)."""
        lengths = {source.video_id(i): source.num_frames(i) for i in range(len(source))}
        if self.val_batch_size > 1 and self.eval_clip_length is None and len(set(lengths.values())) > 1:
            raise ValueError(
                f"whole-video evaluation cannot batch videos of different lengths {lengths}: "
                "set data.val_batch_size=1 (or data.eval_clip_length=<frames>)"
            )
