"""How far a frozen encoder's features group into objects by clustering alone (k-means per video).

Each validation video's tokens (all frames together, as video FG-ARI scores them) are clustered
with k-means into ``K`` groups (the experiment's slot count unless ``--clusters``); the clusters,
as one-hot masks on the token grid, are scored through the metrics' path (resized to the labels,
argmax, counted: ``ocl.metrics.protocol.segmentation_contingency``). A slot method on these features has to do
what k-means does without the labels' help, so the numbers say whether the features or the
learning limit a run: on the stand-in patch encoder (``model/encoder=patch_synthetic``) they show
how its position channels trade grouping by object for grouping by place::

    python scripts/feature_clusters.py experiment=videosaur_synthetic
    python scripts/feature_clusters.py experiment=videosaur_synthetic model.encoder.position_scale=1
    python scripts/feature_clusters.py --tokens keys experiment=videosaur_movi_c data.root=/data/movi_c

Every other argument is a ``train.py`` override. Prints the mean video FG-ARI and mBO over the
validation videos. Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ocl.build import build_datamodule
from ocl.metrics.ari import fg_ari_from_contingency
from ocl.metrics.overlap import mbo_from_contingency
from ocl.metrics.protocol import sample_tables, segmentation_contingency

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def kmeans(
    points: torch.Tensor, clusters: int, restarts: int, iterations: int, generator: torch.Generator
) -> torch.Tensor:
    """Lloyd's k-means on ``points [M, D]`` from ``restarts`` random draws of ``clusters`` points;
    -> the labels ``[M]`` (int64) of the restart with the lowest sum of squared distances."""
    starts = torch.stack([torch.randperm(len(points), generator=generator)[:clusters] for _ in range(restarts)])
    centres = points[starts]  # [R, K, D]
    for _ in range(iterations):
        labels = torch.cdist(points.expand(restarts, -1, -1), centres).argmin(-1)  # [R, M]
        one_hot = F.one_hot(labels, clusters).to(points.dtype)  # [R, M, K]
        counts = one_hot.sum(1)  # [R, K]
        sums = one_hot.transpose(1, 2) @ points  # [R, K, D]
        centres = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centres)
    distances = torch.cdist(points.expand(restarts, -1, -1), centres)  # [R, M, K]
    nearest, labels = distances.min(-1)
    return labels[nearest.pow(2).sum(-1).argmin()]


def cluster_masks(
    tokens: torch.Tensor,
    grid: tuple[int, int],
    clusters: int,
    restarts: int,
    iterations: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``tokens [T, N, D]`` of one video -> one-hot cluster masks ``[T, K, h, w]`` (float)."""
    labels = kmeans(tokens.flatten(0, 1).double(), clusters, restarts, iterations, generator)
    masks = F.one_hot(labels, clusters).float().unflatten(0, tokens.shape[:2])  # [T, N, K]
    return masks.transpose(1, 2).unflatten(-1, grid)


def main(argv: Sequence[str] | None = None) -> None:
    """``argv``: the command line after the script name (default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=None, help="K (default: the experiment's slot count)")
    parser.add_argument(
        "--tokens", choices=["features", "keys"], default="features", help="what the encoder gives to cluster"
    )
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    clusters = args.clusters or cfg.model.processor.initialiser.num_slots
    encoder = instantiate(cfg.model.encoder).eval()
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    generator = torch.Generator().manual_seed(args.seed)
    tables = []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            video, true_ids = batch["video"], batch["masks"]  # [B, T, 3, H, W], [B, T, H, W]
            encoded = encoder(video.flatten(0, 1))
            tokens = (encoded.features if args.tokens == "features" else encoded.keys).unflatten(
                0, video.shape[:2]
            )  # [B, T, N, D]
            masks = torch.stack(
                [
                    cluster_masks(clip, encoded.grid, clusters, args.restarts, args.iterations, generator)
                    for clip in tokens
                ]
            )
            tables.append(sample_tables(segmentation_contingency(masks, true_ids), video=True))
    table = torch.cat(tables)
    ari, ari_scored = fg_ari_from_contingency(table)
    mbo, mbo_scored = mbo_from_contingency(table)
    print(
        f"{cfg.name}: k-means on the encoder's {args.tokens}, K={clusters}, {len(table)} validation videos: "
        f"video FG-ARI {ari[ari_scored].mean().item():.3f}, mBO {mbo[mbo_scored].mean().item():.3f}"
    )


if __name__ == "__main__":
    main()
