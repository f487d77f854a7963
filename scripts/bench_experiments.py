"""Training throughput and peak memory of experiments at their real resolution, per precision.

For each experiment the model is built from its config with random encoder weights (no download)
and trained for a few steps on random clips of the experiment's shape (frames, side, per-device
batch from its data config), outside Lightning: forward, the configured losses, backward,
optimiser step, and the method's after-step hook (SMTC's EMA teacher). Printed per experiment and
precision: clips/s, peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: not measured), and
the ratios of each precision to ``32-true`` measured in the same run.

    python scripts/bench_experiments.py --device cuda                                   # every real-data experiment
    python scripts/bench_experiments.py --device cuda --experiments smtc_ytvos slotcurri_movi --batch-size 8
    python scripts/bench_experiments.py --tiny                                          # CPU smoke run (tests)

``--tiny`` shrinks every experiment to a 2-clip batch of up to 3 frames at a few tokens: it checks that
the script runs, not the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from ocl.cli import build_model
from ocl.data.batch import VIDEO

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="*", default=None, help="default: every experiment not *_synthetic")
    parser.add_argument("--precisions", nargs="*", default=["32-true", "bf16-mixed"], choices=sorted(PRECISIONS))
    parser.add_argument("--batch-size", type=int, default=None, help="per-device clips (default: the config's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a CPU smoke run")
    return parser.parse_args()


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml") if not p.stem.endswith("_synthetic"))


def tiny_overrides(cfg: DictConfig) -> list[str]:
    """Overrides that shrink a composed experiment to a few tokens (as tests/test_configs.py does)."""
    encoder = cfg.model.get("encoder", {})
    if "head" in cfg.model:
        return [f"model.encoder.image_size={2 * encoder.patch_size}", "model.head.fusion.reference_grid=[2,2]"]
    if "patch_size" in encoder:
        return [f"model.encoder.image_size={3 * encoder.patch_size}", "model.decoder.hidden_dims=[16]"]
    joint_norm = ["model.encoder.joint_norm_tokens=64"] if encoder.get("joint_norm_tokens") else []  # 8 x 8 tokens
    return [
        "model.encoder.channels=[8,8]",
        "model.encoder.strides=[2,1]",
        "model.decoder.channels=[8]",
        "model.decoder.output_size=16",
        *joint_norm,
    ]


def compose_experiment(name: str, tiny: bool) -> DictConfig:
    overrides = [f"experiment={name}", "paths.output_dir=/unused"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
        if cfg.model.get("encoder", {}).get("weights") == "hub":
            overrides.append("model.encoder.weights=random")
        if tiny:
            overrides += tiny_overrides(cfg)
        cfg = compose(config_name="train", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def clip_shape(cfg: DictConfig, tiny: bool) -> tuple[int, int, int]:
    """``(batch, frames, side)`` of the experiment's training clips."""
    data = cfg.data
    frames = data.get("train_clip_length") or data.get("train_frames") or 1
    side = data.train_transform.size if "train_transform" in data else data.resolution
    encoder = cfg.model.get("encoder", {})
    if "image_size" in encoder:
        side = encoder.image_size
    elif tiny:
        side = 16
    return (2, min(frames, 3), side) if tiny else (data.batch_size, frames, side)


def measure(
    cfg: DictConfig, precision: str, batch: int, frames: int, side: int, args: argparse.Namespace
) -> tuple[float, float | None]:
    """``(clips per second, peak GiB or None on a CPU)`` of training steps at ``precision``."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    optimizer = model.optimizer_factory(params=model.parameter_groups())
    video = torch.rand(batch, frames, 3, side, side, device=device)
    dtype = PRECISIONS[precision]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            total, _ = model.compute_losses(model({VIDEO: video}), {VIDEO: video})
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        model.on_train_batch_end(None, {VIDEO: video}, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return batch / statistics.median(times), peak


def main() -> None:
    args = parse_args()
    names = args.experiments or experiment_names()
    print(f"device {args.device}; {args.steps} timed steps after {args.warmup} warm-up steps; random weights")
    print(
        "| experiment | precision | batch x frames x side | clips/s | peak GiB | clips/s vs 32-true | memory vs 32-true |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        cfg = compose_experiment(name, args.tiny)
        batch, frames, side = clip_shape(cfg, args.tiny)
        batch = args.batch_size or batch
        baseline = None
        for precision in args.precisions:
            try:
                speed, peak = measure(cfg, precision, batch, frames, side, args)
            except torch.cuda.OutOfMemoryError:
                print(
                    f"| {name} | {precision} | {batch} x {frames} x {side} | out of memory: lower --batch-size | | | |"
                )
                torch.cuda.empty_cache()
                continue
            if precision == "32-true":
                baseline = (speed, peak)
            speed_ratio = f"{speed / baseline[0]:.2f}" if baseline else "-"
            memory_ratio = f"{peak / baseline[1]:.2f}" if baseline and peak else "-"
            peak_text = f"{peak:.2f}" if peak is not None else "n/a (CPU)"
            print(
                f"| {name} | {precision} | {batch} x {frames} x {side} | {speed:.2f} | {peak_text} "
                f"| {speed_ratio} | {memory_ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
