"""Trained runs' masks side by side on the same validation videos, as one PNG.

Rows: the frames, the ground truth, then one row per checkpoint: the frame under its slots'
colours with the slot boundaries drawn (``ocl.callbacks.visualisation.colour_slots``). Columns:
the chosen frames of each video, videos left to right. Each checkpoint's run config is rebuilt
from the overrides stored in it (as ``eval.py`` does) and its validation split is read, so runs of
the same data (e.g. the ``*_synthetic`` experiments, any seed) show the same videos::

    python scripts/compare_masks.py --out masks.png --videos 6 --frames 0,6,11 \\
        outputs/videosaur_synthetic/<run>/checkpoints/last.ckpt outputs/slotcontrast_synthetic/<run>/checkpoints/last.ckpt

Masks come from the metrics' path (the model in evaluation mode, argmax after resizing), with
the global RNG seeded by the model's ``eval_seed`` as for the first validation batch; a model
that draws its initial slots (Gaussian initialisation) draws the metrics' slots only when
``--videos`` equals the validation batch size. Prints one line per row with what it shows.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ocl.build import build_datamodule
from ocl.callbacks.visualisation import colour_slots, slot_palette
from ocl.methods.base import ObjectCentricMethod
from ocl.metrics.protocol import hard_segmentation
from ocl.predict.model import compose_run_config, load_trained_model
from ocl.utils.rng import seeded


def load_run(checkpoint: Path, num_videos: int, overrides: list[str]) -> tuple[ObjectCentricMethod, dict[str, Any]]:
    """``checkpoint``'s trained model and the first batch of ``num_videos`` videos of its validation split."""
    cfg = compose_run_config(checkpoint, [*overrides, f"data.batch_size={num_videos}"], config_name="train")
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    return load_trained_model(cfg), next(iter(datamodule.val_dataloader()))


def slot_ids(model: ObjectCentricMethod, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """int64 ``[B, T, H, W]`` argmax slot of every pixel (the metrics' path) and the slot count."""
    with torch.no_grad(), seeded(model.eval_seed):
        masks = model(batch).masks
    return hard_segmentation(masks, tuple(batch["masks"].shape[-2:])), masks.shape[2]


def tile(images: torch.Tensor, frames: list[int]) -> np.ndarray:
    """float ``[B, T, 3, H, W]`` in [0, 1] -> uint8 ``[H, B * len(frames) * W, 3]``, one row of tiles."""
    chosen = images[:, frames]  # [B, F, 3, H, W]
    row = chosen.permute(3, 0, 1, 4, 2).flatten(1, 3)  # [H, B * F * W, 3]
    return (row.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def main(argv: Sequence[str] | None = None) -> None:
    """``argv``: the command line after the script name (default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="train.py checkpoints (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--videos", type=int, default=6, help="validation videos to show")
    parser.add_argument(
        "--frames", type=lambda text: [int(f) for f in text.split(",")], default=[0], help="frame indices, e.g. 0,6,11"
    )
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of the PNG")
    parser.add_argument("--override", action="append", default=[], help="config override for every run (repeatable)")
    args = parser.parse_args(argv)

    rows, labels = [], []
    for index, checkpoint in enumerate(args.checkpoints):
        model, batch = load_run(checkpoint, args.videos, args.override)
        video = batch["video"]  # [B, T, 3, H, W]
        if index == 0:
            true_ids = batch["masks"].clamp_min(0)
            num_ids = int(true_ids.max()) + 1
            truth = slot_palette(num_ids)[true_ids].movedim(-1, 2)
            rows += [tile(video, args.frames), tile(truth, args.frames)]
            labels += ["frames", "ground truth"]
        ids, num_slots = slot_ids(model, batch)
        rows.append(tile(colour_slots(video, ids, num_slots), args.frames))
        labels.append(str(checkpoint))
    image = np.concatenate(rows, axis=0)
    image = image.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(args.out)
    for row, label in enumerate(labels):
        print(f"row {row}: {label}")
    print(f"wrote {args.out} ({image.shape[1]} x {image.shape[0]})")


if __name__ == "__main__":
    main()
