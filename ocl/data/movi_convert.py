"""MOVi-C/D/E: the one-off conversion of the published TFDS files into ocl's per-video files.

The published layout and the converted format are described in :mod:`ocl.data.movi`, which
reads the converted files at training time; ``scripts/convert_movi.py`` runs :func:`convert_movi`.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import MofNCompleteColumn, Progress

from ocl.data.errors import DataError
from ocl.data.files import read_manifest, write_atomically
from ocl.data.movi import (
    DOWNLOAD,
    FORMAT,
    MANIFEST,
    TFDS_SPLITS,
    TFDS_VERSION,
    check_variant,
    download_hint,
    load_manifest,
)
from ocl.data.tfrecord import Record, iter_records, parse_example

VIDEO_KEY = "video"
SEGMENTATIONS_KEY = "segmentations"
NAME_KEY = "metadata/video_name"
NUM_FRAMES_KEY = "metadata/num_frames"
_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
