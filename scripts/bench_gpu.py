"""The GPU measurements of the speed work in one prepared run (under 8 minutes on one H100 / H200).

Each step runs one of the benchmark scripts in a subprocess with its own time limit and writes its
output to ``--out/<step>.log``; ``--out/summary.md`` lists each step's exit status and seconds:

1. ``feature_cache``: ``bench_experiments.py --feature-cache`` on the DINO-feature MOVi recipes in
   bf16 (clips/s on frames and on cached features, their ratio, the decoder's share of the step);
2. ``slotcurri_ratio``: SlotCurri / SlotContrast step time in bf16 on MOVi-C and YT-VIS (eager);
3. ``compiled``: the same on MOVi-C with ``compile=true`` beside eager, with the schedule hours;
4. ``loaders``: ``bench_data.py`` with 14 worker processes (a 16-core GPU node), YT-VIS, YT-VOS,
   DAVIS and video files against 3x each recipe's bf16 demand.

    python scripts/bench_gpu.py --out gpu_results
    python scripts/bench_gpu.py --tiny --out /tmp/gpu_smoke     # CPU smoke run of the same steps (tests)

A step that outlives its limit is stopped and its log kept, so one slow step costs only its own
budget. The lent GPU machine has torch, lightning, timm and scipy but not hydra-core, omegaconf,
pycocotools, decord or av: docs/benchmarks.md ("GPU checks") gives the wheels to carry and the
command line. Run from the repository root; ``ocl`` is imported from there (no install needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_MODULES = ("torch", "lightning", "timm", "scipy", "hydra", "omegaconf", "pycocotools", "decord", "av")


@dataclass(frozen=True)
class Step:
    """One benchmark run: ``script`` with ``arguments`` (GPU) or ``tiny_arguments`` (CPU smoke run;
    ``None``: skipped there), stopped after ``limit_s`` seconds."""

    name: str
    script: str
    arguments: tuple[str, ...]
    tiny_arguments: tuple[str, ...] | None
    limit_s: int


TINY_EXPERIMENTS = ("--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0")
STEPS = (
    Step(
        "feature_cache",
        "scripts/bench_experiments.py",
        (
            "--experiments",
            "videosaur_movi_c",
            "slotcontrast_movi_c",
            "slotcurri_movi",
            "--precisions",
            "bf16-mixed",
            "--feature-cache",
        ),
        (
            "--experiments",
            "videosaur_movi_c",
            "slotcontrast_movi_c",
            "--precisions",
            "32-true",
            "--feature-cache",
            *TINY_EXPERIMENTS,
        ),
        120,
    ),
    Step(
        "slotcurri_ratio",
        "scripts/bench_experiments.py",
        (
            "--experiments",
            "slotcontrast_movi_c",
            "slotcurri_movi",
            "slotcontrast_ytvis",
            "slotcurri_ytvis",
            "--precisions",
            "bf16-mixed",
            "--batch-size",
            "64",
        ),
        ("--experiments", "slotcontrast_movi_c", "slotcurri_movi", "--precisions", "32-true", *TINY_EXPERIMENTS),
        75,
    ),
    Step(
        "compiled",
        "scripts/bench_experiments.py",
        (
            "--experiments",
            "slotcontrast_movi_c",
            "slotcurri_movi",
            "--precisions",
            "bf16-mixed",
            "--batch-size",
            "64",
            "--compile",
        ),
        None,  # compiling takes minutes per model on a CPU (docs/scaling.md)
        150,
    ),
    Step(
        "loaders",
        "scripts/bench_data.py",
        (
            "--only",
            "ytvis2021",
            "ytvos",
            "davis2017",
            "video_files",
            "--workers",
            "14",
            "--videos",
            "6",
            "--batches",
            "4",
            "--loader-rounds",
            "1",
        ),
        ("--only", "ytvis2021", "davis2017", "--quick", "--workers", "2"),
        120,
    ),
)


def missing_modules(names: tuple[str, ...] = REQUIRED_MODULES) -> list[str]:
    """The modules of ``names`` that this Python cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def run_step(step: Step, tiny: bool, out: Path) -> tuple[str, float]:
    """Run ``step`` with its output in ``out/<name>.log`` -> (status, seconds): ``ok``, ``exit N``,
    ``stopped after N s`` or ``skipped (--tiny)``."""
    arguments = step.tiny_arguments if tiny else step.arguments
    if arguments is None:
        return "skipped (--tiny)", 0.0
    log = out / f"{step.name}.log"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, step.script, *arguments]
    start = time.perf_counter()
    with log.open("w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        try:
            code = subprocess.run(
                command,
                check=False,
                cwd=ROOT,
                env=environment,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=step.limit_s,
            ).returncode
        except subprocess.TimeoutExpired:
            return f"stopped after {step.limit_s} s", time.perf_counter() - start
    return ("ok" if code == 0 else f"exit {code}"), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the logs and summary.md")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny shapes, no compilation")
    parser.add_argument("--steps", nargs="*", choices=[step.name for step in STEPS], help="default: all")
    args = parser.parse_args()
    missing = missing_modules()
    if missing:
        sys.exit(
            f"missing Python packages: {', '.join(missing)}. On the lent GPU machine install the carried wheels "
            "first (docs/benchmarks.md, 'GPU checks'); elsewhere: pip install -e ."
        )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = ["| step | status | seconds | log |", "|---|---|---|---|"]
    for step in STEPS:
        if args.steps and step.name not in args.steps:
            continue
        status, seconds = run_step(step, args.tiny, args.out)
        rows.append(f"| {step.name} | {status} | {seconds:.0f} | {step.name}.log |")
        print(rows[-1], flush=True)
    (args.out / "summary.md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
