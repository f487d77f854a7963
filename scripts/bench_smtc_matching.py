"""Benchmark SMTC's instance matching: all permutations at once on the device vs SciPy in a loop.

The instance-consistency loss matches the student's instances to the teacher's for every ordered
frame pair, video and semantic: at the published recipe (32 clips per GPU, 4 frames, 16 semantics,
4 instances) that is 32 * 4 * 4 * 16 = 8192 assignment problems of 4 x 4 per step. The authors'
code solves them with SciPy in a Python loop (as ``scipy_matches``); ``exhaustive_matches`` scores
the 24 permutations of every problem in one tensor operation. Both are timed on the same random
similarities, and their matchings are compared.

    python scripts/bench_smtc_matching.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ocl.losses.smtc import exhaustive_matches, scipy_matches


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--semantics", type=int, default=16)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def median_seconds(function: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.clips, args.frames, args.frames, args.semantics, args.instances, args.instances)
    similarity = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
    problems = similarity[..., 0, 0].numel()
    exhaustive = median_seconds(lambda: exhaustive_matches(similarity), args.repeats, device)
    loop = median_seconds(lambda: scipy_matches(similarity), args.repeats, device)
    same = torch.equal(exhaustive_matches(similarity), scipy_matches(similarity))
    print(f"{problems} assignment problems of {args.instances} x {args.instances} on {device}")
    print(f"scipy loop (baseline)    {loop * 1e3:9.2f} ms")
    print(f"all permutations         {exhaustive * 1e3:9.2f} ms")
    print(f"speed-up                 {loop / exhaustive:9.1f} x")
    print(f"identical matchings      {same}")


if __name__ == "__main__":
    main()
