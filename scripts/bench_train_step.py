"""Training-step throughput: Lightning (ocl's ObjectCentricMethod) vs a minimal hand-written loop.

Both run the same model (the composed config of ``--overrides``, default: the default run),
the same pre-made batches of the embedded data, the same optimiser, schedule and gradient
clipping, and the same thread count; data generation is excluded from both. Rounds alternate
between the two so that load changes on the machine affect both alike; the medians are compared.

    python scripts/bench_train_step.py [--steps 40] [--rounds 3] [--threads 2] [--overrides k=v ...]

Prints steps/s of each and the ratio Lightning / hand-written (target >= 0.97): the median
over rounds of each round's ratio, so that a load change between rounds cancels out.

With ``--compare`` it times two configs through Lightning instead (the second's callbacks that
change training, e.g. the slot curriculum, included) and prints second / first, e.g. what
SlotCurri's curriculum and SSIM loss add to SlotContrast's step at its real resolution:

    python scripts/bench_train_step.py --random-batch 2 4 --steps 6 --warmup 2 \
        --overrides experiment=slotcontrast_movi_c model.encoder.weights=random trainer.precision=32-true \
        --compare experiment=slotcurri_movi model.encoder.weights=random trainer.precision=32-true \
        callbacks.curriculum.growth_steps=[3,5] trainer.max_steps=40

``--random-batch B T`` times random clips of ``B`` videos x ``T`` frames at the model's encoder
size instead of the configured data (real datasets are not needed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ocl.build import build_model
from ocl.methods.base import ObjectCentricMethod

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TRAINING_CALLBACKS = ("curriculum",)
"""Configured callbacks that change the training step (timed); logging/checkpoint ones are left out."""


class StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def random_batches(cfg: DictConfig, count: int, batch_size: int, frames: int) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of random clips at the encoder's input size (no dataset needed)."""
    size = cfg.model.encoder.image_size
    generator = torch.Generator().manual_seed(0)
    return [{"video": torch.rand(batch_size, frames, 3, size, size, generator=generator)} for _ in range(count)]


def make_batches(cfg: DictConfig, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` training batches of the configured data, materialised in memory."""
    datamodule = instantiate(cfg.data)
    batches = []
    for batch in datamodule.train_dataloader():
        batch = datamodule.on_after_batch_transfer(batch, 0)  # uint8 frames (data.uint8_transfer) -> float
        batches.append({key: batch[key] for key in ("video", "masks") if key in batch})
        if len(batches) == count:
            return batches
    raise ValueError(f"the training set has fewer than {count} batches")


def fresh_model(cfg: DictConfig) -> ObjectCentricMethod:
    torch.manual_seed(0)
    return build_model(cfg)


def hand_written(cfg: DictConfig, batches: list[dict[str, torch.Tensor]], warmup: int) -> float:
    """Steps/s of forward, weighted loss, backward, clipping, optimiser and schedule steps."""
    model = fresh_model(cfg)
    model.train()
    optimizer = model.optimizer_factory(params=[p for p in model.parameters() if p.requires_grad])
    scheduler = model.scheduler_factory(optimizer) if model.scheduler_factory else None
    clip = cfg.trainer.get("gradient_clip_val")
    start = 0.0
    for index, batch in enumerate(batches):
        if index == warmup:
            start = time.perf_counter()
        output = model(batch)
        loss, _ = model.compute_losses(output, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return (len(batches) - warmup) / (time.perf_counter() - start)


def lightning(cfg: DictConfig, batches: list[dict[str, torch.Tensor]], warmup: int) -> float:
    """Steps/s of ``Trainer.fit`` on the same batches (no logger, checkpoints or progress bar)."""
    model = fresh_model(cfg)
    timer = StepTimer(warmup)
    training_callbacks = [
        instantiate(c) for name, c in (cfg.get("callbacks") or {}).items() if name in TRAINING_CALLBACKS
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        callbacks=[*training_callbacks, timer],
    )
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(model, train_dataloaders=loader)
    return (len(batches) - warmup) / (timer.end - timer.start)


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, "paths.output_dir=/tmp/ocl_bench"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of configs/train.yaml")
    parser.add_argument("--compare", nargs="*", default=None, help="overrides of a second config to time against")
    parser.add_argument("--random-batch", nargs=2, type=int, metavar=("B", "T"), help="random clips, no dataset")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_train(args.overrides)
    count = args.steps + args.warmup
    batches = random_batches(cfg, count, *args.random_batch) if args.random_batch else make_batches(cfg, count)
    video = batches[0]["video"]
    print(f"model {cfg.model._target_}, batch video {tuple(video.shape)}, threads {args.threads}")
    if args.compare is not None:
        second = compose_train(args.compare)
        runs = {
            "first": lambda: lightning(cfg, batches, args.warmup),
            "second": lambda: lightning(second, batches, args.warmup),
        }
        names = ("first", "second")
    else:
        runs = {
            "hand-written": lambda: hand_written(cfg, batches, args.warmup),
            "lightning": lambda: lightning(cfg, batches, args.warmup),
        }
        names = ("hand-written", "lightning")
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names:
            rates[name].append(runs[name]())
        print(f"round {round_index}: " + ", ".join(f"{name} {rates[name][-1]:.3f} steps/s" for name in names))
    base, other = names
    ratio = statistics.median(b / a for a, b in zip(rates[base], rates[other], strict=True))
    print("median: " + ", ".join(f"{name} {statistics.median(rates[name]):.3f} steps/s" for name in names))
    target = "(target >= 0.95: at most 5% slower)" if args.compare is not None else "(target >= 0.97)"
    print(f"ratio {other} / {base} steps/s (median of per-round ratios): {ratio:.3f} {target}")


if __name__ == "__main__":
    main()
