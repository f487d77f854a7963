"""Benchmark the evaluation path, soft masks -> FG-ARI and mBO, against a per-video loop.

Builds ground truth (moving disks, later objects occluding earlier ones, an ignored border) and
low-resolution soft masks of two kinds: ``smooth`` (blurred slot logits with mild noise: regions
with boundaries, as a decoder produces) and ``noisy`` (uniform noise on a one-hot: the argmax
flips between neighbouring pixels, the worst case for the CPU kernel). For each kind it times,
on the same inputs:

* the reference per-video loop: bilinear resize + argmax of one video (``F.interpolate``), then
  sklearn's ARI on the foreground pixels and a per-object, per-slot IoU loop for mBO;
* ocl's whole path: ``segmentation_contingency`` (on the CPU: the compiled resize + argmax +
  count of ``ocl.metrics.cpu_segmentation``) and both metrics from that one table;
* ocl's resize + argmax alone (``hard_segmentation``) against ``F.interpolate`` + argmax;

and prints the times, the speed ratios, whether the label maps are identical and the largest
score difference.

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
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from ocl.contracts.batch import IGNORE_ID
from ocl.metrics import (
    fg_ari_from_contingency,
    hard_segmentation,
    mbo_from_contingency,
    sample_tables,
    segmentation_contingency,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="label height and width")
    parser.add_argument("--mask-size", type=int, default=32, help="soft-mask height and width")
    parser.add_argument("--slots", type=int, default=11)
    parser.add_argument("--objects", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ocl's paths (median)")
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


def make_soft_masks(labels: torch.Tensor, slots: int, mask_size: int, kind: str, g: torch.Generator) -> torch.Tensor:
    """``[B, T, K, h, w]`` soft masks loosely following the labels (``kind``: smooth or noisy)."""
    b, t, h, w = labels.shape
    small = labels[..., :: h // mask_size, :: w // mask_size].clamp_min(0)
    slot = (small * 5 + torch.arange(b).reshape(b, 1, 1, 1)) % slots
    one_hot = torch.nn.functional.one_hot(slot, slots).permute(0, 1, 4, 2, 3).float()
    if kind == "noisy":
        return (one_hot + 1.5 * torch.rand(one_hot.shape, generator=g)).softmax(dim=2)
    binomial = torch.tensor([1.0, 2.0, 1.0])
    blur = (binomial[:, None] * binomial[None]).div(16).expand(slots, 1, 3, 3)
    logits = torch.nn.functional.pad(6 * one_hot.flatten(0, 1), (1, 1, 1, 1), mode="replicate")
    logits = torch.nn.functional.conv2d(logits, blur, groups=slots)
    logits = logits + 0.3 * torch.randn(logits.shape, generator=g)
    return logits.softmax(dim=1).reshape(b, t, slots, mask_size, mask_size)


def interpolate_ids(soft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int64 ``[T, H, W]`` of one video's ``[T, K, h, w]``: ``F.interpolate`` + argmax (the reference)."""
    return F.interpolate(soft.float(), size=size, mode="bilinear", align_corners=False).max(dim=1).indices


def reference(soft: torch.Tensor, true: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-video loop: resize + argmax, sklearn ARI on foreground pixels, per-object, per-slot IoU loop."""
    ari, mbo = [], []
    for video, t in zip(soft, true.reshape(len(true), -1), strict=True):
        p = interpolate_ids(video, true.shape[-2:]).numpy().reshape(-1)
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


def whole_path(soft: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Video FG-ARI and mBO from one shared contingency table of the soft masks (what the callback does)."""
    table = sample_tables(segmentation_contingency(soft, true), video=True)
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


def compare(kind: str, args: argparse.Namespace, device: torch.device) -> None:
    """Print the reference loop, the ocl path and their speed-ups for ``kind`` masks (smooth or noisy)."""
    size = (args.size, args.size)
    g = torch.Generator().manual_seed(args.seed)
    labels = make_labels(args.videos, args.frames, args.size, args.objects, g)
    soft = make_soft_masks(labels, args.slots, args.mask_size, kind, g)
    soft_device, true_device = soft.to(device), labels.to(device)

    start = time.perf_counter()
    ref_ari, ref_mbo = reference(soft, labels.numpy(), args.slots)
    slow = time.perf_counter() - start
    fast, (ari, mbo) = timed(lambda: whole_path(soft_device, true_device), args.repeats, device)
    diff = max(np.abs(ari.cpu().numpy() - ref_ari).max(), np.abs(mbo.cpu().numpy() - ref_mbo).max())

    flat = soft.flatten(0, 1)
    old, old_ids = timed(lambda: interpolate_ids(flat.to(device), size), args.repeats, device)
    new, new_ids = timed(lambda: hard_segmentation(soft_device, size), args.repeats, device)
    identical = torch.equal(new_ids.flatten(0, 1).cpu(), old_ids.cpu())
    print(f"[{kind} masks]")
    print(f"  reference per-video loop (resize + sklearn + numpy, once): {slow * 1e3:9.2f} ms")
    print(
        f"  ocl whole path, soft masks -> FG-ARI + mBO (median of {args.repeats}): {fast * 1e3:9.2f} ms   "
        f"speed-up {slow / fast:6.1f}x   max |score difference| {diff:.3e}"
    )
    print(
        f"  resize + argmax: F.interpolate {old * 1e3:9.2f} ms, ocl hard_segmentation {new * 1e3:9.2f} ms   "
        f"speed-up {old / new:6.1f}x   identical label maps: {identical}"
    )
    print(f"  mean video FG-ARI {ref_ari.mean():.4f}, mean mBO {ref_mbo.mean():.4f}")


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"{args.videos} videos x {args.frames} frames x {args.size}x{args.size} labels, {args.slots} slots at "
        f"{args.mask_size}x{args.mask_size}, {args.objects} objects, device={device}, "
        f"torch threads={torch.get_num_threads()}"
    )
    for kind in ("smooth", "noisy"):
        compare(kind, args, device)


if __name__ == "__main__":
    main()
