"""Build the weights of the stand-in patch encoder (``ocl.modules.patch_features``) on the embedded videos.

    python scripts/build_patch_encoder.py                       # rewrites the shipped file
    python scripts/build_patch_encoder.py --patch-size 8 --out /tmp/patch8.pt

What it learns: the per-channel mean and standard deviation of the features over the first
``--videos`` train videos (all their frames), so that every channel has unit variance there. The
content MLP is drawn from ``--seed`` and stays random: a random ReLU MLP of a patch's pixels already
separates the embedded objects' colours and textures, and the statistics make its channels and the
position channels weigh alike. What it leaks: nothing about objects. It reads train-split pixels
only (no masks, no ids, no validation videos), and the statistics are 2 numbers per channel.

The output is deterministic: the same arguments write the same tensors (the script prints their
SHA-256, which ``PatchFeatureEncoder.cache_fingerprint`` also records).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ocl.data.synthetic import SyntheticVideoDataset
from ocl.modules.patch_features import SHIPPED_WEIGHTS, PatchFeatureEncoder
from ocl.modules.vit import weights_digest


def train_frames(videos: int, level: str, resolution: int, frames: int, seed: int) -> torch.Tensor:
    """The first ``videos`` train videos' frames, ``[videos * frames, 3, H, W]`` in [0, 1]."""
    dataset = SyntheticVideoDataset(
        "train", size=videos, level=level, num_frames=frames, resolution=resolution, seed=seed
    )
    stacked = np.concatenate([dataset.arrays(index)[0] for index in range(videos)])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255.0


def build(args: argparse.Namespace) -> PatchFeatureEncoder:
    """A random-MLP encoder with the channel statistics of ``args``' train frames."""
    encoder = PatchFeatureEncoder(
        image_size=args.resolution,
        patch_size=args.patch_size,
        hidden_dim=args.hidden_dim,
        embed_dim=args.embed_dim,
        position_frequencies=tuple(args.position_frequencies),
        weights="random",
        seed=args.seed,
    )
    frames = train_frames(args.videos, args.level, args.resolution, args.frames, args.data_seed)
    with torch.no_grad():
        features = torch.cat([encoder.unstandardised(chunk) for chunk in frames.split(256)]).flatten(0, 1).double()
    encoder.mean.copy_(features.mean(0).float())
    encoder.std.copy_(features.std(0).clamp_min(1e-6).float())
    return encoder


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line), build the encoder and write its weights file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS, help="where to write the weights file")
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--embed-dim", type=int, default=64, help="content + position channels")
    parser.add_argument("--position-frequencies", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random content MLP")
    parser.add_argument("--videos", type=int, default=256, help="train videos the statistics are measured on")
    parser.add_argument("--frames", type=int, default=4, help="frames per video")
    parser.add_argument("--level", default="easy")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--data-seed", type=int, default=0, help="the synthetic data's seed (data.seed)")
    args = parser.parse_args(argv)
    encoder = build(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"architecture": encoder.architecture(), "state_dict": encoder.state_dict()}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), weights sha256 {weights_digest(encoder)}")


if __name__ == "__main__":
    main()
