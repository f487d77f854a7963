"""Tiny YouTube-VIS (2019, 2021), YouTube-VOS (train frames) and DAVIS-2017 folders in their published formats.

Each writer returns what a reader must give back: the frames as PIL decodes the written JPEGs
(uint8 ``[T, H, W, 3]``) and the expected instance ids (int64 ``[T, H, W]``, 0 background,
``IGNORE_ID`` for overlaps / void), built from the boolean object masks, not from the files
(YouTube-VOS: frames only, its labels are not read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from ocl.contracts.batch import IGNORE_ID, validate_batch


@dataclass
class FixtureVideo:
    """A written video: its id in batches, decoded frames ``[T, H, W, 3]`` and expected ids ``[T, H, W]``."""

    name: str
    frames: np.ndarray
    masks: np.ndarray


@dataclass
class YTVISFixture:
    """A written YouTube-VIS folder: ``root`` (data.root), its train JSON and videos in JSON order."""

    root: Path
    version: int
    json_path: Path
    videos: list[FixtureVideo]

    def jpeg(self, video: int, frame: int) -> Path:
        """Path of a frame listed in the JSON."""
        return self.root / "train" / "JPEGImages" / self.videos[video].name / f"{5 * frame:05d}.jpg"

    def edit_json(self, edit) -> None:
        """Rewrite the JSON after ``edit(data)`` changed it in place."""
        data = json.loads(self.json_path.read_text())
        edit(data)
        self.json_path.write_text(json.dumps(data))


def write_jpeg(path: Path, frame: np.ndarray) -> np.ndarray:
    """Save uint8 ``[H, W, 3]`` as a JPEG (quality 100); return the pixels PIL decodes from it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, quality=100)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def random_frames(rng: np.random.Generator, length: int, height: int, width: int) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: smooth colour ramps plus noise (so resizing has something to do)."""
    ramp = np.linspace(0, 160, width)[None, None, :, None] + np.linspace(0, 60, height)[None, :, None, None]
    noise = rng.integers(0, 90, (length, height, width, 3))
    return (ramp + noise).clip(0, 255).astype(np.uint8)


def box(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """bool ``[H, W]``, true on rows ``top:bottom`` and columns ``left:right``."""
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def compressed_rle(mask: np.ndarray) -> dict:
    """The COCO compressed RLE of a bool mask, ``counts`` as a str (as in the YouTube-VIS JSONs)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """The COCO uncompressed RLE of a bool mask: run lengths in column-major order, zeros first."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def box_polygon(top: int, left: int, bottom: int, right: int) -> list[list[float]]:
    """A COCO polygon that pycocotools rasterises to ``box(.., top, left, bottom, right)``."""
    return [
        [float(left), float(top), float(right), float(top), float(right), float(bottom), float(left), float(bottom)]
    ]


def _labels(objects: list[list[np.ndarray | None]], length: int, height: int, width: int) -> np.ndarray:
    """Expected ids ``[T, H, W]``: object m (1-based) is m, pixels of several objects IGNORE_ID."""
    labels = np.zeros((length, height, width), np.int64)
    coverage = np.zeros((length, height, width), np.int64)
    for instance, track in enumerate(objects, start=1):
        for t, mask in enumerate(track):
            if mask is not None:
                labels[t][mask] = instance
                coverage[t] += mask
    labels[coverage > 1] = IGNORE_ID
    return labels


def write_ytvis(root: Path, version: int, seed: int = 0) -> YTVISFixture:
    """A YouTube-VIS ``version`` (2019 or 2021) folder with four videos, in its official layout.

    Videos (JSON order): ``v0`` 4 frames 24x32, a compressed RLE object and an uncompressed RLE
    object that overlaps it and is absent (null) in frame 2, plus an unlisted extra JPEG in its
    folder (as in the all-frames download); ``v1`` 3 frames, a polygon object and a mixed
    RLE/polygon object absent in frame 0; ``v2`` 5 frames 32x24, no objects; ``v3`` 3 frames,
    one irregular compressed RLE object. Annotations of v0 and v1 are interleaved in the JSON.
    """
    rng = np.random.default_rng(seed)
    image_dir = root / "train" / "JPEGImages"
    json_path = root / ("train.json" if version == 2019 else "train/instances.json")
    specs = [("0a1b2c3d4e", 4, 24, 32), ("1b2c3d4e5f", 3, 24, 32), ("2c3d4e5f6a", 5, 32, 24), ("3d4e5f6a7b", 3, 24, 32)]
    videos, records = [], []
    for position, (name, length, height, width) in enumerate(specs):
        file_names = [f"{name}/{5 * t:05d}.jpg" for t in range(length)]
        frames = np.stack(
            [
                write_jpeg(image_dir / f, frame)
                for f, frame in zip(file_names, random_frames(rng, length, height, width))
            ]
        )
        videos.append((name, frames))
        records.append(
            {"id": 11 + position, "width": width, "height": height, "length": length, "file_names": file_names}
        )
    write_jpeg(image_dir / "0a1b2c3d4e" / "00001.jpg", random_frames(rng, 1, 24, 32)[0])

    def shifted(t: int, top: int, left: int, size: tuple[int, int] = (8, 10)) -> np.ndarray:
        return box(24, 32, top + t, left + 2 * t, top + t + size[0], left + 2 * t + size[1])

    v0_a = [shifted(t, 2, 2) for t in range(4)]
    v0_b = [shifted(t, 6, 8) if t != 2 else None for t in range(4)]
    v1_a = [(2, 3 + t, 10, 12 + t) for t in range(3)]
    v1_b = [None, box(24, 32, 14, 18, 22, 30), (12, 2, 20, 9)]
    v3_a = [rng.random((24, 32)) < 0.3 for _ in range(3)]
    annotations = [
        {"id": 1, "video_id": 11, "segmentations": [compressed_rle(m) for m in v0_a]},
        {"id": 2, "video_id": 12, "segmentations": [box_polygon(*b) for b in v1_a]},
        {"id": 3, "video_id": 11, "segmentations": [None if m is None else uncompressed_rle(m) for m in v0_b]},
        {"id": 4, "video_id": 12, "segmentations": [None, compressed_rle(v1_b[1]), box_polygon(*v1_b[2])]},
        {"id": 5, "video_id": 14, "segmentations": [compressed_rle(m) for m in v3_a]},
    ]
    for annotation in annotations:
        video = records[annotation["video_id"] - 11]
        annotation.update(category_id=1, iscrowd=0, height=video["height"], width=video["width"])
    json_path.parent.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 1, "name": "person", "supercategory": "object"}]
    json_path.write_text(
        json.dumps({"info": {}, "videos": records, "annotations": annotations, "categories": categories})
    )

    objects = [
        [v0_a, v0_b],
        [[box(24, 32, *b) for b in v1_a], [None, v1_b[1], box(24, 32, *v1_b[2])]],
        [],
        [v3_a],
    ]
    fixture_videos = [
        FixtureVideo(name, frames, _labels(tracks, *frames.shape[:3]))
        for (name, frames), tracks in zip(videos, objects)
    ]
    return YTVISFixture(root, version, json_path, fixture_videos)


DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0, 0, 0] * 250 + [224, 224, 192]
"""The start of the DAVIS palette (index 255: the void colour)."""


@dataclass
class DavisFixture:
    """A written DAVIS folder (``root`` = the ``DAVIS`` folder) and its sequences per split."""

    root: Path
    splits: dict[str, list[FixtureVideo]]

    def jpeg(self, sequence: str, frame: int) -> Path:
        return self.root / "JPEGImages" / "480p" / sequence / f"{frame:05d}.jpg"

    def png(self, sequence: str, frame: int) -> Path:
        return self.root / "Annotations" / "480p" / sequence / f"{frame:05d}.png"


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """Save uint8 ids ``[H, W]`` as a palette ("P") PNG, as DAVIS annotations are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(DAVIS_PALETTE)
    image.save(path)


def write_davis(root: Path, seed: int = 0) -> DavisFixture:
    """A DAVIS-2017 trainval folder: train ``bear`` (3 frames), ``boat`` (4, 32x24); val ``camel``
    (3, void pixels around its object), ``dogs`` (2, two objects, object 2 absent in frame 0)."""
    rng = np.random.default_rng(seed)
    specs = {"train": [("bear", 3, 24, 32), ("boat", 4, 32, 24)], "val": [("camel", 3, 24, 32), ("dogs", 2, 24, 32)]}
    splits: dict[str, list[FixtureVideo]] = {}
    for split, sequences in specs.items():
        splits[split] = []
        for name, length, height, width in sequences:
            ids = np.zeros((length, height, width), np.uint8)
            for t in range(length):
                ids[t][box(height, width, 3 + t, 4, 12 + t, 14)] = 1
                if name == "camel":
                    ids[t][box(height, width, 2 + t, 3, 3 + t, 15)] = 255
                if name == "dogs" and t > 0:
                    ids[t][box(height, width, 14, 16, 20, 28)] = 2
            frames = []
            for t, frame in enumerate(random_frames(rng, length, height, width)):
                frames.append(write_jpeg(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame))
                write_palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", ids[t])
            masks = np.where(ids == 255, IGNORE_ID, ids.astype(np.int64))
            splits[split].append(FixtureVideo(name, np.stack(frames), masks))
        image_set = root / "ImageSets" / "2017" / f"{split}.txt"
        image_set.parent.mkdir(parents=True, exist_ok=True)
        image_set.write_text("".join(f"{name}\n" for name, *_ in sequences))
    return DavisFixture(root, splits)


def write_davis_unsupervised(fixture: DavisFixture) -> dict[str, np.ndarray]:
    """Add the unsupervised task's labels to a written DAVIS folder, as its separate download
    (``DAVIS-2017-Unsupervised-trainval-480p.zip``) lays them out: ``Annotations_unsupervised/480p/
    <sequence>/<frame:05d>.png`` palette PNGs. Every sequence gets other ids than in ``Annotations``:
    object 1 a block in the top-left corner, object 2 the semi-supervised object 1, void kept.
    Returns the expected ids ``[T, H, W]`` per sequence."""
    expected = {}
    for videos in fixture.splits.values():
        for video in videos:
            ids = np.where(video.masks == 1, 2, video.masks)
            ids[:, :3, :3] = 1
            for t, frame in enumerate(ids):
                path = fixture.root / "Annotations_unsupervised" / "480p" / video.name / f"{t:05d}.png"
                write_palette_png(path, np.where(frame == IGNORE_ID, 255, frame))
            expected[video.name] = ids
    return expected


HEIGHT, WIDTH = 48, 64


def block_frames(seed: int, length: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: random colours in 8 x 8 blocks, which survive h264 nearly intact."""
    blocks = np.random.default_rng(seed).integers(0, 256, (length, height // 8, width // 8, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((1, 8, 8, 1), dtype=np.uint8))


def write_mp4(
    path: Path, frames: np.ndarray, lossless: bool = True, keyframe_interval: int = 250, faststart: bool = False
) -> Path:
    """Encode ``frames`` as h264 with PyAV: lossless 4:4:4, or 4:2:0 with B-frames (as cameras write)."""
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else "4", "g": str(keyframe_interval), "bf": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def assert_train_samples_match(dataset, videos: list[FixtureVideo], transform) -> None:
    """Random clips (``dataset.sample(i, rng)``) equal ``transform`` of the written frames the clip names."""
    assert [dataset.source.video_id(i) for i in range(len(dataset))] == [v.name for v in videos]
    for index, video in enumerate(videos):
        for seed in range(3):
            item = dataset.sample(index, np.random.default_rng(seed))
            frame_indices = item["meta"]["frame_indices"].numpy()
            rng = np.random.default_rng(seed)
            assert np.array_equal(dataset.clip_frames(index, rng), frame_indices)  # same draws as sample's
            frames, masks = transform(video.frames[frame_indices], video.masks[frame_indices], rng)
            assert item["meta"]["video_id"] == video.name
            assert len(frame_indices) == dataset.clip_length and np.all(np.diff(frame_indices) == 1)
            torch.testing.assert_close(item["video"], frames, rtol=0, atol=0)
            if dataset.labels:  # data.train_masks
                assert torch.equal(item["masks"], masks)
            else:
                assert "masks" not in item


def assert_whole_video_batches_match(loader, videos: list[FixtureVideo], transform) -> None:
    """Whole-video batches of one video equal ``transform`` of everything written; they pass the contract."""
    batches = list(loader)
    assert len(batches) == len(videos)
    for batch, video in zip(batches, videos, strict=True):
        validate_batch(batch)
        frames, masks = transform(video.frames, video.masks, None)
        assert batch["meta"]["video_id"] == [video.name]
        assert torch.equal(batch["meta"]["frame_indices"], torch.arange(len(video.frames))[None])
        torch.testing.assert_close(batch["video"][0], frames, rtol=0, atol=0)
        assert torch.equal(batch["masks"][0], masks)


YTVOS_VIDEOS = {
    "2c3d4e5f6a": (13, 24, 32),
    "0a1b2c3d4e": (14, 24, 32),
    "3d4e5f6a7b": (13, 24, 32),
    "1b2c3d4e5f": (5, 32, 24),
}
"""Video id -> (stored frames, height, width) of :func:`write_ytvos_train`, in writing (not id) order."""


@dataclass
class YTVOSFixture:
    """A written YouTube-VOS ``train`` folder (``root`` = data.root) and the decoded frames ``[T, H, W, 3]`` per id."""

    root: Path
    frames: dict[str, np.ndarray]

    def jpeg(self, video: str, frame: int) -> Path:
        """Path of stored frame ``frame`` (named by its index in the 30 fps video, every 5th)."""
        return self.root / "JPEGImages" / video / f"{5 * frame:05d}.jpg"


def write_ytvos_train(root: Path, seed: int = 0) -> YTVOSFixture:
    """The ``train`` folder of YouTube-VOS ``train.zip``: ``JPEGImages/<id>/00000.jpg, 00005.jpg, ...``,
    palette PNGs in ``Annotations/<id>/`` (one object box per frame) and ``meta.json``, for the videos of
    :data:`YTVOS_VIDEOS`. With 4-frame clips 4 stored frames apart (span 13), ``1b2c3d4e5f`` is too short."""
    rng = np.random.default_rng(seed)
    frames, meta = {}, {}
    for name, (length, height, width) in YTVOS_VIDEOS.items():
        written = []
        for t, frame in enumerate(random_frames(rng, length, height, width)):
            written.append(write_jpeg(root / "JPEGImages" / name / f"{5 * t:05d}.jpg", frame))
            ids = box(height, width, 2 + t % 4, 3, 12, 14).astype(np.uint8)
            write_palette_png(root / "Annotations" / name / f"{5 * t:05d}.png", ids)
        frames[name] = np.stack(written)
        stems = [f"{5 * t:05d}" for t in range(length)]
        meta[name] = {"objects": {"1": {"category": "person", "frames": stems}}}
    (root / "meta.json").write_text(json.dumps({"videos": meta}))
    return YTVOSFixture(root, frames)
