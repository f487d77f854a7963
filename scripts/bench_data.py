"""Data-loading throughput per worker process, projected to a GPU node, against each recipe's demand.

No dataset is needed: stand-ins of realistic size are written first (under ``--workdir`` or the
system's temporary folder, deleted at the end), in each dataset's published format:

- ``movi_c``: TFDS records at the published 128x128, 24 frames (``tests/movi_fixtures.py``, the
  one writer still shared with the tests; noise frames, so the converted files hardly compress),
  converted with :func:`ocl.data.movi_convert.convert_movi`;
- ``ytvis2021``: 720x1280 JPEGs (quality 90), ``--frames`` per video, and ``train/instances.json``
  with compressed RLE masks;
- ``ytvos``: the same kind of 720x1280 JPEG videos in YouTube-VOS's ``JPEGImages/<video>/`` layout;
- ``davis2017``: 480x854 JPEGs and palette PNG annotations;
- ``video_files``: 480x854 h264 mp4s (30 fps, 4:2:0, B-frames, a keyframe every 2 s, CRF 20);
- ``synthetic``: the embedded procedural videos (generated on first access, not cached yet).

For each case (a data module at the config of an experiment, or at its own defaults) it times
the training loader (``train_dataloader()``, as a trainer with ``max_steps`` gets it, batches of
``--batch-size``) twice: in this process (``data.num_workers=0``, one torch thread: the work of
one worker process) and with ``--workers`` worker processes; and the two stages of a loader item
on one thread (``read``: decoding; ``transform``: resize/crop). The rate of one worker times
``--project-workers`` (14: a 16-core GPU node) is the projection, compared with 3x the clips/s
that the recipe's training step consumes in bf16 on one H200 (:data:`DEMAND`, measured by
``scripts/bench_experiments.py``, issue 14). ``--variants`` adds, where they apply, the loader
settings before the GPU-feeding options (``legacy``: training masks read, float32 frames between
processes) and reduced JPEG decoding (``reduced``); ``--baseline DIR`` (a checkout of earlier code)
also times one worker of each case with that code and its configs, in subprocesses, alternating
with the current code over ``--loader-rounds`` (one worker's rates are medians of those rounds).
It ends with decord against PyAV on the same mp4: random 4-frame clips and whole videos read in order.

    python scripts/bench_data.py [--only ytvis2021 ytvos ...] [--workers 2] [--workdir DIR]
    git worktree add /tmp/before <commit> && python scripts/bench_data.py --baseline /tmp/before
    python scripts/bench_data.py --quick    # tiny data: a smoke test (~15 s)

The projection assumes the workers scale linearly up to ``--project-workers`` (one free core
each); it is measured only for ``--workers`` <= the CPUs present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
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
from PIL import Image
from pycocotools import mask as mask_utils

from ocl.data.clips import ClipDataset
from ocl.data.datamodule import VideoDataModule
from ocl.data.images import write_palette_png
from ocl.data.movi_convert import convert_movi
from ocl.data.video_files import read_clip, read_clip_pyav

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("synthetic", "movi_c", "ytvis2021", "ytvos", "davis2017", "video_files")
DECODERS = "decoders"
TARGET = 3.0
"""Loader clips/s over step clips/s that the issue asks for."""
DEMAND = {
    "videosaur_movi_c": 373.0,
    "slotcontrast_movi_c": 388.0,
    "slotcurri_movi": 310.0,
    "slotcontrast_ytvis": 123.0,
    "slotcurri_ytvis": 89.0,
    "smtc_ytvos": 690.0,
    "slash_movi": 741.0,
}
"""Clips/s a recipe's bf16 training step consumes on one H200 (issue 14, ``scripts/bench_experiments.py``)."""
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0, 0, 0] * 250 + [224, 224, 192]
"""A DAVIS-like palette for the annotation PNGs (index 255: void)."""
VARIANTS = {
    "config": (),
    "legacy": ("data.train_masks=true", "data.uint8_transfer=false"),
    "reduced": ("data.train_transform.reduced_decoding=true",),
}
"""Loader settings measured (``--variants``): the config as it is, the settings before the GPU-feeding
options, and reduced JPEG decoding."""
QUICK = {
    "videos": 3,
    "frames": 14,
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
    "loader_rounds": 1,
}
"""Defaults of ``--quick`` (explicit flags still win)."""


@dataclass(frozen=True)
class Case:
    """A data module at the config of an experiment (or at its own defaults).

    Attributes:
        dataset: one of :data:`DATASETS` (the data written for it).
        overrides: Hydra overrides that select the experiment or data group.
        recipes: the recipes whose training this loader feeds (their :data:`DEMAND`); several
            when their data configs are the same.
        variants: the :data:`VARIANTS` that change something for this case.
    """

    dataset: str
    overrides: tuple[str, ...]
    recipes: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("config",)

    @property
    def label(self) -> str:
        """The overrides as the table shows them."""
        return " ".join(o.removeprefix("experiment=") for o in self.overrides)


CASES = (
    Case("synthetic", ("experiment=savi_synthetic",)),
    Case("movi_c", ("experiment=videosaur_movi_c",), ("videosaur_movi_c", "slotcurri_movi")),
    Case("movi_c", ("experiment=slotcontrast_movi_c",), ("slotcontrast_movi_c",)),
    Case("movi_c", ("experiment=slash_movi",), ("slash_movi",)),
    Case(
        "ytvis2021", ("experiment=slotcontrast_ytvis",), ("slotcontrast_ytvis", "slotcurri_ytvis"), ("config", "legacy")
    ),
    Case("ytvis2021", ("experiment=videosaur_ytvis",), variants=("config", "legacy")),
    Case("ytvis2021", ("data=ytvis2021",), variants=("config", "legacy", "reduced")),
    Case("ytvos", ("experiment=smtc_ytvos",), ("smtc_ytvos",)),
    Case("davis2017", ("data=davis2017",), variants=("config", "legacy", "reduced")),
    Case("video_files", ("data=video_files",)),
)


@dataclass
class Row:
    """Measurements of one case and variant.

    Attributes:
        clip: ``TxHxW`` of the loader's clips; ``megabytes``: their tensors (as the workers send
            them: uint8 or float32 frames, masks) per clip.
        worker: clips/s of the loader in this process on one thread (one worker's rate; median of rounds).
        workers: clips/s of the loader with ``--workers`` processes.
        read_ms, transform_ms: the stages per clip (None: not a :class:`~ocl.data.clips.ClipDataset`).
        difference: ``reduced``: mean and largest |frame - frame of the full decode| of the first
            batch, in grey levels (None: other variants).
        baseline: one worker's clips/s with the ``--baseline`` code (``config`` rows; None: not measured).
        load: the 1-minute load average after the case (this benchmark's processes included).
    """

    case: Case
    variant: str
    clip: str
    megabytes: float
    worker: float
    workers: float
    read_ms: float | None
    transform_ms: float | None
    difference: tuple[float, float] | None
    baseline: float | None
    load: float

    def projected(self, workers: int) -> float:
        """Clips/s of ``workers`` worker processes that scale linearly."""
        return self.worker * workers


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


def compressed_rle(mask: np.ndarray) -> dict:
    """The COCO compressed RLE of a bool mask ``[H, W]``, ``counts`` as a str (as in the YouTube-VIS JSONs)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_movi(root: Path, args: argparse.Namespace) -> str:
    """MOVi-C TFDS records (``--videos`` train videos, 1 val), converted into ``root/movi_c``.

    The TFDS writer is the test fixture's (``tests/movi_fixtures.py``): ocl itself never writes TFDS.
    """
    sys.path.insert(0, str(REPO / "tests"))
    from movi_fixtures import write_movi_tfds

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
            png.parent.mkdir(parents=True, exist_ok=True)
            write_palette_png(png, ids, PALETTE)
            pngs.append(png.stat().st_size)
    image_sets = dataset / "ImageSets" / "2017"
    image_sets.mkdir(parents=True)
    (image_sets / "train.txt").write_text("".join(f"{name}\n" for name in names[:-1]))
    (image_sets / "val.txt").write_text(f"{names[-1]}\n")
    return (
        f"{args.videos} train sequences (+1 val) x {args.frames} frames {height}x{width}, "
        f"JPEG {statistics.mean(jpegs) / 1e3:.0f} KB + PNG {statistics.mean(pngs) / 1e3:.1f} KB per frame"
    )


def write_ytvos(root: Path, args: argparse.Namespace) -> str:
    """A YouTube-VOS ``train`` folder (``JPEGImages/<video>/<frame>.jpg``): ``--videos`` videos
    (+1 held out) of ``--frames`` frames at ``--ytvis-size`` (the same videos as YouTube-VIS)."""
    height, width = parse_size(args.ytvis_size)
    rng = np.random.default_rng(args.seed + 3)
    folder = root / "ytvos" / "train" / "JPEGImages"
    sizes = []
    for index in range(args.videos + 1):
        shot = render(rng, args.frames, height, width, int(rng.integers(1, 4)))
        for t, (frame, _) in enumerate(shot):
            sizes.append(save_jpeg(folder / f"{index:010x}" / f"{5 * t:05d}.jpg", frame))
    return (
        f"{args.videos} videos (+1) x {args.frames} frames {height}x{width}, "
        f"JPEG {statistics.mean(sizes) / 1e3:.0f} KB per frame"
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
    "ytvos": write_ytvos,
    "davis2017": write_davis,
    "video_files": write_video_files,
}


# --------------------------------------------------------------------------- measuring


def case_overrides(case: Case, variant: str, root: Path, args: argparse.Namespace, workers: int) -> list[str]:
    """The overrides of ``python train.py`` for a case and variant, with this benchmark's data and loader settings."""
    overrides = [
        *case.overrides,
        *VARIANTS[variant],
        f"paths.data_root={root}",
        f"paths.output_dir={root / 'outputs'}",
        f"data.num_workers={workers}",
        f"data.batch_size={args.batch_size}",
    ]
    if case.dataset in ("ytvis2021", "ytvos"):
        overrides.append("data.num_val_videos=1")  # the written videos are few; val takes the last one
    if case.dataset == "video_files":
        overrides.append(f"data.paths=[{root / 'video_files'}]")
    return overrides


def data_module(overrides: Sequence[str]) -> VideoDataModule:
    """The training data module of the config that ``overrides`` compose, set up."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        datamodule = instantiate(compose(config_name="train", overrides=list(overrides)).data)
    datamodule.setup("fit")
    return datamodule


def loader_throughput(datamodule: VideoDataModule, batches: int) -> tuple[float, dict[str, Any]]:
    """Clips/s of the training loader over ``batches`` batches, and its first batch (as the workers send it).

    The loader is ``train_dataloader()`` as a trainer with ``max_steps`` gets it (a stand-in
    holds the fields it reads; on the CPU, so nothing is pinned). The first batch of each worker
    is not timed: worker start-up, and the batches the other workers prepared meanwhile, would
    inflate the rate.
    """
    warmup = max(1, datamodule.num_workers)
    datamodule.trainer = SimpleNamespace(
        max_steps=warmup + batches,
        global_step=0,
        world_size=1,
        global_rank=0,
        accumulate_grad_batches=1,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    iterator = iter(datamodule.train_dataloader())
    first = next(iterator)
    for _ in range(warmup - 1):
        next(iterator)
    start = time.perf_counter()
    clips = sum(len(batch["video"]) for batch in islice(iterator, batches))
    return clips / (time.perf_counter() - start), first


def stage_times(dataset: ClipDataset, clips: int, seed: int) -> tuple[float, float]:
    """Mean ms per training clip of reading (:meth:`~ocl.data.clips.VideoSource.read_clip`, as the
    dataset reads) and of the transform, on one torch thread."""
    rng = np.random.default_rng(seed)
    read = transform = 0.0
    for _ in range(clips):
        index = int(rng.integers(len(dataset)))
        frame_indices = dataset.clip_frames(index, rng)
        start = time.perf_counter()
        clip = dataset.source.read_clip(index, frame_indices, dataset.labels, dataset.transform.decode_size)
        middle = time.perf_counter()
        dataset.transform.apply(clip.frames, clip.masks, dataset.transform.draw(*clip.size, rng), clip.size)
        read, transform = read + middle - start, transform + time.perf_counter() - middle
    return read / clips * 1e3, transform / clips * 1e3


BASELINE_PROGRAM = """
import json, sys, time
from itertools import islice
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

overrides, config_dir, batches = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
    datamodule = instantiate(compose(config_name="train", overrides=overrides).data)
datamodule.setup("fit")
device = SimpleNamespace(root_device=torch.device("cpu"))
datamodule.trainer = SimpleNamespace(
    max_steps=1 + batches, global_step=0, world_size=1, global_rank=0, accumulate_grad_batches=1, strategy=device
)
iterator = iter(datamodule.train_dataloader())
next(iterator)
start = time.perf_counter()
clips = sum(len(batch["video"]) for batch in islice(iterator, batches))
print(clips / (time.perf_counter() - start))
"""
"""What :func:`baseline_rate` runs with the ``--baseline`` code: :func:`loader_throughput` of one
worker, written with nothing but Hydra and the data module's loader, which every version has."""


def baseline_rate(overrides: Sequence[str], args: argparse.Namespace) -> float:
    """One worker's clips/s (in-process loader, one thread) with the code and configs of ``--baseline``,
    in a subprocess that imports them (:data:`BASELINE_PROGRAM`)."""
    command = [sys.executable, "-c", BASELINE_PROGRAM, json.dumps(list(overrides))]
    command += [str(args.baseline / "configs"), str(args.batches)]
    environment = {**os.environ, "PYTHONPATH": str(args.baseline)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=args.baseline, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the --baseline loader failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.split()[-1])


def measure(case: Case, variants: Sequence[str], root: Path, args: argparse.Namespace) -> list[Row]:
    """The rows of one case: per variant, one worker's rate (median of ``--loader-rounds`` rounds that
    alternate the variants and the ``--baseline`` code), ``--workers`` processes' rate, the stage times."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    modules = {variant: data_module(case_overrides(case, variant, root, args, 0)) for variant in variants}
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    baseline: list[float] = []
    first: dict[str, dict[str, Any]] = {}
    for _ in range(args.loader_rounds):
        for variant, datamodule in modules.items():
            rate, first[variant] = loader_throughput(datamodule, args.batches)
            rates[variant].append(rate)
        if args.baseline is not None:
            baseline.append(baseline_rate(case_overrides(case, "config", root, args, 0), args))
    rows = []
    for variant, datamodule in modules.items():
        batch = first[variant]
        frames, _, height, width = batch["video"].shape[1:]
        tensors = [value for value in batch.values() if isinstance(value, torch.Tensor)]
        megabytes = sum(value.nbytes for value in tensors) / len(batch["video"]) / 1e6
        stages = (None, None)
        if isinstance(datamodule.train_set, ClipDataset):
            stages = stage_times(datamodule.train_set, args.profile_clips, args.seed)
        difference = None
        if variant == "reduced":  # against the same clips decoded whole
            whole = modules.get("config") or data_module(case_overrides(case, "config", root, args, 0))
            _, full = loader_throughput(whole, 0)
            gap = (
                whole.on_after_batch_transfer(full, 0)["video"] - datamodule.on_after_batch_transfer(batch, 0)["video"]
            )
            difference = (float(gap.abs().mean()) * 255, float(gap.abs().max()) * 255)
        torch.set_num_threads(threads)
        processes = data_module(case_overrides(case, variant, root, args, args.workers))
        workers, _ = loader_throughput(processes, args.batches)
        torch.set_num_threads(1)
        rows.append(
            Row(
                case,
                variant,
                f"{frames}x{height}x{width}",
                megabytes,
                statistics.median(rates[variant]),
                workers,
                *stages,
                difference,
                statistics.median(baseline) if baseline and variant == "config" else None,
                os.getloadavg()[0],
            )
        )
    torch.set_num_threads(threads)
    return rows


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


def table(rows: Sequence[Row], args: argparse.Namespace) -> list[str]:
    """The loader measurements as a markdown table."""
    lines = [
        (
            f"| data module | config | variant | clip (TxHxW) | MB/clip sent | 1 worker clips/s | 1 worker, "
            "--baseline code | read ms/clip "
            f"| transform ms/clip | {args.workers} workers clips/s (measured) | {args.project_workers} workers "
            "clips/s (projected) | mean / max difference (grey levels) | load (1 min) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        difference = "-" if row.difference is None else f"{row.difference[0]:.2f} / {row.difference[1]:.0f}"
        baseline = "-" if row.baseline is None else f"{row.baseline:.1f}"
        lines.append(
            f"| {row.case.dataset} | {row.case.label} | {row.variant} | {row.clip} | {row.megabytes:.2f} | "
            f"{row.worker:.1f} | {baseline} | {format_ms(row.read_ms)} | {format_ms(row.transform_ms)} | {row.workers:.1f} | "
            f"{row.projected(args.project_workers):.0f} | {difference} | {row.load:.2f} |"
        )
    return lines


def demand_table(rows: Sequence[Row], args: argparse.Namespace) -> list[str]:
    """Each recipe's bf16 demand x :data:`TARGET` against its loader's projection (config variant)."""
    lines = [
        (
            f"| recipe | bf16 step clips/s (H200) | {TARGET:.0f}x demand | loader ({args.project_workers} workers, "
            f"projected) | projected / demand | >= {TARGET:.0f}x | workers for {TARGET:.0f}x |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.variant != "config":
            continue
        for recipe in row.case.recipes:
            demand = DEMAND[recipe]
            projected = row.projected(args.project_workers)
            lines.append(
                f"| {recipe} | {demand:.0f} | {TARGET * demand:.0f} | {projected:.0f} | {projected / demand:.1f}x | "
                f"{'yes' if projected >= TARGET * demand else 'NO'} | {TARGET * demand / row.worker:.0f} |"
            )
    return lines


def report(rows: Sequence[Row], args: argparse.Namespace) -> list[str]:
    """The tables with what was measured how."""
    measured = "" if args.workers <= (os.cpu_count() or 1) else f" (more than the {os.cpu_count()} CPUs here)"
    return [
        (
            f"\nloader: {args.batches} batches of {args.batch_size} clips after 1 warm-up batch per worker; "
            f"1 worker = num_workers=0, one torch thread, median of {args.loader_rounds} rounds alternating the "
            f"variants (and the --baseline code: {args.baseline}); {args.workers} worker processes{measured}; "
            f"projected = 1 worker x {args.project_workers}; read/transform: one clip at a time, one thread; "
            "difference: reduced decoding vs the full decode, first batch\n"
        ),
        *table(rows, args),
        "",
        *demand_table(rows, args),
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` replaces the defaults by :data:`QUICK`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="parent of the temporary data folder (made if missing)"
    )
    parser.add_argument("--videos", type=int, default=8, help="training videos written per dataset")
    parser.add_argument("--frames", type=int, default=36, help="frames per YT-VIS / YT-VOS video and DAVIS sequence")
    parser.add_argument("--movi-resolution", type=int, default=128, help="MOVi-C side (published: 128, 256)")
    parser.add_argument("--ytvis-size", default="720x1280", help="YT-VIS and YT-VOS frame HxW")
    parser.add_argument("--davis-size", default="480x854", help="DAVIS frame HxW")
    parser.add_argument("--mp4-size", default="480x854", help="mp4 frame HxW")
    parser.add_argument("--mp4-frames", type=int, default=150, help="frames per mp4 (30 fps)")
    parser.add_argument("--batch-size", type=int, default=8, help="loader batch size (data.batch_size)")
    parser.add_argument("--batches", type=int, default=8, help="timed loader batches per measurement")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the measured loader")
    parser.add_argument("--project-workers", type=int, default=14, help="workers of the projection (16-core node)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--loader-rounds", type=int, default=3, help="rounds of 1-worker timings (medians)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of earlier code (e.g. `git worktree add DIR <commit>`): also time its 1-worker loaders",
    )
    parser.add_argument("--reads", type=int, default=20, help="random clips read by each decoder per round")
    parser.add_argument("--passes", type=int, default=2, help="whole-video reads by each decoder per round")
    parser.add_argument("--rounds", type=int, default=3, help="decoder rounds (readers alternate within a round)")
    parser.add_argument("--mp4-crf", type=int, default=20, help="x264 CRF of the mp4s (lower: more bits)")
    parser.add_argument("--profile-clips", type=int, default=8, help="clips timed stage by stage per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=[*DATASETS, DECODERS], default=[*DATASETS, DECODERS])
    parser.add_argument("--quick", action="store_true", help="tiny data: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Write the data, measure every selected case and variant and the decoders, print the tables."""
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
    needed = [name for name in WRITERS if name in args.only or (name == "video_files" and DECODERS in args.only)]
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_data_") as folder:
        root = Path(folder)
        for name in needed:
            begin = time.perf_counter()
            description = WRITERS[name](root, args)
            print(f"wrote {name}: {description} ({time.perf_counter() - begin:.0f} s)")
        rows: list[Row] = []
        for case in (case for case in CASES if case.dataset in args.only):
            variants = [variant for variant in case.variants if variant in args.variants]
            for row in measure(case, variants, root, args):
                rows.append(row)
                print(
                    f"measured {case.dataset} at {case.label} ({row.variant}): 1 worker {row.worker:.1f} clips/s, "
                    f"{args.workers} workers {row.workers:.1f}"
                )
        if rows:
            print("\n".join(report(rows, args)))
        if DECODERS in args.only:
            print("\ndecord vs PyAV (library default threads):")
            print("\n".join(bench_decoders(root / "video_files" / "video000.mp4", args)))
    print(f"\nload average {os.getloadavg()}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
