"""``eval.py eval=label_propagation``: CRW label propagation of a ViT's tokens over whole videos, scored with J&F.

The encoder is a trained method's ``encoder`` (a checkpoint) or a bare pretrained ViT
(``model=dino_vits16``: the frozen-DINO baseline under the same settings). For every video of the
split, at the dataset's native resolution (the data config's evaluation transform is not used):

1. frames are resized so that their short side is ``short_side`` (CRW and SMTC: 480 on DAVIS;
   None keeps the native size), then each side is floored to a multiple of the patch size;
2. the encoder's block tokens ``[T, D, h, w]`` are computed ``chunk`` frames at a time and, for a
   ``feature_stride`` below the patch size, upsampled bilinearly to ``floor(H / stride) x
   floor(W / stride)`` (SMTC's stride-8 setting; :mod:`ocl.eval.label_propagation`);
3. the first frame's labels are propagated (:func:`~ocl.eval.label_propagation.propagate_labels`)
   and predicted at the labels' resolution;
4. J and F of every object follow the DAVIS semi-supervised protocol of the official toolkit:
   first and last frames not scored, void as background (:func:`~ocl.metrics.jandf.j_and_f`).
   Means are over all objects of all videos.

Predictions are written as palette PNGs ``<output>/<video>/<frame:05d>.png`` (DAVIS's layout,
readable by the official toolkit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset
from tqdm import tqdm

from ocl.build import UsageError, build_datamodule, build_model, report_metrics
from ocl.contracts.batch import MASKS, META, VIDEO
from ocl.data.clips import ClipDataset
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.images import write_palette_png
from ocl.eval.label_propagation import PropagationSettings, propagate_labels, video_features
from ocl.methods.base import ObjectCentricMethod
from ocl.metrics.jandf import j_and_f
from ocl.modules.patch_features import PatchEncoder
from ocl.predict.model import load_trained_model, resolve_device

log = logging.getLogger(__name__)


@dataclass
class PropagationResult:
    """Scores of a propagation run: ``j``, ``f`` and ``j_and_f`` means over objects, and counts."""

    j: float
    f: float
    num_objects: int
    num_videos: int
    num_skipped: int

    @property
    def j_and_f(self) -> float:
        return (self.j + self.f) / 2

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/j_and_f``, ``/j``, ``/f``, ``/num_objects``, ``/num_videos``, ``/videos_skipped``."""
        values = {
            "j_and_f": self.j_and_f,
            "j": self.j,
            "f": self.f,
            "num_objects": self.num_objects,
            "num_videos": self.num_videos,
            "videos_skipped": self.num_skipped,
        }
        return {f"{prefix}/{name}": float(value) for name, value in values.items()}


def native_videos(datamodule: Any, split: str) -> Dataset:
    """Whole labelled videos of ``split`` at their native resolution.

    Stored datasets are re-read without the data config's transform; other data modules (the
    embedded videos) serve their evaluation items as they are.
    """
    if isinstance(datamodule, StoredVideoDataModule):
        return ClipDataset(datamodule.open_source(split), clip_length=None, transform=None)
    datamodule.setup("test" if split == "test" else "validate")
    return getattr(datamodule, f"{split}_set")


def encoder_frames(video: torch.Tensor, short_side: int | None, patch_size: int) -> torch.Tensor:
    """``video [T, 3, H, W]`` resized (bilinear, antialiased) so its short side is ``short_side``,
    then with each side floored to a multiple of ``patch_size``."""
    height, width = video.shape[-2:]
    scale = 1.0 if short_side is None else short_side / min(height, width)
    size = (round(height * scale) // patch_size * patch_size, round(width * scale) // patch_size * patch_size)
    if min(size) < patch_size:
        raise ValueError(f"frames of {height}x{width} are smaller than one {patch_size}-pixel patch after resizing")
    if size == (height, width):
        return video
    return F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)


def propagation_features(
    encoder: PatchEncoder, frames: torch.Tensor, feature_stride: int, chunk: int, device: torch.device
) -> torch.Tensor:
    """Token maps ``[T, D, h, w]`` of ``frames [T, 3, H, W]`` on the grid of ``feature_stride``."""
    features = video_features(encoder.feature_maps, frames, chunk, device)
    if feature_stride != encoder.patch_size:
        size = (frames.shape[-2] // feature_stride, frames.shape[-1] // feature_stride)
        features = F.interpolate(features.float(), size=size, mode="bilinear", align_corners=False)
    return features


def write_palette_pngs(labels: np.ndarray, folder: Path, palette: list[int]) -> None:
    """Write int labels ``[T, H, W]`` as palette PNGs ``folder/<t:05d>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(labels):
        write_palette_png(folder / f"{t:05d}.png", frame, palette)


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS annotations (the bit-interleaved PASCAL VOC colour map)."""
    colours = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours += [red, green, blue]
    return colours


def evaluate_label_propagation(
    encoder: PatchEncoder,
    videos: Dataset,
    settings: PropagationSettings,
    feature_stride: int,
    short_side: int | None,
    chunk: int = 16,
    device: torch.device | str = "cpu",
    prediction_dir: Path | None = None,
) -> PropagationResult:
    """Propagate the first-frame labels of every video of ``videos`` and score them (see the module docs).

    Videos with fewer than 3 frames (nothing to score) or without objects are counted as skipped.
    """
    if feature_stride < 1 or encoder.patch_size % feature_stride:
        raise ValueError(f"feature_stride {feature_stride} must divide the patch size {encoder.patch_size}")
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    palette = davis_palette()
    j_sum = f_sum = 0.0
    num_objects = num_videos = num_skipped = 0
    for index in tqdm(range(len(videos)), desc="label propagation", unit="video"):
        item = videos[index]
        labels = item[MASKS]
        if len(labels) < 3 or not bool((labels > 0).any()):
            num_skipped += 1
            continue
        frames = encoder_frames(item[VIDEO].float(), short_side, encoder.patch_size)
        features = propagation_features(encoder, frames, feature_stride, chunk, device)
        predicted = propagate_labels(features, labels[0], settings, output_size=tuple(labels.shape[-2:]))
        scores = j_and_f(
            predicted.numpy(), labels.numpy(), match=False, exclude_first_last=True, void_as_background=True
        )
        j_sum += float(scores.j.sum())
        f_sum += float(scores.f.sum())
        num_objects += len(scores.object_ids)
        num_videos += 1
        if prediction_dir is not None:
            write_palette_pngs(predicted.numpy(), prediction_dir / str(item[META]["video_id"]), palette)
    if num_objects == 0:
        raise UsageError(f"no video of the split has first-frame labels and 3+ frames ({num_skipped} skipped)")
    return PropagationResult(j_sum / num_objects, f_sum / num_objects, num_objects, num_videos, num_skipped)


def propagation_encoder(cfg: DictConfig) -> PatchEncoder:
    """The encoder whose tokens are propagated: the trained method's of ``cfg.ckpt_path``; without a
    checkpoint, the untrained method's, or ``cfg.model`` itself when it is an encoder (``model=dino_vits16``)."""
    target = get_class(cfg.model._target_)
    if cfg.get("ckpt_path"):
        model = load_trained_model(cfg)
    elif issubclass(target, ObjectCentricMethod):
        log.info("no ckpt_path: propagating the untrained encoder of %s", target.__name__)
        model = build_model(cfg)
    else:
        model = instantiate(cfg.model)
    encoder = model.patch_encoder() if isinstance(model, ObjectCentricMethod) else model
    if not isinstance(encoder, PatchEncoder):
        raise UsageError(
            f"label propagation needs a patch encoder (a ViT or the stand-in); {type(model).__name__} has none. Use a ViT-based method's "
            "checkpoint (VideoSAUR, SlotContrast, SlotCurri, SMTC) or a bare encoder such as model=dino_vits16"
        )
    return encoder


def run_label_propagation(cfg: DictConfig) -> dict[str, float]:
    """``eval.py eval=label_propagation``: propagate on ``cfg.eval.split`` of ``cfg.data``, report and
    return ``{split}/j_and_f``, ``/j``, ``/f`` and counts."""
    output_dir = Path(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg)
    settings: PropagationSettings = instantiate(cfg.eval.propagation)
    result = evaluate_label_propagation(
        propagation_encoder(cfg),
        native_videos(datamodule, cfg.eval.split),
        settings,
        settings.feature_stride,
        cfg.eval.short_side,
        cfg.eval.chunk,
        resolve_device(cfg.eval.device),
        output_dir / "predictions" if cfg.eval.save_predictions else None,
    )
    metrics = result.metrics(cfg.eval.split)
    source = cfg.get("ckpt_path") or cfg.model._target_
    report_metrics(metrics, output_dir, f"label propagation ({cfg.eval.split}) of {source}")
    return metrics
