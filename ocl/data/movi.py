"""MOVi-C/D/E (Kubric): convert the published TFDS files once, then train from per-video files.

**Published data.** ``gs://kubric-public/tfds/movi_{c,d,e}/{128x128,256x256}/1.0.0/`` holds
``dataset_info.json``, ``features.json`` and TFRecord shards
``movi_c-{train,validation,test}.tfrecord-00000-of-NNNNN`` of ``tf.train.Example`` protos.
Each video has 24 frames: ``video`` is 24 PNG-encoded RGB frames (bytes list),
``segmentations`` 24 PNG-encoded single-channel uint8 frames (0 = background, k = instance k),
``metadata/video_name`` its name; the other features (depth, flow, instances/..., camera/...)
are not needed here and are never decoded. Splits: ``train`` (~9.75k videos), ``validation``
(250) and ``test`` (held-out objects and backgrounds; C, D and E only), as the Kubric MOVi
README and its TFDS builders (``challenges/movi/movi_{c,d,e}.py``) define them. MOVi-C has
3-10 objects per video, MOVi-D and E up to 23 (E with a moving camera).

**Converted format** (:func:`convert_movi`, ``scripts/convert_movi.py``)::

    <out>/<split>/<video_id>.npz   uint8 video [T, H, W, 3], uint8 segmentations [T, H, W]
    <out>/<split>/index.json       variant, resolution, video ids and frame counts, source shards

with our split names (``train``, ``val``, ``test`` <- TFDS ``train``, ``validation``, ``test``).
Why this format:

- Lossless: the published frames are PNG, so the pixel-reconstruction baselines keep their
  exact targets (a video codec would change them) and the masks keep exact ids.
- Random access per video: a training item reads one small file (compressed with zlib, about
  the size of the PNGs), so loaders shuffle freely, and DDP ranks and nodes shard the dataset
  by index (the sampler already does) without coordinating over shards.
- No TensorFlow at training time, and nothing to decode but ``np.load``.
- Restartable: each video file is written atomically (temporary file + rename) and the
  manifest last, so an interrupted conversion leaves no truncated file; re-running the
  converter skips the videos already written. A folder without manifest, or whose manifest
  names missing files, is "half-converted" and refused with the command that finishes it.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import MofNCompleteColumn, Progress

from ocl.data.clips import VideoSource
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.files import load_converted_manifest, read_manifest, write_atomically
from ocl.data.tfrecord import Record, iter_records, parse_example

VARIANTS = ("movi_c", "movi_d", "movi_e")
PUBLISHED_RESOLUTIONS = (128, 256)
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}
"""Our split name -> the TFDS split it is converted from."""
TFDS_VERSION = "1.0.0"
DOWNLOAD = "gs://kubric-public/tfds"
FORMAT = "ocl-movi-npz-1"
MANIFEST = "index.json"

VIDEO_KEY = "video"
SEGMENTATIONS_KEY = "segmentations"
NAME_KEY = "metadata/video_name"
NUM_FRAMES_KEY = "metadata/num_frames"
_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else ValueError."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MOVi variant {variant!r}; known: {list(VARIANTS)}")
    return variant


def conversion_command(
    variant: str, out: str | Path, splits: Sequence[str] | None = None, resolution: int = 128
) -> str:
    """The shell command that converts ``variant`` into ``out`` (see ``scripts/convert_movi.py``)."""
    command = (
        f"python scripts/convert_movi.py --variant {variant} --resolution {resolution} --tfds-dir <dir> --out {out}"
    )
    return command + (f" --splits {' '.join(splits)}" if splits else "")


def download_hint(variant: str, resolution: int = 128) -> str:
    """Where the published TFDS files of ``variant`` are and how to copy them."""
    source = f"{DOWNLOAD}/{variant}/{resolution}x{resolution}/{TFDS_VERSION}"
    return f"download {source} (e.g. `gsutil -m cp -r {source} <dir>`; 256x256 is published too)"


# --------------------------------------------------------------------------- the TFDS side


def find_tfds_dir(tfds_dir: str | Path, variant: str, resolution: int) -> Path:
    """The folder holding ``dataset_info.json`` of ``variant`` at ``resolution``.

    ``tfds_dir`` may be that folder itself or one of its parents as published
    (``<tfds>/movi_c/128x128/1.0.0``). Raises DataError if none has a matching ``dataset_info.json``.
    """
    base = Path(tfds_dir).expanduser()
    config = f"{resolution}x{resolution}"
    candidates = [base, base / TFDS_VERSION, base / config / TFDS_VERSION, base / variant / config / TFDS_VERSION]
    found = next((path for path in candidates if (path / "dataset_info.json").is_file()), None)
    if found is None:
        looked = ", ".join(str(path / "dataset_info.json") for path in candidates)
        raise DataError(
            f"no TFDS {variant} {config} files under {base} (looked for {looked}); {download_hint(variant)}"
        )
    info = read_dataset_info(found)
    if info.get("name") != variant:
        raise DataError(f"{found / 'dataset_info.json'} describes {info.get('name')!r}, not {variant!r}")
    if info.get("configName", config) != config:
        raise DataError(f"{found / 'dataset_info.json'} is the {info['configName']} build, not {config}")
    return found


def read_dataset_info(version_dir: Path) -> dict[str, Any]:
    """The parsed ``dataset_info.json`` of a TFDS version folder."""
    path = version_dir / "dataset_info.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: unreadable ({error}); re-download it") from error
    if not isinstance(info, dict):
        raise DataError(f"{path}: not a TFDS dataset_info.json (expected an object)")
    return info


def tfds_shards(version_dir: Path, info: dict[str, Any], variant: str, tfds_split: str) -> tuple[list[Path], list[int]]:
    """The shard files of ``tfds_split`` and the number of videos ``dataset_info.json`` gives for each.

    Raises DataError if the split is not published there or a shard is missing.
    """
    splits = {split.get("name"): split for split in info.get("splits", [])}
    if tfds_split not in splits:
        raise DataError(
            f"{version_dir / 'dataset_info.json'} has no {tfds_split!r} split (it has {sorted(splits)}); "
            f"{variant} publishes {sorted(TFDS_SPLITS.values())}: was the download complete?"
        )
    lengths = [int(length) for length in splits[tfds_split].get("shardLengths", [])]
    prefix = f"{variant}-{tfds_split}.tfrecord-"
    if not lengths:
        raise DataError(f"{version_dir / 'dataset_info.json'}: split {tfds_split!r} lists no shardLengths")
    names = [f"{prefix}{index:05d}-of-{len(lengths):05d}" for index in range(len(lengths))]
    missing = [name for name in names if not (version_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{version_dir}: {len(missing)} of {len(names)} {tfds_split!r} shards missing "
            f"(e.g. {missing[0]}); copy them again from {DOWNLOAD}/{variant}/"
        )
    return [version_dir / name for name in names], lengths


def _decode_png(data: bytes, mode: str, record: Record) -> np.ndarray:
    """One PNG frame as uint8 ``[H, W, 3]`` (mode RGB) or ``[H, W]`` (mode L)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode != mode:
                raise DataError(f"{record.where}: a frame is a {image.mode} PNG, expected {mode}")
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"{record.where}: undecodable PNG frame ({error}); re-download this file") from error


def _frame_lists(record: Record) -> tuple[str, list[bytes], list[bytes]]:
    """``(video_id, PNG frames, PNG masks)`` of one MOVi example, checked for consistency."""
    features = parse_example(record, (VIDEO_KEY, SEGMENTATIONS_KEY, NAME_KEY, NUM_FRAMES_KEY))
    absent = [key for key in (VIDEO_KEY, SEGMENTATIONS_KEY, NAME_KEY) if key not in features]
    if absent:
        raise DataError(f"{record.where}: no {absent} feature; is this a MOVi TFDS file?")
    names, frames, masks = features[NAME_KEY], features[VIDEO_KEY], features[SEGMENTATIONS_KEY]
    video_id = names[0].decode("utf-8") if isinstance(names, list) and len(names) == 1 else ""
    if not _VIDEO_ID.match(video_id):
        raise DataError(f"{record.where}: {NAME_KEY} {names!r} is not a usable file name")
    if not isinstance(frames, list) or not isinstance(masks, list) or not frames:
        raise DataError(f"{record.where}: {VIDEO_KEY} and {SEGMENTATIONS_KEY} must be non-empty lists of PNGs")
    declared = features.get(NUM_FRAMES_KEY)
    declared_frames = int(declared[0]) if isinstance(declared, np.ndarray) and declared.size == 1 else None
    if len(frames) != len(masks) or declared_frames not in (None, len(frames)):
        raise DataError(
            f"{record.where}: video {video_id} has {len(frames)} frames, {len(masks)} segmentation frames "
            f"and {NUM_FRAMES_KEY} = {declared_frames}"
        )
    return video_id, frames, masks


def _decode_frames(
    record: Record, frames: list[bytes], masks: list[bytes], resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """PNG ``frames`` and ``masks`` of one example as uint8 ``[T, H, W, 3]`` and ``[T, H, W]``."""
    video = np.stack([_decode_png(frame, "RGB", record) for frame in frames])
    segmentations = np.stack([_decode_png(mask, "L", record) for mask in masks])
    expected = (resolution, resolution)
    if video.shape[1:3] != expected or segmentations.shape[1:] != expected:
        raise DataError(
            f"{record.where}: frames are {video.shape[1:3]} and masks {segmentations.shape[1:]}, expected {expected}"
        )
    return video, segmentations


# --------------------------------------------------------------------------- conversion


def _write_video(path: Path, video: np.ndarray, segmentations: np.ndarray) -> None:
    write_atomically(path, lambda stream: np.savez_compressed(stream, video=video, segmentations=segmentations))


def convert_movi(
    tfds_dir: str | Path,
    out: str | Path,
    variant: str,
    resolution: int,
    splits: Sequence[str] = ("train", "val", "test"),
    progress: bool = True,
) -> dict[str, int]:
    """Convert the TFDS files of ``variant`` at ``resolution`` into ``out`` (see the module docstring).

    Every split's shards are checked before anything is written. A split whose manifest is
    complete is skipped; an interrupted one resumes (videos already written are not decoded again).

    Args:
        tfds_dir: the published ``<variant>/<R>x<R>/1.0.0`` folder, or a parent of it.
        out: the converted dataset's root (``data.root`` of :class:`MoviDataModule`).
        variant: ``movi_c``, ``movi_d`` or ``movi_e``.
        resolution: frame side in pixels (published: 128 or 256).
        splits: our split names to convert (``train``, ``val``, ``test``).
        progress: show a progress bar.

    Returns:
        Number of videos per converted split.
    """
    check_variant(variant)
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    unknown = [split for split in splits if split not in TFDS_SPLITS]
    if unknown:
        raise ValueError(f"unknown splits {unknown}; known: {list(TFDS_SPLITS)}")
    version_dir = find_tfds_dir(tfds_dir, variant, resolution)
    info = read_dataset_info(version_dir)
    sources = {split: tfds_shards(version_dir, info, variant, TFDS_SPLITS[split]) for split in splits}
    out = Path(out).expanduser()
    counts = {}
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), disable=not progress) as bar:
        for split, (shards, lengths) in sources.items():
            task = bar.add_task(f"{variant} {split}", total=sum(lengths))
            counts[split] = _convert_split(
                shards, lengths, out / split, variant, resolution, split, partial(bar.advance, task)
            )
    return counts


def _convert_split(
    shards: list[Path],
    lengths: list[int],
    split_dir: Path,
    variant: str,
    resolution: int,
    split: str,
    advance: Callable[[int], object],
) -> int:
    """Convert one split's ``shards`` into ``split_dir``; return its number of videos."""
    manifest_path = split_dir / MANIFEST
    if manifest_path.is_file():
        manifest = read_manifest(manifest_path)
        found = (manifest.get("variant"), manifest.get("resolution")) if isinstance(manifest, dict) else None
        if found is not None and found != (variant, resolution):
            raise DataError(
                f"{split_dir} already holds a conversion of {found}, not ({variant!r}, {resolution}): choose another --out"
            )
        try:
            done = len(load_manifest(split_dir, variant)["videos"])
        except DataError:
            manifest_path.unlink()  # half-converted: resume, and write the manifest again at the end
        else:
            advance(done)
            return done
    split_dir.mkdir(parents=True, exist_ok=True)
    videos: list[dict[str, Any]] = []
    seen: set[str] = set()
    for shard, expected in zip(shards, lengths, strict=True):
        count = 0
        for record in iter_records(shard):
            video_id, frames, masks = _frame_lists(record)
            if video_id in seen:
                raise DataError(f"{record.where}: video name {video_id!r} appears twice in split {split!r}")
            seen.add(video_id)
            path = split_dir / f"{video_id}.npz"
            if not path.is_file():
                _write_video(path, *_decode_frames(record, frames, masks, resolution))
            videos.append({"id": video_id, "num_frames": len(frames)})
            count += 1
            advance(1)
        if count != expected:
            raise DataError(f"{shard}: {count} videos, but dataset_info.json says {expected}; re-download this file")
    manifest = {
        "format": FORMAT,
        "variant": variant,
        "resolution": resolution,
        "split": split,
        "tfds_split": TFDS_SPLITS[split],
        "source_shards": [shard.name for shard in shards],
        "videos": videos,
    }
    write_atomically(manifest_path, lambda stream: stream.write(json.dumps(manifest, indent=1).encode()))
    return len(videos)


# --------------------------------------------------------------------------- reading


def load_manifest(split_dir: Path, variant: str | None = None) -> dict[str, Any]:
    """The manifest of a converted split, checked against the files; DataError if half-converted."""
    path = split_dir / MANIFEST
    command = conversion_command(variant or "<variant>", split_dir.parent, [split_dir.name])
    rerun = f"re-run the converter with the same arguments to finish it (it resumes), e.g. `{command}`"
    manifest = load_converted_manifest(split_dir, MANIFEST, FORMAT, "videos", list, rerun)
    if variant is not None and manifest.get("variant") != variant:
        raise DataError(f"{path}: this folder holds {manifest.get('variant')!r}, not {variant!r}")
    present = set(os.listdir(split_dir))
    missing = [video["id"] for video in manifest["videos"] if f"{video['id']}.npz" not in present]
    if missing:
        raise DataError(
            f"{split_dir} is half-converted: {len(missing)} of {len(manifest['videos'])} videos listed in "
            f"{MANIFEST} are missing (e.g. {missing[0]}.npz); {rerun}"
        )
    return manifest


class MoviSource(VideoSource):
    """The converted videos of one split (see the module docstring for the format).

    Args:
        root: the converted dataset's root (``<root>/<split>/index.json``).
        split: ``train``, ``val`` or ``test``.
        variant: expected variant (checked against the manifest).
    """

    def __init__(self, root: str | Path, split: str, variant: str) -> None:
        check_variant(variant)
        if split not in TFDS_SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {list(TFDS_SPLITS)}")
        self.root = Path(root).expanduser()
        self.split_dir = self.root / split
        if not self.root.is_dir():
            raise DataError(
                f"{variant} not found: {self.root} does not exist (looked for {self.split_dir / MANIFEST}). "
                f"Convert the published TFDS files once: {download_hint(variant)}, then run "
                f"`{conversion_command(variant, self.root)}`"
            )
        if not self.split_dir.is_dir():
            raise DataError(
                f"{variant} split {split!r} not converted: {self.split_dir} does not exist; run "
                f"`{conversion_command(variant, self.root, [split])}`"
            )
        manifest = load_manifest(self.split_dir, variant)
        self.resolution = int(manifest["resolution"])
        self.ids = [str(video["id"]) for video in manifest["videos"]]
        self.frames = [int(video["num_frames"]) for video in manifest["videos"]]

    def __len__(self) -> int:
        return len(self.ids)

    def video_id(self, index: int) -> str:
        return self.ids[index]

    def num_frames(self, index: int) -> int:
        return self.frames[index]

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames ``[T, H, W, 3]`` and int64 instance ids ``[T, H, W]`` of video ``index``."""
        video, segmentations = self.load(index)
        return video[frame_indices], segmentations[frame_indices].astype(np.int64)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole stored video ``index``: uint8 ``[T, H, W, 3]`` and uint8 ``[T, H, W]``, checked."""
        path = self.split_dir / f"{self.ids[index]}.npz"
        try:
            with np.load(path) as stored:
                video, segmentations = stored["video"], stored["segmentations"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: unreadable ({error}); delete it and re-run the converter") from error
        side = self.resolution
        if video.shape != (self.frames[index], side, side, 3) or video.dtype != np.uint8:
            raise DataError(
                f"{path}: video is {video.dtype} {video.shape}, but {MANIFEST} says uint8 "
                f"{(self.frames[index], side, side, 3)}; delete it and re-run the converter"
            )
        if segmentations.shape != video.shape[:3] or segmentations.dtype != np.uint8:
            raise DataError(
                f"{path}: segmentations are {segmentations.dtype} {segmentations.shape}, video frames "
                f"{video.shape[:3]}; delete it and re-run the converter"
            )
        return video, segmentations


class MoviDataModule(StoredVideoDataModule):
    """MOVi-C, D or E, converted by ``scripts/convert_movi.py`` (see :mod:`ocl.data.movi`).

    Args:
        root: the converted dataset (``<root>/{train,val,test}/index.json``).
        variant: ``movi_c``, ``movi_d`` or ``movi_e``.
        **kwargs: clip lengths, transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`.
    """

    def __init__(self, root: str, variant: str = "movi_c", **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.variant = check_variant(variant)

    def open_source(self, split: str) -> MoviSource:
        return MoviSource(self.root, split, self.variant)
