"""CLEVR (with masks) fixtures in the published format: a GZIP TFRecord of ``tf.train.Example`` s
with the features of DeepMind's ``clevr_with_masks.py`` (``image`` [240, 320, 3] and ``mask``
[11, 240, 320, 1] as bytes lists of one value per byte, ``visibility`` [11] floats, and the
per-entity features the reader ignores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tfrecord_writer import encode_example, write_records

HEIGHT, WIDTH, ENTITIES = 240, 320, 11


def box(entity: int) -> tuple[int, int]:
    """``(top, left)`` of entity ``entity``'s 30 x 40 box in :func:`scene`."""
    return 20 + 25 * entity, 10 + 28 * entity


def pixel_coords() -> np.ndarray:
    """float32 ``[11, 3]``: each entity's ``pixel_coords`` (x, y, depth): the centre of its box."""
    coords = np.zeros((ENTITIES, 3), np.float32)
    for entity in range(1, ENTITIES):
        top, left = box(entity)
        coords[entity] = (left + 20, top + 15, 10.0 + entity)
    return coords


def scene(rng: np.random.Generator, objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise image uint8 ``[240, 320, 3]`` and entity ids ``[240, 320]``: ``objects`` boxes (ids 1..objects)."""
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    ids = np.zeros((HEIGHT, WIDTH), np.uint8)
    for entity in range(1, objects + 1):
        top, left = box(entity)
        ids[top : top + 30, left : left + 40] = entity
    ids[29, 64], ids[28, 64], ids[220, 255], ids[221, 255] = (
        9,
        10,
        9,
        10,
    )  # first / last pixels in, and out of, the crop
    return image, ids


def clevr_example(image: np.ndarray, ids: np.ndarray, objects: int, whole_buffer: bool = False) -> bytes:
    """A serialized CLEVR (with masks) Example; ``whole_buffer``: raw arrays as one bytes value each."""
    masks = (np.arange(ENTITIES)[:, None, None] == ids[None]).astype(np.uint8)[..., None] * 255  # [11, H, W, 1]
    visibility = (np.arange(ENTITIES) <= objects).astype(np.float32)
    per_entity = np.zeros(ENTITIES, np.uint8)
    arrays = {"image": image, "mask": masks, "color": per_entity, "material": per_entity, "shape": per_entity}
    features = {key: [value.tobytes()] if whole_buffer else value.view("S1") for key, value in arrays.items()}
    floats = {key: np.linspace(-3, 3, ENTITIES).astype(np.float32) for key in ("x", "y", "z", "rotation")}
    return encode_example(
        {
            **features,
            "size": per_entity.view("S1"),
            "visibility": visibility,
            "pixel_coords": pixel_coords().flatten(),
            **floats,
        }
    )


def write_clevr_tfrecord(
    path: Path, objects: list[int], seed: int = 0, whole_buffer_index: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write ``clevr_with_masks_train.tfrecords`` (GZIP) at ``path``, one record per entry of
    ``objects`` (its object count); record ``whole_buffer_index`` stores raw arrays as one bytes
    value each. -> the (image, ids) of each record."""
    rng = np.random.default_rng(seed)
    scenes = [scene(rng, count) for count in objects]
    examples = [
        clevr_example(*item, count, whole_buffer=k == whole_buffer_index)
        for k, (item, count) in enumerate(zip(scenes, objects, strict=True))
    ]
    write_records(path, examples, compression="gzip")
    return scenes
