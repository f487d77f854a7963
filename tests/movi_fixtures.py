"""Write small MOVi datasets in the exact published TFDS layout (for tests; no TensorFlow).

Layout and encodings as in ``gs://kubric-public/tfds/movi_c/128x128/1.0.0`` (built by Kubric's
``challenges/movi/movi_c.py`` with TFDS's example serializer): nested features flattened with
``/``, ``video`` and ``segmentations`` as lists of PNGs (RGB, and single-channel uint8), ``depth``
as 16-bit PNGs, ``forward_flow`` (uint16 tensors) as int64 lists, ragged instance features as
``ragged_flat_values`` + ``ragged_row_lengths_0``, text as bytes, numbers as int64/float lists.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tfrecord_writer import encode_example, write_records

TFDS_NAMES = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class FixtureVideo:
    """What a fixture example holds: ``video`` uint8 ``[T, H, W, 3]``, ``segmentations`` uint8 ``[T, H, W]``."""

    video_id: str
    video: np.ndarray
    segmentations: np.ndarray


def png(array: np.ndarray) -> bytes:
    """``array`` (uint8 ``[H, W, 3]`` / ``[H, W]``, or uint16 ``[H, W]``) as PNG bytes."""
    stream = io.BytesIO()
    Image.fromarray(array).save(stream, format="PNG")
    return stream.getvalue()


def random_video(rng: np.random.Generator, video_id: str, frames: int, size: int, objects: int = 3) -> FixtureVideo:
    """Noise frames and ``objects`` moving rectangles as instance ids ``1..objects``."""
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    segmentations = np.zeros((frames, size, size), np.uint8)
    for instance in range(1, objects + 1):
        top, left = rng.integers(0, size // 2, 2)
        for t in range(frames):
            segmentations[t, top + t : top + t + size // 3, left : left + size // 3] = instance
    return FixtureVideo(video_id, video, segmentations)


def movi_example(
    item: FixtureVideo, num_frames: int | None = None, mask_frames: int | None = None, name: bytes | None = None
) -> bytes:
    """A serialized MOVi ``tf.train.Example`` holding ``item`` and a few of the other published features.

    ``num_frames`` overrides ``metadata/num_frames``; ``mask_frames`` keeps only that many
    segmentation frames; ``name`` overrides ``metadata/video_name`` (to write broken examples).
    """
    frames, size = item.video.shape[:2]
    masks = item.segmentations[:mask_frames]
    objects = int(item.segmentations.max())
    depth = (np.arange(frames * size * size, dtype=np.uint16).reshape(frames, size, size) * 7) % 65535
    return encode_example(
        {
            "video": [png(frame) for frame in item.video],
            "segmentations": [png(mask) for mask in masks],
            "metadata/video_name": [name if name is not None else item.video_id.encode()],
            "metadata/num_frames": [num_frames or frames],
            "metadata/height": [size],
            "metadata/width": [size],
            "metadata/num_instances": [objects],
            "metadata/depth_range": np.array([0.5, 30.0], np.float32),
            "metadata/forward_flow_range": np.array([-3.0, 4.0], np.float32),
            "background": [b"sky_hdri"],
            "depth": [png(layer) for layer in depth],
            "forward_flow": np.full(frames * size * size * 2, 32768, np.int64),
            "instances/mass": np.linspace(0.5, 2.0, objects).astype(np.float32),
            "instances/asset_id": [f"asset_{k}".encode() for k in range(objects)],
            "instances/category": np.arange(objects, dtype=np.int64),
            "instances/bboxes/ragged_flat_values": np.zeros(objects * frames * 4, np.float32),
            "instances/bboxes/ragged_row_lengths_0": np.full(objects, frames, np.int64),
            "camera/focal_length": np.array([35.0], np.float32),
            "camera/positions": np.zeros(frames * 3, np.float32),
            "events/collisions/frame": np.array([1, 3], np.int64),
        }
    )


def write_movi_tfds(
    root: Path,
    variant: str = "movi_c",
    size: int = 32,
    frames: int = 5,
    shards: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, list[FixtureVideo]]]:
    """Write ``<root>/<variant>/<size>x<size>/1.0.0`` with ``shards[split]`` videos per shard.

    Returns the version folder and, per split (our names), the videos in record order.
    """
    shards = shards if shards is not None else {"train": [2, 1], "val": [2], "test": [1]}
    version_dir = root / variant / f"{size}x{size}" / "1.0.0"
    version_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written: dict[str, list[FixtureVideo]] = {}
    split_infos = []
    for split, lengths in shards.items():
        tfds_split = TFDS_NAMES[split]
        written[split] = []
        for index, length in enumerate(lengths):
            first = len(written[split])
            items = [random_video(rng, str(7 + 11 * (first + k)), frames, size) for k in range(length)]
            name = f"{variant}-{tfds_split}.tfrecord-{index:05d}-of-{len(lengths):05d}"
            write_records(version_dir / name, [movi_example(item) for item in items])
            written[split].extend(items)
        split_infos.append({"name": tfds_split, "numBytes": "0", "shardLengths": [str(n) for n in lengths]})
    info = {
        "name": variant,
        "version": "1.0.0",
        "configName": f"{size}x{size}",
        "configDescription": "fixture",
        "moduleName": f"{variant}.{variant}",
        "splits": split_infos,
    }
    (version_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    features = {
        "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
        "featuresDict": {"features": {"video": {"pythonClassName": "tensorflow_datasets.core.features.Video"}}},
    }
    (version_dir / "features.json").write_text(json.dumps(features))
    return version_dir, written
