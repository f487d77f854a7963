"""CLEVRTex (Karazija et al. 2021), read from the unpacked download as it is.

**Published data.** The archives of the project page (https://www.robots.ox.ac.uk/~vgg/data/clevrtex/)
unpack to ``clevrtex_<variant>/<bucket>/`` folders (``variant``: ``full`` for the main dataset;
``pbg``, ``vbg``, ``grassbg``, ``camo`` for the variants), each image numbered ``<n>``
(6 digits, 0 to N-1 over all buckets) with three files, as the authors' loader
(``clevrtex_eval.py``) reads them::

    CLEVRTEX_<variant>_<n>.png        the image, 240 x 320 (RGBA: the alpha channel is dropped)
    CLEVRTEX_<variant>_<n>_flat.png   the mask: a palette ("P") PNG whose pixel values are object ids
    CLEVRTEX_<variant>_<n>.json       the scene's metadata (not read)

``data.root`` is the ``clevrtex_<variant>`` folder or the folder holding it.

**Labels.** Mask pixel value k = object k (in the metadata's object order), 0 = background;
3 to 10 objects per image.

**Splits** (the authors' loader): by image number, the first 10% test, the next 10% val, the
rest train (``int(0.1 N)``, ``int(0.2 N)``: for N = 50000, 0-4999 test, 5000-9999 val, 10000-49999 train).

**Preprocessing** (the authors' loader): a centre crop of 0.8 x the short side (192 x 192:
rows 24:216, columns 64:256), applied to image and mask; the data module's transform then
resizes to 128 x 128 (``configs/data/clevrtex.yaml``: antialiased bilinear frames, nearest ids).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ocl.data.clevr import StillImageSource
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.images import read_palette_indices, read_rgb

PROJECT_PAGE = "https://www.robots.ox.ac.uk/~vgg/data/clevrtex/"
VARIANTS = ("full", "pbg", "vbg", "grassbg", "camo")
SPLIT_FRACTIONS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}
"""Each split's first and end image number, as fractions of the number of images."""
CROP_FRACTION = 0.8
"""Side of the centre crop, as a fraction of the short side."""
MASK_SUFFIX = "_flat.png"


def check_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else ValueError."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown CLEVRTex variant {variant!r}; known: {list(VARIANTS)}")
    return variant


def variant_folder(root: str | Path, variant: str) -> Path:
    """The ``clevrtex_<variant>`` folder: ``root`` itself or its child; DataError naming it if absent."""
    root = Path(root).expanduser()
    name = f"clevrtex_{variant}"
    folder = root if root.name == name else root / name
    if not folder.is_dir():
        raise DataError(
            f"CLEVRTex {variant} not found: {folder} does not exist. Download the clevrtex_{variant} archives "
            f"from {PROJECT_PAGE} and unpack them into {root} (or point data.root, or OCL_DATA_ROOT, at them)"
        )
    return folder


def index_images(folder: Path, variant: str) -> list[Path]:
    """The image files under ``folder`` (any depth), by number: entry n is ``CLEVRTEX_<variant>_<n>.png``.

    Raises DataError naming the file if a number in 0..N-1 or a mask is missing.
    """
    pattern = re.compile(rf"^CLEVRTEX_{re.escape(variant)}_(\d{{6}})\.png$")
    images: dict[int, Path] = {}
    for directory, _, names in os.walk(folder):
        present = set(names)
        for name in names:
            match = pattern.match(name)
            if match is None:
                continue
            path = Path(directory) / name
            if name.replace(".png", MASK_SUFFIX) not in present:
                raise DataError(f"{path.with_name(name.replace('.png', MASK_SUFFIX))} (the mask of {name}) is missing")
            images[int(match.group(1))] = path
    if not images:
        raise DataError(f"{folder} holds no CLEVRTEX_{variant}_<n>.png images; unpack the archives from {PROJECT_PAGE}")
    missing = sorted(set(range(max(images) + 1)) - images.keys())
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} of images 0..{max(images)} are missing "
            f"(e.g. CLEVRTEX_{variant}_{missing[0]:06d}.png); the download is incomplete: unpack every archive"
        )
    return [images[number] for number in range(len(images))]


class ClevrTexSource(StillImageSource):
    """The images of one CLEVRTex split (see the module docstring), as one-frame videos.

    Args:
        root: the ``clevrtex_<variant>`` folder, or the folder holding it.
        split: ``train``, ``val`` or ``test``.
        variant: ``full`` (CLEVRTex), or ``pbg``, ``vbg``, ``grassbg``, ``camo``.
        crop: apply the authors' centre crop (:data:`CROP_FRACTION` of the short side).
    """

    def __init__(self, root: str | Path, split: str, variant: str = "full", crop: bool = True) -> None:
        super().__init__(crop)
        check_variant(variant)
        if split not in SPLIT_FRACTIONS:
            raise ValueError(f"unknown split {split!r}; known: {list(SPLIT_FRACTIONS)}")
        images = index_images(variant_folder(root, variant), variant)
        start, end = (int(fraction * len(images)) for fraction in SPLIT_FRACTIONS[split])
        self.images = images[start:end]

    def __len__(self) -> int:
        return len(self.images)

    def video_id(self, index: int) -> str:
        return self.images[index].stem

    def crop_window(self, height: int, width: int) -> tuple[slice, slice]:
        side = int(CROP_FRACTION * min(height, width))
        return slice((height - side) // 2, (height + side) // 2), slice((width - side) // 2, (width + side) // 2)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` uncropped: uint8 ``[H, W, 3]`` and uint8 object ids ``[H, W]``."""
        path = self.images[index]
        image = read_rgb(path)
        mask_path = path.with_name(path.name.replace(".png", MASK_SUFFIX))
        ids = read_palette_indices(mask_path, "CLEVRTex masks")  # _flat.png: palette indices = object ids
        if ids.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path} is {ids.shape[0]}x{ids.shape[1]} (HxW) but its image {path.name} is "
                f"{image.shape[0]}x{image.shape[1]}"
            )
        return image, ids


class ClevrTexDataModule(StoredVideoDataModule):
    """CLEVRTex (see :mod:`ocl.data.clevrtex`), read from the unpacked download, as one-frame videos.

    Args:
        root: the ``clevrtex_<variant>`` folder, or the folder holding it.
        variant: ``full``, ``pbg``, ``vbg``, ``grassbg`` or ``camo``.
        crop: apply the authors' 192 x 192 centre crop before the transforms.
        **kwargs: clip lengths (1: images), transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`.
    """

    def __init__(self, root: str, variant: str = "full", crop: bool = True, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.variant = check_variant(variant)
        self.crop = crop

    def open_source(self, split: str) -> ClevrTexSource:
        return ClevrTexSource(self.root, split, self.variant, self.crop)
