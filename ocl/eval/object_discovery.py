"""``eval.py eval=object_discovery``: SMTC's unsupervised multi-object discovery on DAVIS-2017, as
the authors run and score it (shvdiwnkozbw/SMTC 4a31e5c: ``eval_multi.sh``, ``src/eval_multi.py``
and their modified copy of the DAVIS toolkit, ``davis2017-evaluation/davis2017/{results,evaluation}.py``).

For every video of the split (labels: ``data.annotations=unsupervised``, the toolkit's
``Annotations_unsupervised``, at their native resolution):

1. frames are stretched to ``frame_size`` (480 x 800: bilinear without antialiasing, as their
   ``cv2.resize``) and standardised with ``pixel_mean`` / ``pixel_std`` (their evaluation uses the
   Kinetics-400 statistics, their training ImageNet's);
2. the student (:meth:`~ocl.methods.smtc.SMTC.instance_proposals`) runs on consecutive
   ``chunk_frames``-frame chunks, each on its own (its correspondence fusion pairs the chunk's
   first frame with its last; fresh instance noise), with ``slot_iterations`` slot-attention
   iterations (5; training uses 3); a last, shorter chunk is filled up with the video's last
   frames and only its own frames are kept;
3. the proposals of a frame are its instance masks whose score (cosine between the instance slot
   and its semantic slot) is at least ``score_threshold``, in instance order; each is upsampled
   to the labels' size (nearest), min-max normalised and thresholded at ``mask_threshold``
   (proposals may overlap; a constant mask is empty);
4. objects are ids ``1..max`` of the first frame's labels; J and F of every (proposal, object)
   pair are the toolkit's (void pixels excluded); in every frame, proposals (padded with empty
   ones to the video's most proposals of any frame, and to the number of objects) are matched
   one-to-one to the objects by the Hungarian algorithm on J + F, **frame by frame** (the
   official toolkit matches once per video); an object's J (F) is the mean over frames of the
   matched pairs' (the toolkit lists them in proposal order, which changes no mean), J-Mean and
   F-Mean are means over all objects of all videos.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy.optimize import linear_sum_assignment
from torch.utils.data import Dataset
from tqdm import tqdm

from ocl.build import UsageError, build_datamodule, report_metrics
from ocl.contracts.batch import IGNORE_ID, MASKS, VIDEO
from ocl.eval.propagation_run import native_videos
from ocl.methods.smtc import SMTC
from ocl.metrics.jandf import _pair_scores, boundary_radius
from ocl.predict.model import load_trained_model, resolve_device

log = logging.getLogger(__name__)

MAX_PROPOSALS = 300
"""The toolkit refuses results with more proposals per frame."""


@dataclass(frozen=True)
class DiscoverySettings:
    """The evaluation's settings (see the module docs; defaults: the authors').

    Attributes:
        frame_size: ``(H, W)`` the frames are stretched to.
        pixel_mean, pixel_std: per-channel statistics the frames are standardised with.
        chunk_frames: frames per model call.
        slot_iterations: slot-attention iterations of both stages.
        score_threshold: an instance mask is a proposal if its score is at least this.
        mask_threshold: a normalised proposal covers the pixels above this.
    """

    frame_size: tuple[int, int] = (480, 800)
    pixel_mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    pixel_std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
    chunk_frames: int = 4
    slot_iterations: int = 5
    score_threshold: float = 0.5
    mask_threshold: float = 0.3

    def __post_init__(self) -> None:
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size must be (H, W), got {self.frame_size!r}")
        if self.chunk_frames < 1 or self.slot_iterations < 1:
            values = f"{self.chunk_frames}, {self.slot_iterations}"
            raise ValueError(f"chunk_frames and slot_iterations must be >= 1, got {values}")


def chunks(num_frames: int, size: int) -> list[tuple[np.ndarray, int]]:
    """Frame indices of each model call and how many of them are its own: consecutive chunks of
    ``size``; the last one, if shorter, is filled up with the video's last frames (the authors'
    ``torch.cat([rgbs[:, i:i+n], rgbs[:, -(n - len):]])``; a video shorter than a chunk repeats)."""
    out = []
    for start in range(0, num_frames, size):
        own = np.arange(start, min(start + size, num_frames))
        filler = np.arange(num_frames - (size - len(own)), num_frames) % num_frames
        out.append((np.concatenate([own, filler]), len(own)))
    return out


def model_frames(
    video: torch.Tensor, settings: DiscoverySettings, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """``video [T, 3, H, W]`` in [0, 1] -> frames at ``settings.frame_size`` that a model which
    standardises with ``mean`` / ``std`` (``[1, 3, 1, 1]``) sees as standardised with
    ``settings.pixel_mean`` / ``pixel_std``."""
    frames = F.interpolate(video, size=tuple(settings.frame_size), mode="bilinear", align_corners=False)
    target_mean = frames.new_tensor(settings.pixel_mean).view(1, 3, 1, 1)
    target_std = frames.new_tensor(settings.pixel_std).view(1, 3, 1, 1)
    return (frames - target_mean) / target_std * std.to(frames) + mean.to(frames)


def binary_proposals(masks: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """Soft masks ``[P, h, w]`` -> bool ``[P, H, W]``: upsampled (nearest), each min-max normalised,
    above ``threshold`` (the toolkit's ``Results.load_davis``)."""
    resized = F.interpolate(masks[:, None].double(), size=size, mode="nearest")[:, 0].flatten(1)
    low, high = resized.min(dim=1, keepdim=True).values, resized.max(dim=1, keepdim=True).values
    normalised = (resized - low) / (high - low)  # a constant mask gives NaN: empty
    return (normalised > threshold).view(-1, *size).cpu().numpy()


def matched_scores(
    proposals: np.ndarray, objects: np.ndarray, void: np.ndarray, rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """J and F ``[M]`` of one frame's Hungarian matching (on J + F) of ``proposals [P, H, W]``,
    padded with empty ones to ``rows >= M``, to ``objects [M, H, W]``; ``void [H, W]`` excluded."""
    padded = np.zeros((rows, *objects.shape[1:]), dtype=bool)
    padded[: len(proposals)] = proposals
    j, f = _pair_scores(padded, objects, ~void, boundary_radius(*objects.shape[1:]))
    matched_rows, matched_cols = linear_sum_assignment(j + f, maximize=True)
    return j[matched_rows, matched_cols], f[matched_rows, matched_cols]


def video_proposals(model: SMTC, video: torch.Tensor, settings: DiscoverySettings) -> list[torch.Tensor]:
    """Each frame's proposals ``[P_t, h, w]`` (soft, on the token grid) of a ``[T, 3, H, W]`` video."""
    encoder = model.patch_encoder()
    frames = model_frames(video, settings, encoder.mean, encoder.std)
    per_frame = []
    for indices, own in chunks(len(frames), settings.chunk_frames):
        masks, scores = model.instance_proposals(frames[torch.from_numpy(indices)][None], settings.slot_iterations)
        per_frame += [m[s >= settings.score_threshold] for m, s in zip(masks[0, :own], scores[0, :own], strict=True)]
    return per_frame


def score_video(proposals: list[torch.Tensor], labels: np.ndarray, settings: DiscoverySettings) -> np.ndarray:
    """``[M, 2]`` J and F of every object of a video (ids ``1..max`` of frame 0, void excluded),
    each the mean over frames of its per-frame matched pair (see the module docs)."""
    num_objects = int(np.where(labels[0] == IGNORE_ID, 0, labels[0]).max())
    most = max(len(p) for p in proposals)
    if most > MAX_PROPOSALS:
        raise ValueError(f"{most} proposals in a frame; the DAVIS toolkit accepts at most {MAX_PROPOSALS}")
    rows = max(most, num_objects)
    ids = np.arange(1, num_objects + 1)[:, None, None]
    totals = np.zeros((num_objects, 2))
    for frame_proposals, frame_labels in zip(proposals, labels, strict=True):
        binary = binary_proposals(frame_proposals, frame_labels.shape, settings.mask_threshold)
        j, f = matched_scores(binary, frame_labels == ids, frame_labels == IGNORE_ID, rows)
        totals += np.stack([j, f], axis=1)
    return totals / len(labels)


def evaluate_object_discovery(
    model: torch.nn.Module, videos: Dataset, settings: DiscoverySettings, device: torch.device
) -> dict[str, float]:
    """``{j_and_f, j, f, num_objects, num_videos, videos_skipped, proposals_per_frame}`` over ``videos``
    (videos whose first frame has no object are skipped)."""
    model = model.to(device).eval()
    scores, skipped, proposal_count, frame_count = [], 0, 0, 0
    for index in tqdm(range(len(videos)), desc="object discovery", unit="video"):
        item = videos[index]
        labels = item[MASKS].numpy()
        if not (labels[0] > 0).any():
            skipped += 1
            continue
        proposals = video_proposals(model, item[VIDEO].float().to(device), settings)
        scores.append(score_video(proposals, labels, settings))
        proposal_count += sum(len(p) for p in proposals)
        frame_count += len(proposals)
    if not scores:
        raise UsageError(f"no video of the split has an object in its first frame ({skipped} skipped)")
    j, f = np.concatenate(scores).mean(axis=0)
    return {
        "j_and_f": (j + f) / 2,
        "j": j,
        "f": f,
        "num_objects": sum(len(s) for s in scores),
        "num_videos": len(scores),
        "videos_skipped": skipped,
        "proposals_per_frame": proposal_count / frame_count,
    }


def run_object_discovery(cfg: DictConfig) -> dict[str, float]:
    """``eval.py eval=object_discovery``: score ``cfg.ckpt_path``'s SMTC on ``cfg.eval.split`` of
    ``cfg.data``, report and return ``{split}/j_and_f``, ``/j``, ``/f`` and counts."""
    if not cfg.get("ckpt_path"):
        raise UsageError("eval=object_discovery needs ckpt_path=<checkpoint> of an SMTC run")
    model = load_trained_model(cfg)
    if not isinstance(model, SMTC):
        raise UsageError(f"eval=object_discovery scores SMTC's instance proposals; {type(model).__name__} has none")
    settings: DiscoverySettings = instantiate(cfg.eval.settings)
    device = resolve_device(cfg.eval.device)
    scores = evaluate_object_discovery(model, native_videos(build_datamodule(cfg), cfg.eval.split), settings, device)
    metrics = {f"{cfg.eval.split}/{name}": float(value) for name, value in scores.items()}
    report_metrics(metrics, Path(cfg.paths.output_dir), f"object discovery ({cfg.eval.split}) of {cfg.ckpt_path}")
    return metrics
