"""Benchmark the vectorised video FG-ARI + mBO against a per-video sklearn / numpy loop.

Builds random ground truth (moving disks, later objects occluding earlier ones, an ignored
border) and predictions from noisy soft masks at low resolution, then times both paths on the
same hard ids and prints the times, the speed ratios and the largest score differences. The
vectorised path is timed twice: with the two public functions (one contingency count each) and
with one shared count (as the metrics callback does).

    python scripts/bench_metrics.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from ocl.data.batch import IGNORE_ID
from ocl.metrics import (
    contingency,
    fg_ari_from_contingency,
    hard_segmentation,
    mbo_from_contingency,
    mean_best_overlap,
    sample_tables,
    video_fg_ari,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="label height and width")
    parser.add_argument("--mask-size", type=int, default=32, help="soft-mask height and width")
    parser.add_argument("--slots", type=int, default=11)
    parser.add_argument("--objects", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the vectorised path (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_labels(videos: int, frames: int, size: int, objects: int, g: torch.Generator) -> torch.Tensor:
    """int64 ``[B, T, H, W]``: ``objects`` moving disks per video, a 2-pixel ignored border."""
    centre = torch.rand(videos, objects, 1, 2, generator=g) * size
    velocity = (torch.rand(videos, objects, 1, 2, generator=g) - 0.5) * size / frames
    radius = (0.08 + 0.12 * torch.rand(videos, objects, 1, generator=g)) * size
    t = torch.arange(frames, dtype=torch.float32).reshape(1, 1, frames, 1)
    position = centre + velocity * t  # [B, M, T, 2]
    grid = torch.arange(size, dtype=torch.float32)
    dy = grid.reshape(1, 1, 1, size, 1) - position[..., 0, None, None]
    dx = grid.reshape(1, 1, 1, 1, size) - position[..., 1, None, None]
    inside = dy.square() + dx.square() < radius[..., None, None].square()  # [B, M, T, H, W]
    labels = torch.zeros(videos, frames, size, size, dtype=torch.int64)
    for m in range(objects):
        labels[inside[:, m]] = m + 1
    labels[..., :2, :] = labels[..., -2:, :] = IGNORE_ID
    labels[..., :, :2] = labels[..., :, -2:] = IGNORE_ID
    return labels


def make_soft_masks(labels: torch.Tensor, slots: int, mask_size: int, g: torch.Generator) -> torch.Tensor:
    """``[B, T, K, h, w]`` soft masks loosely following the labels, with noise."""
    b, t, h, w = labels.shape
    small = labels[..., :: h // mask_size, :: w // mask_size].clamp_min(0)
    slot = (small * 5 + torch.arange(b).reshape(b, 1, 1, 1)) % slots
    one_hot = torch.nn.functional.one_hot(slot, slots).permute(0, 1, 4, 2, 3).float()
    return (one_hot + 1.5 * torch.rand(one_hot.shape, generator=g)).softmax(dim=2)


def reference(pred: np.ndarray, true: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-video loop: sklearn ARI on foreground pixels and a per-object, per-slot IoU loop."""
    ari, mbo = [], []
    for p, t in zip(pred.reshape(len(pred), -1), true.reshape(len(true), -1), strict=True):
        foreground = t > 0
        ari.append(adjusted_rand_score(t[foreground], p[foreground]))
        valid = t != IGNORE_ID
        best = []
        for m in np.unique(t[foreground]):
            true_mask = t == m
            ious = []
            for k in range(slots):
                pred_mask = (p == k) & valid
                ious.append(np.logical_and(pred_mask, true_mask).sum() / np.logical_or(pred_mask, true_mask).sum())
            best.append(max(ious))
        mbo.append(np.mean(best))
    return np.array(ari), np.array(mbo)


def separate(pred: torch.Tensor, true: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Video FG-ARI and mBO with the two public functions (one contingency count each)."""
    ari, _ = video_fg_ari(pred, true, slots)
    mbo, _ = mean_best_overlap(pred, true, slots, video=True)
    return ari, mbo


def shared(pred: torch.Tensor, true: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both metrics from one shared contingency count (what the callback does)."""
    table = sample_tables(contingency(pred, true, slots), video=True)
    return fg_ari_from_contingency(table)[0], mbo_from_contingency(table)[0]


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """Median wall time (s) of ``repeats`` calls after one warm-up, and the last result."""

    def call() -> Any:
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result

    result = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    labels = make_labels(args.videos, args.frames, args.size, args.objects, g)
    soft = make_soft_masks(labels, args.slots, args.mask_size, g)
    device = torch.device(args.device)
    pred = hard_segmentation(soft.to(device), (args.size, args.size))
    true = labels.to(device)
    print(
        f"{args.videos} videos x {args.frames} frames x {args.size}x{args.size}, {args.slots} slots, "
        f"{args.objects} objects, device={device}, torch threads={torch.get_num_threads()}"
    )

    pred_np, true_np = pred.cpu().numpy(), labels.numpy()
    start = time.perf_counter()
    ref_ari, ref_mbo = reference(pred_np, true_np, args.slots)
    slow = time.perf_counter() - start
    print(f"reference loop (sklearn + numpy, once):   {slow * 1e3:9.2f} ms")

    for name, fn in (("vectorised, separate functions", separate), ("vectorised, shared contingency", shared)):
        fast, (ari, mbo) = timed(lambda fn=fn: fn(pred, true, args.slots), args.repeats, device)
        diff = max(np.abs(ari.cpu().numpy() - ref_ari).max(), np.abs(mbo.cpu().numpy() - ref_mbo).max())
        print(
            f"{name} (median of {args.repeats}): {fast * 1e3:9.2f} ms   speed-up {slow / fast:6.1f}x   "
            f"max |score difference| {diff:.3e}"
        )
    resize, _ = timed(lambda: hard_segmentation(soft.to(device), (args.size, args.size)), args.repeats, device)
    print(f"hard_segmentation of the soft masks (not in the timings above): {resize * 1e3:9.2f} ms")
    print(f"mean video FG-ARI {ref_ari.mean():.4f}, mean mBO {ref_mbo.mean():.4f}")


if __name__ == "__main__":
    main()
