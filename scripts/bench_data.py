"""Data-loading throughput: each data module's training loader vs the clips/s a training step consumes.

No dataset is needed: stand-ins of realistic size are written first (under ``--workdir`` or the
system's temporary folder, deleted at the end), in each dataset's published format:

- ``movi_c``: TFDS records at the published 128x128, 24 frames (``tests/movi_fixtures.py``; noise
  frames, so the converted files hardly compress), converted with :func:`ocl.data.movi.convert_movi`;
- ``ytvis2021``: 720x1280 JPEGs (quality 90) and ``train/instances.json`` with compressed RLE masks;
- ``davis2017``: 480x854 JPEGs and palette PNG annotations;
- ``video_files``: 480x854 h264 mp4s (30 fps, 4:2:0, B-frames, a keyframe every 2 s, CRF 20);
- ``synthetic``: the embedded procedural videos (generated on first access, not cached yet).

For each data module at the config of an experiment (``data.num_workers=2``, ``--batch-size``,
random encoder weights) it times the training loader (``train_dataloader()``, as a trainer with
``max_steps`` gets it) after one warm-up batch per worker, and training steps (forward, loss,
backward, clipping, optimiser and schedule step: ``bench_train_step.hand_written``) on clips of
the loader's first batch, in fp32 on this CPU at the fastest of ``--threads`` torch thread counts.
The loader should deliver at least 3x the clips/s the step consumes. It also times the two
stages of a loader item in this process on one thread (``read``: decoding; ``transform``:
resize/crop to the encoder's size), and decord against PyAV on the same mp4: random 4-frame
clips and whole videos read in order.

    python scripts/bench_data.py [--videos 16] [--only movi_c ytvis2021 ...] [--workdir DIR]
    python scripts/bench_data.py --quick    # tiny data and models: a smoke test (~10 s)

The step demand measured here is a CPU's: a GPU steps far faster, so the ratios printed are
not those of a GPU run (which are not measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import decord
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the dataset writers of the test fixtures

from bench_train_step import hand_written  # scripts/, this file's folder, is on sys.path
from movi_fixtures import write_movi_tfds
from video_fixtures import compressed_rle, write_palette_png

from ocl.data.clips import ClipDataset
from ocl.data.datamodule import VideoDataModule
from ocl.data.movi import convert_movi
from ocl.data.video_files import read_clip, read_clip_pyav

DATASETS = ("synthetic", "movi_c", "ytvis2021", "davis2017", "video_files")
DECODERS = "decoders"
TARGET = 3.0
"""Loader clips/s over step clips/s that the issue asks for."""
RANDOM_ENCODER = "model.encoder.weights=random"
TINY_FEATURE_MODEL = ("model/encoder=vit_synthetic", "model.encoder.image_size=32", "model.decoder.hidden_dims=[32]")
"""``--quick``: the DINO-feature configs with a tiny ViT at 32x32 and a tiny decoder."""
QUICK = {
    "videos": 3,
    "frames": 5,
    "movi_resolution": 32,
    "ytvis_size": "72x128",
    "davis_size": "48x86",
    "mp4_size": "48x86",
    "mp4_frames": 20,
    "batch_size": 2,
    "batches": 2,
    "reads": 4,
    "passes": 1,
    "rounds": 1,
    "profile_clips": 2,
    "threads": [1],
}
"""Defaults of ``--quick`` (explicit flags still win)."""


@dataclass(frozen=True)
class Case:
    """A data module at the config of an experiment.

    Attributes:
        dataset: one of :data:`DATASETS` (the data written for it).
        overrides: Hydra overrides that select the experiment (and data group).
        feature_model: a frozen-ViT method (random encoder weights; shrunk by ``--quick``;
            stepped on ``--step-batch`` clips); otherwise stepped on the whole loader batch.
    """

    dataset: str
    overrides: tuple[str, ...]
    feature_model: bool = True

    @property
    def label(self) -> str:
        """The overrides as the table shows them."""
        return " ".join(o.removeprefix("experiment=") for o in self.overrides)


CASES = (
    Case("synthetic", ("experiment=savi_synthetic",), feature_model=False),
    Case("movi_c", ("experiment=slotcontrast_movi_c",)),
    Case("movi_c", ("experiment=videosaur_movi_c",)),
    Case("ytvis2021", ("experiment=videosaur_ytvis",)),
    Case("ytvis2021", ("experiment=slotcontrast_ytvis",)),
    Case("davis2017", ("experiment=videosaur_ytvis", "data=davis2017")),
    Case("video_files", ("experiment=videosaur_ytvis", "data=video_files")),
)


@dataclass
class Row:
    """Measurements of one case.

    Attributes:
        clip: ``TxHxW`` of the loader's clips; ``megabytes``: their tensors (video, masks) per clip.
        loader: loader clips/s; ``read_ms``, ``transform_ms``: the stages per clip (None: not a
            :class:`~ocl.data.clips.ClipDataset`).
        step: clips/s of training steps on ``step_clips`` clips at ``step_threads`` torch threads.
        load: the 1-minute load average after the case (this benchmark's processes included).
    """

    case: Case
    clip: str
    megabytes: float
    loader: float
    read_ms: float | None
    transform_ms: float | None
    step: float
    step_clips: int
    step_threads: int
    load: float

    @property
    def ratio(self) -> float:
        """Loader clips/s over step clips/s."""
        return self.loader / self.step


# --------------------------------------------------------------------------- writing the data


def parse_size(text: str) -> tuple[int, int]:
    """``"720x1280"`` -> ``(720, 1280)`` (height, width)."""
    height, width = (int(part) for part in text.lower().split("x"))
    return height, width


def render(
    rng: np.random.Generator, length: int, height: int, width: int, objects: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames of a made-up camera shot: uint8 ``[H, W, 3]`` and ids ``[H, W]`` (0 background, k object k).

    A smooth colour field pans by 4 pixels a frame; ``objects`` flat-coloured ellipses move over
    it (later ones in front); mild noise (a pool of 4 patterns) keeps JPEG and h264 from
    compressing the frames far better than camera footage.
    """
    pan = 4
    field = rng.integers(0, 256, (6, 10 + 10 * pan * length // width, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(field).resize((width + pan * length, height), Image.BICUBIC), np.int16)
    noise = rng.integers(-8, 9, (4, height, width, 3), dtype=np.int16)
    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]
    centres = rng.uniform(0.2, 0.8, (objects, 2)) * (height, width)
    radii = rng.uniform(0.08, 0.3, (objects, 2)) * height
    velocities = rng.uniform(-0.01, 0.01, (objects, 2)) * width
    colours = rng.integers(0, 256, (objects, 3))
    for t in range(length):
        frame = background[:, pan * t : pan * t + width].copy()
        ids = np.zeros((height, width), np.uint8)
        for k, (centre, radius, velocity, colour) in enumerate(zip(centres, radii, velocities, colours), start=1):
            y, x = centre + t * velocity
            inside = ((rows - y) / radius[0]) ** 2 + ((columns - x) / radius[1]) ** 2 < 1.0
            frame[inside] = colour
            ids[inside] = k
        yield (frame + noise[t % len(noise)]).clip(0, 255).astype(np.uint8), ids


def save_jpeg(path: Path, frame: np.ndarray) -> int:
    """Write ``frame`` as a quality-90 JPEG; return its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, quality=90)
    return path.stat().st_size


def write_movi(root: Path, args: argparse.Namespace) -> str:
    """MOVi-C TFDS records (``--videos`` train videos, 1 val), converted into ``root/movi_c``."""
    size = args.movi_resolution
    tfds_root = root / "movi_tfds"
    write_movi_tfds(tfds_root, "movi_c", size=size, frames=24, shards={"train": [args.videos], "val": [1]})
    convert_movi(tfds_root, root / "movi_c", "movi_c", size, splits=("train", "val"), progress=False)
    shutil.rmtree(tfds_root)
    npz = statistics.mean(path.stat().st_size for path in (root / "movi_c" / "train").glob("*.npz"))
    return f"{args.videos} train videos x 24 frames {size}x{size}, {npz / 1e6:.2f} MB per converted video"


def write_ytvis(root: Path, args: argparse.Namespace) -> str:
    """A YouTube-VIS 2021 folder: ``--videos`` train videos + 1 val video, 1-3 objects each (RLE)."""
    height, width = parse_size(args.ytvis_size)
    rng = np.random.default_rng(args.seed)
    dataset = root / "ytvis2021"
    videos, annotations, sizes = [], [], []
    for index in range(args.videos + 1):
        name = f"{index:010x}"
        file_names = [f"{name}/{5 * t:05d}.jpg" for t in range(args.frames)]
        objects = int(rng.integers(1, 4))
        tracks: list[list[dict]] = [[] for _ in range(objects)]
        for file_name, (frame, ids) in zip(file_names, render(rng, args.frames, height, width, objects)):
            sizes.append(save_jpeg(dataset / "train" / "JPEGImages" / file_name, frame))
            for k, track in enumerate(tracks, start=1):
                track.append(compressed_rle(ids == k))
        videos.append(
            {"id": index + 1, "height": height, "width": width, "length": args.frames, "file_names": file_names}
        )
        for track in tracks:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": index + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentations": track,
                }
            )
    categories = [{"id": 1, "name": "object"}]
    json_text = json.dumps({"videos": videos, "annotations": annotations, "categories": categories})
    (dataset / "train" / "instances.json").write_text(json_text)
    return (
        f"{args.videos} train videos (+1 val) x {args.frames} frames {height}x{width}, "
        f"JPEG {statistics.mean(sizes) / 1e3:.0f} KB per frame, {len(annotations)} RLE tracks"
    )


def write_davis(root: Path, args: argparse.Namespace) -> str:
    """A DAVIS-2017 folder: ``--videos`` train sequences + 1 val sequence, 1-4 objects each."""
    height, width = parse_size(args.davis_size)
    rng = np.random.default_rng(args.seed + 1)
    dataset = root / "davis2017"
    names = [f"sequence{index:03d}" for index in range(args.videos + 1)]
    jpegs, pngs = [], []
    for name in names:
        for t, (frame, ids) in enumerate(render(rng, args.frames, height, width, int(rng.integers(1, 5)))):
            jpegs.append(save_jpeg(dataset / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame))
            png = dataset / "Annotations" / "480p" / name / f"{t:05d}.png"
            write_palette_png(png, ids)
            pngs.append(png.stat().st_size)
    image_sets = dataset / "ImageSets" / "2017"
    image_sets.mkdir(parents=True)
    (image_sets / "train.txt").write_text("".join(f"{name}\n" for name in names[:-1]))
    (image_sets / "val.txt").write_text(f"{names[-1]}\n")
    return (
        f"{args.videos} train sequences (+1 val) x {args.frames} frames {height}x{width}, "
        f"JPEG {statistics.mean(jpegs) / 1e3:.0f} KB + PNG {statistics.mean(pngs) / 1e3:.1f} KB per frame"
    )


def write_mp4(path: Path, frames: Iterator[np.ndarray], height: int, width: int, crf: int) -> None:
    """h264 at constant quality ``crf``: 30 fps, 4:2:0, 2 B-frames, a keyframe every 60 frames (2 s)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "g": "60", "bf": "2", "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_video_files(root: Path, args: argparse.Namespace) -> str:
    """``--videos`` mp4 files of ``--mp4-frames`` frames in ``root/video_files``."""
    height, width = parse_size(args.mp4_size)
    rng = np.random.default_rng(args.seed + 2)
    folder = root / "video_files"
    folder.mkdir()
    for index in range(args.videos):
        shot = render(rng, args.mp4_frames, height, width, int(rng.integers(1, 4)))
        write_mp4(folder / f"video{index:03d}.mp4", (frame for frame, _ in shot), height, width, args.mp4_crf)
    megabits = statistics.mean(path.stat().st_size for path in folder.glob("*.mp4")) * 8 / 1e6
    return (
        f"{args.videos} mp4 x {args.mp4_frames} frames {height}x{width}, CRF {args.mp4_crf}: "
        f"{megabits / (args.mp4_frames / 30):.2f} Mbit/s"
    )


WRITERS: dict[str, Callable[[Path, argparse.Namespace], str]] = {
    "movi_c": write_movi,
    "ytvis2021": write_ytvis,
    "davis2017": write_davis,
    "video_files": write_video_files,
}


# --------------------------------------------------------------------------- measuring


def compose_case(case: Case, root: Path, args: argparse.Namespace) -> DictConfig:
    """The config ``python train.py <case overrides>`` runs, with this benchmark's data and loader settings."""
    overrides = [
        *case.overrides,
        f"paths.data_root={root}",
        f"paths.output_dir={root / 'outputs'}",
        "data.num_workers=2",
        f"data.batch_size={args.batch_size}",
    ]
    if case.feature_model:
        overrides += [RANDOM_ENCODER, *(TINY_FEATURE_MODEL if args.quick else ())]
    if case.dataset == "ytvis2021":
        overrides.append("data.num_val_videos=1")  # the written videos are few; val takes the last one
    if case.dataset == "video_files":
        overrides.append(f"data.paths=[{root / 'video_files'}]")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def loader_throughput(datamodule: VideoDataModule, batches: int) -> tuple[float, dict[str, Any]]:
    """Clips/s of the training loader over ``batches`` batches, and its first batch.

    The loader is ``train_dataloader()`` as a trainer with ``max_steps`` gets it (a stand-in
    holds the fields it reads). The first batch of each worker is not timed: worker start-up,
    and the batches the other workers prepared meanwhile, would inflate the rate.
    """
    warmup = max(1, datamodule.num_workers)
    datamodule.trainer = SimpleNamespace(
        max_steps=warmup + batches, global_step=0, world_size=1, global_rank=0, accumulate_grad_batches=1
    )
    iterator = iter(datamodule.train_dataloader())
    first = next(iterator)
    for _ in range(warmup - 1):
        next(iterator)
    start = time.perf_counter()
    clips = sum(len(batch["video"]) for batch in islice(iterator, batches))
    return clips / (time.perf_counter() - start), first


def stage_times(dataset: ClipDataset, clips: int, seed: int) -> tuple[float, float]:
    """Mean ms per training clip of ``source.read`` and of the transform, here on one torch thread."""
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    read = transform = 0.0
    for _ in range(clips):
        index = int(rng.integers(len(dataset)))
        start = time.perf_counter()
        frames, masks = dataset.source.read(index, dataset.clip_frames(index, rng))
        middle = time.perf_counter()
        dataset.transform(frames, masks, rng)
        read, transform = read + middle - start, transform + time.perf_counter() - middle
    torch.set_num_threads(threads)
    return read / clips * 1e3, transform / clips * 1e3


def step_throughput(
    cfg: DictConfig, batch: dict[str, Any], clips: int, steps: int, threads: Sequence[int]
) -> tuple[float, int]:
    """Clips/s that training steps on the first ``clips`` clips of ``batch`` consume, and the thread count.

    One untimed step, then ``steps`` timed ones, at each torch thread count of ``threads``; the
    fastest count is kept. Several counts are tried because on a busy 2-core machine two torch threads stall each other
    (their hand-offs wait for a core), so one thread can be several times faster than two.
    """
    tensors = {key: value[:clips] for key, value in batch.items() if isinstance(value, torch.Tensor)}
    initial = torch.get_num_threads()
    rates = {}
    for count in threads:
        torch.set_num_threads(count)
        rates[count] = hand_written(cfg, [tensors] * (1 + steps), warmup=1) * clips
    torch.set_num_threads(initial)
    fastest = max(rates, key=rates.__getitem__)
    return rates[fastest], fastest


def measure(case: Case, root: Path, args: argparse.Namespace, step_cache: dict[str, tuple[float, int]]) -> Row:
    """Loader, stage and step throughput of one case (a step is measured once per model, loss and clip shape)."""
    cfg = compose_case(case, root, args)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    loader, batch = loader_throughput(datamodule, args.batches)
    clips_per_step = args.step_batch if case.feature_model else len(batch["video"])
    shape = tuple(batch["video"].shape[1:])
    key = OmegaConf.to_yaml(cfg.model) + OmegaConf.to_yaml(cfg.loss) + f"{shape} {clips_per_step}"
    if key not in step_cache:
        step_cache[key] = step_throughput(cfg, batch, clips_per_step, args.steps, args.threads)
    stages = (None, None)
    if isinstance(datamodule.train_set, ClipDataset):
        stages = stage_times(datamodule.train_set, args.profile_clips, args.seed)
    frames, _, height, width = shape
    step, threads = step_cache[key]
    megabytes = (
        sum(value.nbytes for value in batch.values() if isinstance(value, torch.Tensor)) / len(batch["video"]) / 1e6
    )
    clip = f"{frames}x{height}x{width}"
    return Row(case, clip, megabytes, loader, *stages, step, clips_per_step, threads, os.getloadavg()[0])


def rate(fn: Callable[[Any], object], inputs: Sequence[Any]) -> float:
    """Calls per second of ``fn`` over ``inputs[1:]``; the call on ``inputs[0]`` is not timed."""
    fn(inputs[0])
    start = time.perf_counter()
    for item in inputs[1:]:
        fn(item)
    return (len(inputs) - 1) / (time.perf_counter() - start)


def bench_decoders(path: Path, args: argparse.Namespace) -> list[str]:
    """decord vs PyAV on ``path``: random 4-frame clips and whole videos in order; the printed lines.

    Each of ``--rounds`` rounds times every reader once, so that load changes affect all alike;
    rates are medians over rounds, ratios medians of the per-round ratios.
    """
    reader = decord.VideoReader(str(path))
    length = len(reader)
    starts = np.random.default_rng(args.seed).integers(length - 3, size=args.reads + 1)
    clips = [start + np.arange(4) for start in starts]
    whole = [np.arange(length)] * (args.passes + 1)
    difference = np.abs(read_clip(path, whole[0]).astype(int) - read_clip_pyav(path, whole[0])).max()
    readers: dict[str, tuple[Callable[[np.ndarray], object], list[np.ndarray]]] = {
        "random decord": (lambda indices: read_clip(path, indices), clips),
        "random PyAV": (lambda indices: read_clip_pyav(path, indices), clips),
        "random decord open": (lambda indices: reader.get_batch(indices).asnumpy(), clips),
        "whole decord": (lambda indices: read_clip(path, indices), whole),
        "whole PyAV": (lambda indices: read_clip_pyav(path, indices), whole),
    }
    rates: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(args.rounds):
        for name, (fn, inputs) in readers.items():
            rates[name].append(rate(fn, inputs))
    median = {name: statistics.median(values) for name, values in rates.items()}

    def ratios(kind: str) -> list[float]:
        """Per-round decord / PyAV of ``random`` or ``whole`` reads."""
        return [d / a for d, a in zip(rates[f"{kind} decord"], rates[f"{kind} PyAV"], strict=True)]

    return [
        (
            f"{path.name}: {length} frames {reader[0].shape[0]}x{reader[0].shape[1]}, "
            f"{path.stat().st_size / 1e6:.1f} MB; max |decord - PyAV| over all frames: {difference}; "
            f"medians of {args.rounds} rounds"
        ),
        "| read | decord clips/s | PyAV clips/s | decord / PyAV |",
        "|---|---|---|---|",
        (
            f"| random 4-frame clip, file opened per clip (`read_clip` / `read_clip_pyav`) | "
            f"{median['random decord']:.1f} | {median['random PyAV']:.1f} | "
            f"{statistics.median(ratios('random')):.2f} |"
        ),
        (
            "| random 4-frame clip, decord reader kept open (as `VideoFileSource`) | "
            f"{median['random decord open']:.1f} | | |"
        ),
        (
            f"| whole video in order ({length} frames; videos/s) | {median['whole decord']:.2f} | "
            f"{median['whole PyAV']:.2f} | {statistics.median(ratios('whole')):.2f} |"
        ),
        (
            f"per-round decord / PyAV: random {np.round(ratios('random'), 2).tolist()}, "
            f"whole {np.round(ratios('whole'), 2).tolist()}"
        ),
    ]


# --------------------------------------------------------------------------- output


def format_ms(value: float | None) -> str:
    """Milliseconds without decimals, ``-`` for None."""
    return "-" if value is None else f"{value:.0f}"


def table(rows: Sequence[Row]) -> list[str]:
    """The results as a markdown table."""
    lines = [
        (
            "| data module | config | clip (TxHxW) | MB/clip | loader clips/s | read ms/clip | transform ms/clip "
            "| step clips/s (clips per step, threads) | loader / step | >= 3x | load (1 min) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.case.dataset} | {row.case.label} | {row.clip} | {row.megabytes:.2f} | {row.loader:.1f} | "
            f"{format_ms(row.read_ms)} | {format_ms(row.transform_ms)} | "
            f"{row.step:.3f} ({row.step_clips}, {row.step_threads}) | {row.ratio:.1f}x | "
            f"{'yes' if row.ratio >= TARGET else 'NO'} | {row.load:.2f} |"
        )
    return lines


def report(rows: Sequence[Row], args: argparse.Namespace) -> list[str]:
    """The table of the cases with what was measured how, and the caveat about the step demand."""
    return [
        f"\nloader: {args.batches} batches of {args.batch_size} clips, 2 workers, after 1 warm-up batch per worker",
        (
            f"step: fp32 on this CPU, random encoder weights, fastest of {args.threads} torch threads; "
            "read/transform: one clip at a time in this process, one thread\n"
        ),
        *table(rows),
        (
            "\nstep clips/s is this CPU's demand: a GPU steps far faster, so these ratios are not those of a "
            f"GPU run (not measured here). Target: loader >= {TARGET:.0f}x step."
        ),
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` replaces the defaults by :data:`QUICK`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary data folder")
    parser.add_argument("--videos", type=int, default=16, help="training videos written per dataset")
    parser.add_argument("--frames", type=int, default=24, help="frames per YT-VIS video and DAVIS sequence")
    parser.add_argument("--movi-resolution", type=int, default=128, help="MOVi-C side (published: 128, 256)")
    parser.add_argument("--ytvis-size", default="720x1280", help="YT-VIS frame HxW")
    parser.add_argument("--davis-size", default="480x854", help="DAVIS frame HxW")
    parser.add_argument("--mp4-size", default="480x854", help="mp4 frame HxW")
    parser.add_argument("--mp4-frames", type=int, default=150, help="frames per mp4 (30 fps)")
    parser.add_argument("--batch-size", type=int, default=8, help="loader batch size (data.batch_size)")
    parser.add_argument("--batches", type=int, default=12, help="timed loader batches per data module")
    parser.add_argument("--step-batch", type=int, default=1, help="clips per timed step of the ViT configs")
    parser.add_argument("--steps", type=int, default=1, help="timed training steps (after one untimed)")
    parser.add_argument("--reads", type=int, default=20, help="random clips read by each decoder per round")
    parser.add_argument("--passes", type=int, default=2, help="whole-video reads by each decoder per round")
    parser.add_argument("--rounds", type=int, default=3, help="decoder rounds (readers alternate within a round)")
    parser.add_argument("--mp4-crf", type=int, default=20, help="x264 CRF of the mp4s (lower: more bits)")
    parser.add_argument("--profile-clips", type=int, default=16, help="clips timed stage by stage per data module")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts tried for the step (fastest kept)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=[*DATASETS, DECODERS], default=[*DATASETS, DECODERS])
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Write the data, measure every selected case and the decoders, print the tables."""
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
    needed = [name for name in WRITERS if name in args.only or (name == "video_files" and DECODERS in args.only)]
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_data_") as folder:
        root = Path(folder)
        for name in needed:
            begin = time.perf_counter()
            description = WRITERS[name](root, args)
            print(f"wrote {name}: {description} ({time.perf_counter() - begin:.0f} s)")
        rows: list[Row] = []
        step_cache: dict[str, tuple[float, int]] = {}
        for case in (case for case in CASES if case.dataset in args.only):
            rows.append(measure(case, root, args, step_cache))
            print(f"measured {case.dataset} at {case.label}: loader {rows[-1].loader:.1f} clips/s")
        if rows:
            print("\n".join(report(rows, args)))
        if DECODERS in args.only:
            print("\ndecord vs PyAV (library default threads):")
            print("\n".join(bench_decoders(root / "video_files" / "video000.mp4", args)))
    print(f"\nload average {os.getloadavg()}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
