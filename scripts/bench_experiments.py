"""Training throughput and peak memory of experiments at their real resolution, per precision.

For each experiment the model is built from its config with random encoder weights (no download)
and trained for a few steps on random clips of the experiment's shape (frames, side, per-device
batch from its data config), outside Lightning: forward, the configured losses, backward,
optimiser step, and the method's after-step hook (SMTC's EMA teacher). Printed per experiment and
precision: clips/s, peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: not measured), and
the ratios of each precision to ``32-true`` measured in the same run, and the hours the
experiment's whole schedule would take at that speed on the measured device (``trainer.max_steps``
steps of its configured per-device batch on each of its devices; :func:`schedule_hours`).
``--compile`` also times each experiment with its model compiled as ``compile=true`` does in
training, right after the eager run, and prints compiled / eager step time. Where a SlotCurri
recipe and the SlotContrast recipe it extends are both measured, their step-time ratio follows
(:func:`print_curriculum_ratios`; list them next to each other and give one ``--batch-size``).

    python scripts/bench_experiments.py --device cuda                                   # every real-data experiment
    python scripts/bench_experiments.py --device cuda --experiments slotcontrast_movi_c slotcurri_movi --compile
    python scripts/bench_experiments.py --device cuda --experiments smtc_ytvos slotcurri_movi --batch-size 8
    python scripts/bench_experiments.py --tiny                                          # CPU smoke run (tests)

``--feature-cache`` adds a table for the DINO-feature experiments (VideoSAUR, SlotContrast, SlotCurri):
clips/s on frames and on cached features (the batch a frozen-feature cache gives: the encoder is
skipped), measured one after the other, their step-time ratio, and the decoder's forward + backward
time (timed alone on slots of the step's shape) as a share of each step. On a shared CPU,
``--process-time`` (with ``OMP_NUM_THREADS=1``) times the process's CPU work instead of wall time,
so that other processes do not skew the ratios.

``--tiny`` shrinks every experiment to a 2-clip batch of up to 3 frames at a few tokens: it checks that
the script runs, not the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ocl.build import build_model
from ocl.contracts.batch import FEATURE_KEYS, FEATURES, VIDEO
from ocl.methods.feature_video import FeatureVideoMethod
from ocl.utils.compile import compile_model_parts, compile_options

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
CURRICULUM_PAIRS = {
    "slotcurri_movi": "slotcontrast_movi_c",
    "slotcurri_ytvis": "slotcontrast_ytvis",
    "slotcurri_movi_e": "slotcontrast_movi_e",
}
"""SlotCurri recipe -> the SlotContrast recipe it extends (same model and data; its step-time ratio is printed)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="*", default=None, help="default: every experiment not *_synthetic")
    parser.add_argument("--precisions", nargs="*", default=["32-true", "bf16-mixed"], choices=sorted(PRECISIONS))
    parser.add_argument("--batch-size", type=int, default=None, help="per-device clips (default: the config's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a CPU smoke run")
    parser.add_argument(
        "--compile", action="store_true", help="also time each experiment compiled as train.py's compile=true does"
    )
    parser.add_argument(
        "--process-time",
        action="store_true",
        help="CPU: time steps by this process's CPU time, not wall time (steady on a shared CPU; with OMP_NUM_THREADS=1)",
    )
    parser.add_argument(
        "--feature-cache",
        action="store_true",
        help="also time the DINO-feature experiments on cached features (encoder skipped) and the decoder's share",
    )
    args = parser.parse_args(argv)
    if args.process_time and not args.device.startswith("cpu"):
        parser.error("--process-time counts CPU work: use it with --device cpu")
    return args


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


def feature_inputs(model: torch.nn.Module, batch: int, frames: int, side: int, device: torch.device) -> dict:
    """A batch as a frozen-feature cache gives it (float16 ``features`` and, if read, ``feature_keys``
    ``[B, T, N, D]``): the method skips its encoder (``data.feature_cache``)."""
    shape = (batch, frames, model.encoder.num_tokens(side), model.encoder.embed_dim)
    names = (FEATURES, FEATURE_KEYS) if model.reads_keys() else (FEATURES,)
    return {name: torch.randn(shape, device=device).half() for name in names}


def measure(
    cfg: DictConfig,
    precision: str,
    batch: int,
    frames: int,
    side: int,
    args: argparse.Namespace,
    cached: bool = False,
    compiled: bool = False,
) -> tuple[float, float | None]:
    """``(clips per second, peak GiB or None on a CPU)`` of training steps at ``precision``;
    ``cached``: on cached features (:func:`feature_inputs`) instead of frames; ``compiled``: the
    model's parts compiled as ``compile=true`` does in training (the config's options if it sets any)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    if compiled:
        torch.compiler.reset()  # a fresh model per measurement: no recompilation limit hit across them
        compile_model_parts(model, **compile_options(cfg.get("compile") or True))
    optimizer = model.optimizer_factory(params=model.parameter_groups())
    if cached:
        inputs = feature_inputs(model, batch, frames, side, device)
    else:
        inputs = {VIDEO: torch.rand(batch, frames, 3, side, side, device=device)}
    dtype = PRECISIONS[precision]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = time.process_time if args.process_time else time.perf_counter
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            total, _ = model.compute_losses(model(inputs), inputs)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        model.on_train_batch_end(None, inputs, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(clock() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return batch / statistics.median(times), peak


def decoder_seconds(cfg: DictConfig, precision: str, batch: int, frames: int, args: argparse.Namespace) -> float:
    """Median seconds of the decoder's forward and backward alone (the step's
    ``decoder(slots [B*T, K, d])``, gradients of the sum of its outputs) at ``precision``."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    decoder = build_model(cfg).decoder.to(device).train()
    initialiser = cfg.model.processor.initialiser
    slots = torch.randn(batch * frames, initialiser.num_slots, initialiser.dim, device=device, requires_grad=True)
    dtype = PRECISIONS[precision]
    clock = time.process_time if args.process_time else time.perf_counter
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            decoded, masks = decoder(slots)
        (decoded.float().sum() + masks.float().sum()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(clock() - start)
    return statistics.median(times)


def print_feature_cache_table(names: list[str], args: argparse.Namespace) -> None:
    """For the DINO-feature experiments: steps on frames vs on cached features (encoder skipped),
    measured one after the other, and the decoder's share of each step (:func:`decoder_seconds`)."""
    print("\nFrozen-feature cache (`data.feature_cache`): the same steps with the encoder skipped")
    print(
        "| experiment | precision | batch x frames x side | clips/s | clips/s cached | step time cached / uncached "
        "| decoder fwd+bwd ms | decoder share uncached | decoder share cached |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        cfg = compose_experiment(name, args.tiny)
        if not issubclass(get_class(cfg.model._target_), FeatureVideoMethod):
            continue
        batch, frames, side = clip_shape(cfg, args.tiny)
        batch = args.batch_size or batch
        for precision in args.precisions:
            uncached, _ = measure(cfg, precision, batch, frames, side, args)
            cached, _ = measure(cfg, precision, batch, frames, side, args, cached=True)
            decoder = decoder_seconds(cfg, precision, batch, frames, args)
            step, cached_step = batch / uncached, batch / cached
            print(
                f"| {name} | {precision} | {batch} x {frames} x {side} | {uncached:.3g} | {cached:.3g} "
                f"| {cached_step / step:.2f} | {1000 * decoder:.1f} | {decoder / step:.0%} | {decoder / cached_step:.0%} |",
                flush=True,
            )


def schedule_hours(cfg: DictConfig, precision: str, clips_per_second: float) -> str:
    """Hours of the experiment's whole schedule at ``clips_per_second``: ``trainer.max_steps``
    optimiser steps of its per-device batch (``data.batch_size`` x ``accumulate_grad_batches``)
    on each of its ``trainer.devices``, in parallel (DDP's communication not counted). Measured
    at another batch (``--batch-size``), the time per clip is taken as the same. Marked where
    ``precision`` is the experiment's own (``trainer.precision``)."""
    steps = cfg.trainer.get("max_steps") or -1
    if steps < 0:
        return "n/a (no max_steps)"
    clips = steps * cfg.data.batch_size * (cfg.trainer.get("accumulate_grad_batches") or 1)
    mark = " (its precision)" if str(cfg.trainer.get("precision")) == precision else ""
    return f"{clips / clips_per_second / 3600:.1f}{mark}"


def print_curriculum_ratios(speeds: dict[tuple[str, str, bool], tuple[float, int]]) -> None:
    """SlotCurri / SlotContrast time per clip (the step-time ratio at equal batches) for each pair
    of :data:`CURRICULUM_PAIRS` measured in this run, per precision, eager and compiled.

    The loop times SlotCurri with all its slots (the curriculum's last stage) and without the
    curriculum callback: between growth steps its hooks only test that no split is pending,
    look the step up in the growth steps and log the active slot count (one scalar, as the
    method's own ``train/lr``), nothing per slot or per clip; the split itself runs twice per run.
    """
    partners = {key: (CURRICULUM_PAIRS[key[0]], *key[1:]) for key in speeds if key[0] in CURRICULUM_PAIRS}
    pairs = [(curri, contrast) for curri, contrast in partners.items() if contrast in speeds]
    if not pairs:
        return
    print("\nSlotCurri vs SlotContrast (same model + curriculum + 3-D SSIM loss), measured in this run")
    print("| SlotCurri | SlotContrast | precision | compiled | batches | SlotCurri / SlotContrast step time |")
    print("|---|---|---|---|---|---|")
    for curri, contrast in pairs:
        (speed, batch), (other_speed, other_batch) = speeds[curri], speeds[contrast]
        print(
            f"| {curri[0]} | {contrast[0]} | {curri[1]} | {'yes' if curri[2] else 'no'} | {batch} / {other_batch} "
            f"| {other_speed / speed:.3f} |"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """``argv``: the command line after the script name (default: ``sys.argv[1:]``)."""
    args = parse_args(argv)
    names = args.experiments or experiment_names()
    print(f"device {args.device}; {args.steps} timed steps after {args.warmup} warm-up steps; random weights")
    compiled_columns = " clips/s compiled | step time compiled / eager |" if args.compile else ""
    print(
        "| experiment | precision | batch x frames x side | clips/s | peak GiB | clips/s vs 32-true | memory vs 32-true "
        f"| hours for max_steps |{compiled_columns}"
    )
    print("|---|---|---|---|---|---|---|---|" + "---|---|" * args.compile)
    speeds: dict[tuple[str, str, bool], tuple[float, int]] = {}  # (experiment, precision, compiled) -> (clips/s, batch)
    for name in names:
        cfg = compose_experiment(name, args.tiny)
        batch, frames, side = clip_shape(cfg, args.tiny)
        batch = args.batch_size or batch
        baseline = None
        for precision in args.precisions:
            try:
                speed, peak = measure(cfg, precision, batch, frames, side, args)
                speeds[(name, precision, False)] = (speed, batch)
                compiled_text = ""
                if args.compile:
                    compiled_speed, _ = measure(cfg, precision, batch, frames, side, args, compiled=True)
                    speeds[(name, precision, True)] = (compiled_speed, batch)
                    compiled_text = f" {compiled_speed:.2f} | {speed / compiled_speed:.2f} |"
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
                f"| {speed_ratio} | {memory_ratio} | {schedule_hours(cfg, precision, speed)} |{compiled_text}",
                flush=True,
            )
    print_curriculum_ratios(speeds)
    if args.feature_cache:
        print_feature_cache_table(names, args)


if __name__ == "__main__":
    main()
