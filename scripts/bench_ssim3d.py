"""Benchmark SlotCurri's 3-D SSIM loss term: the fused path vs the previous formulation.

``StructureSSIM3D`` (forward + backward) on a token reconstruction and target ``[B, T, h*w, D]``
of SlotContrast's MOVi-C shape (4 frames, 24 x 24 tokens of DINOv2 ViT-S/14, D = 384), against
the formulation it replaced (``previous_structure_loss``, as ocl had it until the fused path):
both volumes upcast and copied to compute their joint min and max, and each of the five moments
x, y, x², y², xy blurred by three depthwise ``conv3d`` calls (15 in all, ``pytorch_msssim``'s
way). Rounds alternate between the two, so that load changes on the machine affect both alike;
the ratio printed is the median of the per-round ratios. Both are also compared in float64.

    python scripts/bench_ssim3d.py --threads 1 --batch 2
    python scripts/bench_ssim3d.py --device cuda --batch 64 --dtype bfloat16   # an AMP decoder's output
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ocl.contracts.output import ModelOutput
from ocl.losses.ssim3d import RANGE_EPS, StructureSSIM3D, as_volume, gaussian_taps

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--grid", type=int, default=24, help="tokens per side")
    parser.add_argument("--dim", type=int, default=384, help="feature channels D")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="of the decoder's output")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per round (median)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def _depthwise_blur(volume: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian over T, H, W of ``[B, C, T, H, W]``: three depthwise conv3d, valid padding."""
    channels = volume.shape[1]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = taps.numel()
        volume = F.conv3d(volume, taps.to(volume).reshape(shape).expand(channels, 1, *shape[2:]), groups=channels)
    return volume


def previous_structure_loss(reconstruction: torch.Tensor, target: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``1 - mean 3-D SSIM`` of tokens ``[B, T, h*w, D]`` as computed before the fused path (window 3, sigma 1.5)."""
    with torch.autocast(device_type=reconstruction.device.type, enabled=False):
        prediction = as_volume(
            reconstruction.float() if reconstruction.dtype != torch.float64 else reconstruction, grid
        )
        target = as_volume(target.detach().float() if target.dtype != torch.float64 else target.detach(), grid)
        with torch.no_grad():
            both = torch.cat([prediction.flatten(1), target.flatten(1)], dim=1)
            low = both.min(dim=1).values.view(-1, 1, 1, 1, 1)
            span = both.max(dim=1).values.view(-1, 1, 1, 1, 1) - low + RANGE_EPS
        x, y = (prediction - low) / span, (target - low) / span
        taps = gaussian_taps(3, 1.5)
        c1, c2 = 0.01**2, 0.03**2
        mean_x, mean_y = _depthwise_blur(x, taps), _depthwise_blur(y, taps)
        var_x = _depthwise_blur(x * x, taps) - mean_x**2
        var_y = _depthwise_blur(y * y, taps) - mean_y**2
        cov = _depthwise_blur(x * y, taps) - mean_x * mean_y
        luminance = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
        structure = (2 * cov + c2) / (var_x + var_y + c2)
        return 1.0 - (luminance * structure).flatten(1).mean(dim=1).mean()


def fused_structure_loss(reconstruction: torch.Tensor, target: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The loss term as SlotCurri's recipes run it (:class:`~ocl.losses.StructureSSIM3D`)."""
    batch, frames = reconstruction.shape[:2]
    output = ModelOutput(
        slots=reconstruction.new_zeros(batch, frames, 1, 1),
        masks=reconstruction.new_zeros(batch, frames, 1, *grid),
        reconstruction=reconstruction,
        target=target,
    )
    return StructureSSIM3D()(output, {})


def seconds_per_call(loss: Callable[..., torch.Tensor], inputs: tuple, steps: int, device: torch.device) -> float:
    """Median wall time of ``loss(*inputs)`` forward + backward over ``steps`` calls after one warm-up call."""
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss(*inputs).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def inputs(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A reconstruction (requiring grad) and a nearby target, tokens ``[B, T, grid², D]``."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.frames, args.grid**2, args.dim)
    target = torch.randn(shape, generator=generator)
    reconstruction = target + 0.5 * torch.randn(shape, generator=generator)
    return reconstruction.to(device, dtype).requires_grad_(), target.to(device, dtype)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    grid = (args.grid, args.grid)

    reconstruction, target = inputs(args, torch.float64, torch.device("cpu"))
    previous = previous_structure_loss(reconstruction, target, grid)
    (previous_grad,) = torch.autograd.grad(previous, reconstruction)
    fused = fused_structure_loss(reconstruction, target, grid)
    (fused_grad,) = torch.autograd.grad(fused, reconstruction)
    loss_diff, grad_diff = (fused - previous).abs().item(), (fused_grad - previous_grad).abs().max().item()

    reconstruction, target = inputs(args, DTYPES[args.dtype], device)
    timings: dict[str, list[float]] = {"previous": [], "fused": []}
    for _ in range(args.rounds):
        for name, loss in (("previous", previous_structure_loss), ("fused", fused_structure_loss)):
            timings[name].append(seconds_per_call(loss, (reconstruction, target, grid), args.steps, device))
    ratios = [old / new for old, new in zip(timings["previous"], timings["fused"], strict=True)]

    print(
        f"StructureSSIM3D forward + backward on {device} ({torch.get_num_threads()} threads), "
        f"tokens {args.batch} x {args.frames} x {args.grid}² x {args.dim} in {args.dtype}; "
        f"{args.rounds} rounds of {args.steps} calls"
    )
    print("| round | previous (15 depthwise conv3d) ms | fused ms | previous / fused |")
    print("|---|---|---|---|")
    for index, (old, new, ratio) in enumerate(zip(timings["previous"], timings["fused"], ratios, strict=True)):
        print(f"| {index} | {old * 1e3:.1f} | {new * 1e3:.1f} | {ratio:.2f} |")
    print(
        f"| median | {statistics.median(timings['previous']) * 1e3:.1f} | {statistics.median(timings['fused']) * 1e3:.1f} "
        f"| **{statistics.median(ratios):.2f}** |"
    )
    print(f"float64: |loss difference| {loss_diff:.1e}, max |gradient difference| {grad_diff:.1e}")


if __name__ == "__main__":
    main()
