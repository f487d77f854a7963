"""CLEVR with masks (CLEVR6 / CLEVR10): train from per-image files converted once from DeepMind's
TFRecord file (the conversion: :mod:`ocl.data.clevr_convert`).

**Published data.** ``gs://multi-object-datasets/clevr_with_masks/clevr_with_masks_train.tfrecords``
(https://github.com/deepmind/multi_object_datasets): one GZIP-compressed TFRecord file of 100k
``tf.train.Example`` protos. The dataset's own loader (``clevr_with_masks.py``) parses them as
``FixedLenFeature`` s and decodes the byte features with ``decode_raw``, so raw arrays are
bytes lists of one value per byte (one value holding the whole buffer is read too)::

    image       [240, 320, 3] uint8       RGB
    mask        [11, 240, 320, 1] uint8   one mask per entity (0 / 255); entity 0 = background
    visibility  [11] float32              1 for the entities present in the scene
    pixel_coords [11, 3] float32          each entity's centre projected into the image: x, y (pixels), depth
    x, y, z, rotation, size, material, shape, color: not read

**Labels.** Pixel ids are entity indices: the entity whose mask is largest at the pixel (first
on ties; the masks partition the image), so 0 is the background and k the k-th entity.

**CLEVR6 / CLEVR10.** An image holds ``count(visibility[1:] > 0)`` objects (the visible
entities other than the background). The converter keeps the images with at most
``max_objects``: 6 for CLEVR6 (the Slot Attention / IODINE subset), 10 keeps all (CLEVR10).

**Splits** (ours: the published file has no splits), by position in the file, before filtering:
records ``[0, 70000)`` train, ``[70000, 85000)`` val, ``[85000, 100000)`` test (Slot Attention
trained CLEVR6 on the first 70k images); each then filtered by ``max_objects``.

**Preprocessing** (:class:`ClevrSource`): Slot Attention's crop, rows 29:221 and columns
64:256 (192 x 192, 5 rows below the centre), applied to image and ids; the data module's
transform then resizes to 128 x 128 (``configs/data/clevr6.yaml``: antialiased bilinear
frames, nearest ids).

**Converted format** (:func:`ocl.data.clevr_convert.convert_clevr`, ``scripts/convert_clevr.py``)::

    <out>/<split>/<id>.npz   uint8 image [240, 320, 3], uint8 ids [240, 320] (uncropped; id = record position,
                             6 digits), float32 pixel_coords [11, 2] (each entity's x, y in pixels)
    <out>/index.json         format, source file, max_objects, split bounds, per split its items [{id, num_objects}]

Lossless and random access per image, like MOVi's (:mod:`ocl.data.movi`): a GZIP stream cannot
be read at an offset. Each image file is written atomically and the manifest last; re-running
the converter resumes (images already written are not decoded again). A folder without
manifest, or whose manifest names missing files, is refused with the command that finishes it.

:class:`StillImageSource` (images as one-frame videos, cropped) is shared with
:mod:`ocl.data.clevrtex`.
"""

from __future__ import annotations

import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ocl.data.clips import VideoSource
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.files import load_converted_manifest

DOWNLOAD = "gs://multi-object-datasets/clevr_with_masks/clevr_with_masks_train.tfrecords"
IMAGE_SIZE = (240, 320)
"""(height, width) of the published images."""
CROP = (slice(29, 221), slice(64, 256))
"""Rows and columns kept (Slot Attention's ``crop = ((29, 221), (64, 256))``)."""
SPLITS = ("train", "val", "test")
FORMAT = "ocl-clevr-npz-1"
MANIFEST = "index.json"
PIXEL_COORDS_KEY = "pixel_coords"


class StillImageSource(VideoSource, ABC):
    """Images as one-frame videos, cropped to :meth:`crop_window` when ``crop`` is set."""

    def __init__(self, crop: bool) -> None:
        self.crop = crop

    def num_frames(self, index: int) -> int:
        return 1

    @abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` uncropped: uint8 image ``[H, W, 3]`` and int ids ``[H, W]``."""

    @abstractmethod
    def crop_window(self, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns kept of a ``height x width`` image."""

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (cropped) image repeated for each of ``frame_indices`` (all 0): uint8 ``[T, h, w, 3]``
        and int64 ids ``[T, h, w]``."""
        image, ids = self.load(index)
        if self.crop:
            rows, columns = self.crop_window(*ids.shape)
            image, ids = image[rows, columns], ids[rows, columns]
        frame_indices = np.asarray(frame_indices)
        return image[None][frame_indices], ids[None][frame_indices].astype(np.int64)


def conversion_command(out: str | Path, max_objects: int) -> str:
    """The shell command that converts the published file into ``out`` (see ``scripts/convert_clevr.py``)."""
    tfrecord = f"<dir>/{Path(DOWNLOAD).name}"
    return f"python scripts/convert_clevr.py --tfrecord {tfrecord} --out {out} --max-objects {max_objects}"


def download_hint() -> str:
    """Where the published file is and how to copy it."""
    return f"download {DOWNLOAD} (about 10 GB; e.g. `gsutil cp {DOWNLOAD} <dir>/`)"


def load_manifest(root: Path, max_objects: int, splits: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    """The manifest of a conversion, its ``splits`` checked against the files; DataError if half-converted."""
    path = root / MANIFEST
    rerun = (
        "re-run the converter with the same arguments to finish it (it resumes), e.g. "
        f"`{conversion_command(root, max_objects)}`"
    )
    manifest = load_converted_manifest(root, MANIFEST, FORMAT, "splits", dict, rerun)
    if manifest.get("max_objects") != max_objects:
        raise DataError(
            f"{path}: this folder holds CLEVR images with at most {manifest.get('max_objects')} objects, not "
            f"{max_objects}; point data.root at a conversion made with --max-objects {max_objects}"
        )
    for split in splits:
        items = manifest["splits"].get(split)
        if not isinstance(items, list):
            raise DataError(f"{path}: no {split!r} split; {rerun}")
        present = set(os.listdir(root / split)) if (root / split).is_dir() else set()
        missing = [item["id"] for item in items if f"{item['id']}.npz" not in present]
        if missing:
            raise DataError(
                f"{root} is half-converted: {len(missing)} of {len(items)} {split} images listed in {MANIFEST} "
                f"are missing (e.g. {split}/{missing[0]}.npz); {rerun}"
            )
    return manifest


class ClevrSource(StillImageSource):
    """The converted images of one split (see the module docstring), as one-frame videos.

    Args:
        root: the converted dataset (``<root>/index.json``, ``<root>/<split>/<id>.npz``).
        split: ``train``, ``val`` or ``test``.
        max_objects: the conversion's ``--max-objects`` (checked against the manifest).
        crop: apply Slot Attention's crop (:data:`CROP`).
    """

    def __init__(self, root: str | Path, split: str, max_objects: int = 6, crop: bool = True) -> None:
        super().__init__(crop)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")
        self.root = Path(root).expanduser()
        self.split_dir = self.root / split
        if not self.root.is_dir():
            raise DataError(
                f"CLEVR (with masks) not found: {self.root} does not exist (looked for {self.root / MANIFEST}). "
                f"Convert the published TFRecord file once: {download_hint()}, then run "
                f"`{conversion_command(self.root, max_objects)}`"
            )
        manifest = load_manifest(self.root, max_objects, (split,))
        self.ids = [str(item["id"]) for item in manifest["splits"][split]]
        self.max_objects = max_objects

    def __len__(self) -> int:
        return len(self.ids)

    def video_id(self, index: int) -> str:
        return self.ids[index]

    def crop_window(self, height: int, width: int) -> tuple[slice, slice]:
        return CROP

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored image ``index``: uint8 ``[240, 320, 3]`` and uint8 entity ids ``[240, 320]``, checked."""
        image, ids = self._stored(index, "image", "ids")
        path = self.split_dir / f"{self.ids[index]}.npz"
        if (
            image.shape != (*IMAGE_SIZE, 3)
            or image.dtype != np.uint8
            or ids.shape != IMAGE_SIZE
            or ids.dtype != np.uint8
        ):
            raise DataError(
                f"{path}: image is {image.dtype} {image.shape} and ids {ids.dtype} {ids.shape}, expected uint8 "
                f"{(*IMAGE_SIZE, 3)} and {IMAGE_SIZE}; delete it and re-run the converter"
            )
        return image, ids

    def object_points(self, index: int) -> np.ndarray:
        """The projected centres of image ``index``'s objects: float32 ``[10, 2]``, row ``k - 1``
        the ``(x, y)`` of entity ``k`` in ``[-0.5, 0.5]`` of the (cropped) image, NaN where the
        entity has no pixel (SLASH's CLEVR labels: ``pixel_coords / (W, H) - 0.5``)."""
        coords, ids = self._stored(index, PIXEL_COORDS_KEY, "ids")
        rows, columns = self.crop_window(*ids.shape) if self.crop else (slice(0, ids.shape[0]), slice(0, ids.shape[1]))
        ids = ids[rows, columns]
        origin = np.array([columns.start, rows.start], np.float32)
        size = np.array([ids.shape[1], ids.shape[0]], np.float32)
        points = (coords[1:] - origin) / size - 0.5
        present = np.isin(np.arange(1, len(coords)), ids)
        return np.where(present[:, None], points, np.nan).astype(np.float32)

    def _stored(self, index: int, *keys: str) -> list[np.ndarray]:
        """The arrays ``keys`` of the stored image ``index``."""
        path = self.split_dir / f"{self.ids[index]}.npz"
        try:
            with np.load(path) as stored:
                if PIXEL_COORDS_KEY in keys and PIXEL_COORDS_KEY not in stored:
                    raise DataError(
                        f"{path}: converted without the objects' {PIXEL_COORDS_KEY} (SLASH's point labels); "
                        f"convert again into a new folder: `{conversion_command('<new root>', self.max_objects)}`"
                    )
                return [stored[key] for key in keys]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: unreadable ({error}); delete it and re-run the converter") from error


class ClevrDataModule(StoredVideoDataModule):
    """CLEVR6 (or CLEVR10), converted by ``scripts/convert_clevr.py`` (see :mod:`ocl.data.clevr`), as
    one-frame videos.

    Args:
        root: the converted dataset (``<root>/index.json``).
        max_objects: the conversion's ``--max-objects`` (6: CLEVR6, 10: CLEVR10).
        crop: apply Slot Attention's 192 x 192 crop before the transforms.
        **kwargs: clip lengths (1: images), transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`.
    """

    def __init__(self, root: str, max_objects: int = 6, crop: bool = True, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.max_objects = max_objects
        self.crop = crop

    def open_source(self, split: str) -> ClevrSource:
        return ClevrSource(self.root, split, self.max_objects, self.crop)

    def projected_points(self) -> Callable[[int], np.ndarray]:
        """The training images' projected object centres (:meth:`ClevrSource.object_points`). The
        training transform must keep normalised coordinates (a resize, no flip)."""
        transform = self.train_transform
        if transform is not None and (transform.mode not in ("resize", "none") or transform.horizontal_flip):
            raise ValueError(
                f"projected point labels need a training transform that only resizes, not mode={transform.mode} "
                f"horizontal_flip={transform.horizontal_flip}"
            )
        return self._dataset(self.train_set, "train").source.object_points
