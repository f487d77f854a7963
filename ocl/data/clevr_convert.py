"""CLEVR with masks: the one-off conversion of DeepMind's TFRecord file into ocl's per-image files.

The published file, the labels, the splits and the converted format are described in
:mod:`ocl.data.clevr`, which reads the converted files at training time;
``scripts/convert_clevr.py`` runs :func:`convert_clevr`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ocl.data.clevr import (
    FORMAT,
    IMAGE_SIZE,
    MANIFEST,
    PIXEL_COORDS_KEY,
    SPLITS,
    download_hint,
    load_manifest,
)
from ocl.data.errors import DataError
from ocl.data.files import read_manifest, write_atomically
from ocl.data.tfrecord import Record, iter_records, parse_byte_arrays, parse_example

TRAIN_SIZE, VAL_SIZE = 70_000, 15_000
"""Records (before filtering) of the train and val splits; test = the rest of the file."""
IMAGE_KEY, MASK_KEY, VISIBILITY_KEY = "image", "mask", "visibility"


def split_of(position: int, train_size: int, val_size: int) -> str:
    """The split of the record at ``position`` in the file."""
    if position < train_size:
        return "train"
    return "val" if position < train_size + val_size else "test"


def count_objects(record: Record) -> int:
    """Objects in the scene of ``record``: the visible entities other than the background (entity 0)."""
    visibility = parse_example(record, (VISIBILITY_KEY,)).get(VISIBILITY_KEY)
    if not isinstance(visibility, np.ndarray) or visibility.dtype != np.float32 or visibility.size < 1:
        raise DataError(f"{record.where}: no float {VISIBILITY_KEY!r} feature; is this the CLEVR (with masks) file?")
    return int(np.count_nonzero(visibility[1:] > 0))


def decode_example(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """The image of ``record`` as uint8 ``[240, 320, 3]`` and its entity ids uint8 ``[240, 320]``."""
    arrays = parse_byte_arrays(record, (IMAGE_KEY, MASK_KEY))
    height, width = IMAGE_SIZE
    image, masks = arrays.get(IMAGE_KEY), arrays.get(MASK_KEY)
    if image is None or masks is None:
        raise DataError(
            f"{record.where}: no {IMAGE_KEY!r} or {MASK_KEY!r} feature; is this the CLEVR (with masks) file?"
        )
    if image.size != height * width * 3 or masks.size == 0 or masks.size % (height * width):
        raise DataError(
            f"{record.where}: {IMAGE_KEY} has {image.size} bytes and {MASK_KEY} {masks.size}; expected "
            f"{height}*{width}*3 and a multiple of {height}*{width} (one mask per entity); re-download this file"
        )
    ids = masks.reshape(-1, height, width).argmax(axis=0).astype(np.uint8)
    return image.reshape(height, width, 3), ids


def decode_pixel_coords(record: Record) -> np.ndarray:
    """The projected centres of the entities of ``record``: float32 ``[11, 2]``, ``(x, y)`` in pixels
    of the 320 x 240 image (the feature's depth column dropped)."""
    coords = parse_example(record, (PIXEL_COORDS_KEY,)).get(PIXEL_COORDS_KEY)
    if not isinstance(coords, np.ndarray) or coords.dtype != np.float32 or coords.size % 3:
        raise DataError(f"{record.where}: no float {PIXEL_COORDS_KEY!r} feature; is this the CLEVR (with masks) file?")
    return coords.reshape(-1, 3)[:, :2]


def _write_item(path: Path, image: np.ndarray, ids: np.ndarray, pixel_coords: np.ndarray) -> None:
    write_atomically(path, lambda stream: np.savez_compressed(stream, image=image, ids=ids, pixel_coords=pixel_coords))


def _settings(max_objects: int, train_size: int, val_size: int) -> dict[str, int]:
    """What a conversion depends on besides the file (recorded in, and checked against, the manifest)."""
    return {"max_objects": max_objects, "train_size": train_size, "val_size": val_size}


def convert_clevr(
    tfrecord: str | Path,
    out: str | Path,
    max_objects: int = 6,
    train_size: int = TRAIN_SIZE,
    val_size: int = VAL_SIZE,
    progress: bool = True,
) -> dict[str, int]:
    """Convert the published ``clevr_with_masks_train.tfrecords`` into ``out`` (see the module docstring).

    A complete conversion with the same settings is left as it is; an interrupted one resumes.

    Args:
        tfrecord: the downloaded file.
        out: the converted dataset's root (``data.root`` of :class:`ClevrDataModule`).
        max_objects: keep the images with at most this many objects (6: CLEVR6, 10: all).
        train_size, val_size: records (before filtering) of train and val; test = the rest.
        progress: show a progress bar.

    Returns:
        Number of images per split.
    """
    if max_objects < 0 or train_size < 0 or val_size < 0:
        raise ValueError(f"max_objects, train_size and val_size must be >= 0, got {max_objects, train_size, val_size}")
    tfrecord = Path(tfrecord).expanduser()
    if not tfrecord.is_file():
        raise DataError(f"{tfrecord} does not exist; {download_hint()}")
    out = Path(out).expanduser()
    settings = _settings(max_objects, train_size, val_size)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = read_manifest(manifest_path)
        found = {key: manifest.get(key) for key in settings} if isinstance(manifest, dict) else None
        if found is not None and found != settings:
            raise DataError(f"{out} already holds a conversion with {found}, not {settings}: choose another --out")
        try:
            return {split: len(items) for split, items in load_manifest(out, max_objects)["splits"].items()}
        except DataError:
            manifest_path.unlink()  # half-converted: resume, and write the manifest again at the end
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}: {task.completed} records"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"CLEVR{max_objects}", total=None)
        splits, records = _convert_records(tfrecord, out, settings, lambda: bar.advance(task))
    if records <= train_size + val_size:
        raise DataError(
            f"{tfrecord}: only {records} records, but train and val take the first {train_size + val_size}; "
            "is this the complete clevr_with_masks_train.tfrecords (100000 records)?"
        )
    manifest = {"format": FORMAT, "source": tfrecord.name, "records": records, **settings, "splits": splits}
    write_atomically(manifest_path, lambda stream: stream.write(json.dumps(manifest, indent=1).encode()))
    return {split: len(items) for split, items in splits.items()}


def _convert_records(
    tfrecord: Path, out: Path, settings: dict[str, int], advance: Callable[[], object]
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Write the kept images of ``tfrecord`` under ``out``; return the items per split and the number of records."""
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    records = 0
    for position, record in enumerate(iter_records(tfrecord)):
        records += 1
        advance()
        objects = count_objects(record)
        if objects > settings["max_objects"]:
            continue
        split = split_of(position, settings["train_size"], settings["val_size"])
        item_id = f"{position:06d}"
        path = out / split / f"{item_id}.npz"
        if not path.is_file():
            _write_item(path, *decode_example(record), decode_pixel_coords(record))
        splits[split].append({"id": item_id, "num_objects": objects})
    return splits, records
