"""Write a frozen-feature cache: run an experiment's frozen encoder once over a dataset split.

    python scripts/cache_features.py experiment=videosaur_movi_c model.encoder.weights=/path/dino_vitb8.pth
    python train.py experiment=videosaur_movi_c model.encoder.weights=/path/dino_vitb8.pth \\
        data.feature_cache=data/feature_cache/videosaur_movi_c_train

Options (``configs/cache_features.yaml``): ``cache.dir``, ``cache.split``, ``cache.crops`` (crop
offsets cached per video for random crops), ``cache.dtype`` (float16 | float32),
``cache.precision`` (the encoder's), ``cache.batch_frames``, ``cache.device``, ``cache.overwrite``
(false: a folder that already holds a cache, complete or interrupted, is refused). Every other
override is the experiment's, as for ``train.py``: the cache records what its features depend on
(encoder and weights, resolution, dataset and split, transform) and training refuses a cache
that does not match. docs/scaling.md ("Frozen-feature cache") says what changes in training.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def encoder_call(model: torch.nn.Module, device: torch.device, precision: str, batch_frames: int, keys: bool):
    """Frames ``[n, 3, H, W]`` -> the model's frozen features and keys ``[n, N, D]`` (float32, on
    the CPU), ``batch_frames`` frames per call of :meth:`FeatureVideoMethod.encode` on ``device``."""
    dtype = PRECISIONS[precision]

    def encode(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features, attention_keys = [], []
        for chunk in frames.split(batch_frames):
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                encoded = model.encode(chunk.unsqueeze(0).to(device))
            features.append(encoded.features.float().cpu())
            if keys:
                attention_keys.append(encoded.keys.float().cpu())
        return torch.cat(features), torch.cat(attention_keys) if keys else None

    return encode


def training_command(cache_dir: Path) -> str:
    """``python train.py`` with this command's overrides (those of the cache itself left out) and
    ``data.feature_cache``: the experiment the cache was written for, which its manifest must match."""
    from ocl.utils.run_identity import hydra_runtime, override_key

    overrides = [o for o in hydra_runtime()[1] if not override_key(o).startswith(("cache.", "hydra"))]
    return shlex.join(["python", "train.py", *overrides, f"data.feature_cache={cache_dir}"])


def write_cache(cfg: DictConfig) -> Path:
    """Build the experiment's data module and model, encode ``cfg.cache.split``, write ``cfg.cache.dir``."""
    import lightning.pytorch as pl
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    from ocl.build import UsageError, build_datamodule, build_model
    from ocl.data.feature_cache import FeatureCacheWriter

    options = cfg.cache
    if options.precision not in PRECISIONS:
        raise UsageError(f"unknown cache.precision {options.precision!r}; choose one of {list(PRECISIONS)}")
    pl.seed_everything(cfg.seed)  # as train.py: a random-weight encoder is the one training builds
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    model_fingerprint = model.frozen_feature_fingerprint()
    if model_fingerprint is None:
        raise UsageError(f"{type(model).__name__} reads no frozen encoder features: there is nothing to cache")
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto" else options.device
    )
    model.to(device).eval()
    clips = datamodule.split_clips(options.split)
    keys = model_fingerprint.pop("keys")
    encoder = model.patch_encoder()
    writer = FeatureCacheWriter(
        options.dir,
        clips,
        {**model_fingerprint, **datamodule.cache_fingerprint(options.split, clips)},
        keys=keys,
        crops=options.crops,
        dtype=options.dtype,
        tokens=encoder.num_tokens(),
        dim=encoder.embed_dim,
        details={"precision": options.precision, "experiment": cfg.name},
        overwrite=options.overwrite,
    )
    print(
        f"caching {len(writer)} {options.split} videos ({writer.shape[1]} frames x {writer.shape[0]} placements) "
        f"of {cfg.name} into {writer.directory}: {writer.nbytes / 2**30:.2f} GiB on {device}"
    )
    encode = encoder_call(model, device, options.precision, options.batch_frames, keys)
    started = time.perf_counter()
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        for video in progress.track(range(len(writer)), description="encoding"):
            writer.write(video, encode)
    manifest = writer.finish()
    print(f"wrote {manifest} in {time.perf_counter() - started:.0f} s")
    print(f"train with: {training_command(writer.directory)}")
    return manifest


@hydra.main(version_base="1.3", config_path="../configs", config_name="cache_features")
def main(cfg: DictConfig) -> None:
    from ocl.build import UsageError
    from ocl.data.errors import DataError, user_message

    try:
        write_cache(cfg)
    except DataError as error:
        raise SystemExit(user_message(error)) from None
    except UsageError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
