"""``predict.py``: a trained model on any video file, chunk by chunk, in bounded memory.

Frames are decoded by decord ``chunk_size`` at a time, resized as the run's evaluation data is
(``cfg.transform``), run through the model with the slots carried from chunk to chunk
(:class:`~ocl.predict.model.SlotTracker`), and written out
(:class:`~ocl.predict.writers.PredictionWriter`) before the next chunk is read. Memory grows
with ``chunk_size`` and the frame size, not with the video's length.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ocl.build import UsageError
from ocl.data.errors import DataError
from ocl.data.transforms import VideoTransform
from ocl.data.video_files import VideoFileSource
from ocl.methods.base import ObjectCentricMethod
from ocl.predict.model import SlotTracker, check_chunking, load_trained_model, resolve_device
from ocl.predict.writers import PredictionWriter, model_view, prepare_out_dir


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict_video` wrote: ``overlay`` (mp4), ``masks_dir`` (one PNG per frame),
    the video's ``num_frames`` and ``rate`` (frames per second), and the model's ``num_slots``."""

    overlay: Path
    masks_dir: Path
    num_frames: int
    rate: Fraction
    num_slots: int


def frame_rate(path: Path) -> Fraction:
    """Frames per second of the first video stream of ``path`` (PyAV); DataError if it states none."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
    except (av.FFmpegError, IndexError) as error:
        raise DataError(f"cannot read the frame rate of {path}: {error}. Is it a complete video file?") from error
    if not rate:
        raise DataError(f"video {path} states no frame rate; re-encode it, e.g. ffmpeg -i {path} -r 25 fixed.mp4")
    return Fraction(rate)


def predict_video(
    model: ObjectCentricMethod,
    path: str | Path,
    out_dir: str | Path,
    transform: VideoTransform,
    chunk_size: int = 32,
    alpha: float = 0.5,
    progress: bool = True,
) -> Prediction:
    """Write the mask overlay and per-frame slot ids of the video at ``path`` to ``out_dir``.

    Args:
        model: a trained method in evaluation mode (:func:`~ocl.predict.model.load_trained_model`).
        path: any video file decord (FFmpeg) reads.
        out_dir: gets ``overlay.mp4`` (the input's frame count, rate and size) and ``masks/``; it must
            not hold a prediction already (:func:`~ocl.predict.writers.prepare_out_dir`).
        transform: frames -> the model's input (the run's evaluation transform).
        chunk_size: frames decoded and run at once.
        alpha: weight of the slot colours in the overlay.
        progress: show a progress bar.

    Raises DataError (missing or corrupt video), ChunkingError (the model cannot run in chunks) or
    UsageError (``out_dir`` holds a prediction already or cannot be written; checked first).
    """
    out_dir = prepare_out_dir(out_dir)
    path = Path(path).expanduser()
    source = VideoFileSource([path])
    num_frames = source.num_frames(0)
    check_chunking(model, num_frames, chunk_size)
    rate = frame_rate(path)
    tracker = SlotTracker(model)

    def predicted_chunks() -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """uint8 frames ``[T, H, W, 3]`` and their soft masks ``[T, K, h, w]``, chunk after chunk."""
        for start in range(0, num_frames, chunk_size):
            frames, _ = source.read(0, np.arange(start, min(start + chunk_size, num_frames)))
            yield frames, tracker(transform(frames, None)[0]).masks[0]

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), disable=not progress) as bar:
        task = bar.add_task(f"predicting {path.name}", total=num_frames)
        chunks = predicted_chunks()
        first = next(chunks)
        height, width = first[0].shape[1:3]
        view = model_view(transform, height, width)
        writer = PredictionWriter(out_dir, height, width, rate, view, first[1].shape[1], alpha)
        with contextlib.closing(writer):
            for frames, masks in itertools.chain([first], chunks):
                writer.write(frames, masks)
                bar.advance(task, len(frames))
    return Prediction(writer.overlay_path, writer.masks_dir, writer.frames_written, rate, writer.num_slots)


USAGE = "python predict.py ckpt_path=<ckpt> video=<file.mp4>"


def check_inputs(cfg: DictConfig) -> None:
    """Raise :class:`~ocl.build.UsageError` if ``cfg`` names no checkpoint or no video."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise UsageError(
            f"predict.py needs ckpt_path=<checkpoint> (written by train.py in <run folder>/checkpoints/): {USAGE}"
        )
    if OmegaConf.is_missing(cfg, "video") or not cfg.video:
        raise UsageError(f"no video given: {USAGE}")


def run_prediction(cfg: DictConfig) -> Prediction:
    """What ``predict.py`` runs: load ``cfg.ckpt_path``, predict ``cfg.video`` into ``cfg.out``, report.

    The checkpoint and video arguments, the device and the output folder are checked before the
    model is loaded or a frame decoded (:class:`~ocl.build.UsageError`).
    """
    check_inputs(cfg)
    device = resolve_device(cfg.device)
    prepare_out_dir(cfg.out)
    model = load_trained_model(cfg, device)
    prediction = predict_video(
        model, cfg.video, cfg.out, instantiate(cfg.transform), cfg.chunk_size, cfg.alpha, cfg.progress
    )
    print(
        f"{prediction.num_frames} frames at {float(prediction.rate):.3g} fps, {prediction.num_slots} slots:\n"
        f"  overlay: {prediction.overlay}\n  masks:   {prediction.masks_dir}/00000.png ... (palette PNGs, slot ids)"
    )
    return prediction
