"""The best FG-ARI a model can reach whose masks live on a coarse grid (a resolution ceiling).

A method's soft masks ``[B, T, K, h, w]`` are scored after bilinear resizing to the labels' size
(``ocl.metrics.protocol.hard_segmentation``). This script gives each object the best soft mask a
``g x g`` grid can hold, its share of each cell (the one-hot labels area-averaged to the grid),
and scores it through the same path: no model on that grid can do much better, so a target above
the ceiling of a method's mask grid is out of reach whatever it learns::

    python scripts/mask_ceiling.py experiment=videosaur_synthetic            # grids 8,16,32
    python scripts/mask_ceiling.py --grids 14,28 experiment=videosaur_movi_c data.root=/data/movi_c

Every other argument is a ``train.py`` override; the validation split of the experiment's data
module is scored. Prints, per grid, the video and frame FG-ARI averaged over videos.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from ocl.build import build_datamodule
from ocl.metrics.ari import frame_fg_ari, video_fg_ari
from ocl.metrics.protocol import hard_segmentation

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def best_grid_masks(true_ids: torch.Tensor, grid: int) -> torch.Tensor:
    """``true_ids [B, T, H, W]`` (0 background, 1..M objects, -1 ignored, counted as background)
    -> each id's share of every cell of a ``grid x grid`` layout, ``[B, T, M + 1, grid, grid]``."""
    num_ids = int(true_ids.max()) + 1
    one_hot = F.one_hot(true_ids.clamp_min(0), num_ids).movedim(-1, 2).flatten(0, 1).float()
    return F.adaptive_avg_pool2d(one_hot, grid).unflatten(0, true_ids.shape[:2])


def ceiling(true_ids: torch.Tensor, grid: int) -> tuple[float, float]:
    """Mean video and frame FG-ARI of :func:`best_grid_masks` on ``true_ids [B, T, H, W]``."""
    soft = best_grid_masks(true_ids, grid)
    pred_ids = hard_segmentation(soft, tuple(true_ids.shape[-2:]))
    video, video_scored = video_fg_ari(pred_ids, true_ids, soft.shape[2])
    frame, frame_scored = frame_fg_ari(pred_ids, true_ids, soft.shape[2])
    return video[video_scored].mean().item(), frame[frame_scored].mean().item()


def main(argv: Sequence[str] | None = None) -> None:
    """``argv``: the command line after the script name (default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--grids",
        type=lambda text: [int(g) for g in text.split(",")],
        default=[8, 16, 32],
        help="grid sizes g, comma-separated",
    )
    args, overrides = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    true_ids = torch.cat([batch["masks"] for batch in datamodule.val_dataloader()])
    print(f"{len(true_ids)} validation videos, labels {tuple(true_ids.shape[1:])} ({cfg.name})")
    print("| mask grid | video FG-ARI ceiling | frame FG-ARI ceiling |\n|---|---|---|")
    for grid in args.grids:
        video, frame = ceiling(true_ids, grid)
        print(f"| {grid} x {grid} | {video:.3f} | {frame:.3f} |")


if __name__ == "__main__":
    main()
