"""One clip to look at closely (``notebooks/explore_slots.ipynb``): from the run's validation data
(with labels, so with metrics) or from a video file, and the clip's scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torchmetrics import Metric

from ocl.build import build_datamodule
from ocl.contracts.batch import MASKS, META, VIDEO
from ocl.contracts.output import ModelOutput
from ocl.data.transforms import VideoTransform
from ocl.data.video_files import VideoFileSource
from ocl.metrics.scoring import metric_values, update_metrics


@dataclass(frozen=True)
class Clip:
    """A clip in the model's input format.

    Attributes:
        name: the video's id.
        video: float ``[T, 3, H, W]`` in [0, 1].
        masks: int64 ``[T, H, W]`` instance labels (0 background, -1 ignored), or None.
    """

    name: str
    video: torch.Tensor
    masks: torch.Tensor | None = None


def validation_clip(cfg: DictConfig, index: int = 0, max_frames: int | None = None) -> Clip:
    """Video ``index`` of the run's validation data (``cfg.data``), as ``eval.py`` scores it, cut
    to its first ``max_frames`` frames (None: all)."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    dataset = datamodule.val_set
    if not 0 <= index < len(dataset):
        raise IndexError(f"the run's validation data has {len(dataset)} videos (0..{len(dataset) - 1}); got {index}")
    item = dataset[index]
    masks = item.get(MASKS)
    return Clip(item[META]["video_id"], item[VIDEO][:max_frames], None if masks is None else masks[:max_frames])


def file_clip(path: str | Path, transform: VideoTransform, max_frames: int | None = None) -> Clip:
    """The first ``max_frames`` frames (None: all) of a video file, resized by ``transform``; no labels.
    Raises DataError naming the file if it is missing or corrupt."""
    source = VideoFileSource([Path(path).expanduser()], max_frames=max_frames)
    frames, _ = source.read(0, np.arange(source.num_frames(0)))
    video, _ = transform(frames, None)
    return Clip(source.video_id(0), video)


def clip_metrics(output: ModelOutput, labels: torch.Tensor, metrics: Mapping[str, Metric]) -> dict[str, float]:
    """The clip's scores by ``metrics`` (``instantiate(cfg.metrics)``: what ``eval.py`` logs, each on
    the masks it scores, e.g. SMTC's semantic masks; :mod:`ocl.metrics.scoring`).

    Args:
        output: the model's output of the clip, batch size one
            (:func:`~ocl.predict.model.predict_output`; ``masks [1, T, K, h, w]``).
        labels: int64 ``[T, H, W]`` its instance labels.
        metrics: name -> metric (fresh instances; updated here).

    Returns:
        key -> score (J&F gives ``j_and_f``, ``j`` and ``f``); NaN where the clip has nothing to
        score (e.g. no foreground object).
    """
    update_metrics(metrics, output, labels.unsqueeze(0))
    return metric_values(metrics, with_skipped=False)
