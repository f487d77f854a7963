"""Training-step throughput: Lightning (ocl's ObjectCentricMethod) vs a minimal hand-written loop.

Both run the same model (the composed config of ``--overrides``, default: the default run),
the same pre-made batches of the embedded data, the same optimiser, schedule and gradient
clipping, and the same thread count; data generation is excluded from both. Rounds alternate
between the two so that load changes on the machine affect both alike; the medians are compared.

    python scripts/bench_train_step.py [--steps 40] [--rounds 3] [--threads 2] [--overrides k=v ...]

Prints steps/s of each and the ratio Lightning / hand-written (target >= 0.97): the median
over rounds of each round's ratio, so that a load change between rounds cancels out.
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

from ocl.cli import build_model
from ocl.methods.base import ObjectCentricMethod

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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


def make_batches(cfg: DictConfig, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` training batches of the configured data, materialised in memory."""
    datamodule = instantiate(cfg.data)
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append({"video": batch["video"], "masks": batch["masks"]})
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
        callbacks=[timer],
    )
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(model, train_dataloaders=loader)
    return (len(batches) - warmup) / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of configs/train.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*args.overrides, "paths.output_dir=/tmp/ocl_bench"])
    batches = make_batches(cfg, args.steps + args.warmup)
    video = batches[0]["video"]
    print(f"model {cfg.model._target_}, batch video {tuple(video.shape)}, threads {args.threads}")
    hand, light = [], []
    for round_index in range(args.rounds):
        hand.append(hand_written(cfg, batches, args.warmup))
        light.append(lightning(cfg, batches, args.warmup))
        print(f"round {round_index}: hand-written {hand[-1]:.3f} steps/s, lightning {light[-1]:.3f} steps/s")
    hand_median, light_median = statistics.median(hand), statistics.median(light)
    ratio = statistics.median(light_rate / hand_rate for light_rate, hand_rate in zip(light, hand, strict=True))
    print(f"median: hand-written {hand_median:.3f} steps/s, lightning {light_median:.3f} steps/s")
    print(f"ratio lightning / hand-written (median of per-round ratios): {ratio:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
