"""MOVi-C/D/E (Kubric): train from per-video files converted once from the published TFDS files
(the conversion: :mod:`ocl.data.movi_convert`).

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

**Converted format** (:func:`ocl.data.movi_convert.convert_movi`, ``scripts/convert_movi.py``)::

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

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocl.data.clips import VideoSource
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.files import load_converted_manifest

VARIANTS = ("movi_c", "movi_d", "movi_e")
PUBLISHED_RESOLUTIONS = (128, 256)
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}
"""Our split name -> the TFDS split it is converted from."""
TFDS_VERSION = "1.0.0"
DOWNLOAD = "gs://kubric-public/tfds"
FORMAT = "ocl-movi-npz-1"
MANIFEST = "index.json"


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
