"""The DINO-feature baselines train and evaluate end to end on the embedded data (CPU)."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch
from conftest import compose_config, run_cli
from hydra.errors import InstantiationException

from ocl.build import build_model
from ocl.cli import train
from ocl.contracts.batch import VIDEO
from ocl.methods.encoder_weights import FINGERPRINT_KEY

FEATURE_TINY = [
    "data.train_size=16",
    "data.val_size=2",
    "data.batch_size=2",
    "data.resolution=32",
    "data.train_frames=2",
    "data.val_frames=3",
    "model.processor.initialiser.num_slots=3",
    "model.processor.initialiser.dim=16",
    "model.decoder.hidden_dims=[16]",
    "model.scheduler.warmup_steps=2",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "callbacks.checkpoint.every_n_train_steps=2",
    "callbacks.progress_bar=null",
    "logger=csv",
]


VIT_SLOTCONTRAST = ["experiment=slotcontrast_synthetic", "model/encoder=vit_synthetic"]
"""SlotContrast on the tiny ViT, whose weights a test can write as a local 'pretrained' file."""


@pytest.fixture(scope="module")
def encoder_weights(tmp_path_factory) -> tuple[str, str]:
    """Two local weight files of the synthetic ViT: a 'pretrained' one and a different one."""
    folder = tmp_path_factory.mktemp("weights")
    encoder = compose_config([*VIT_SLOTCONTRAST, "paths.output_dir=/unused"]).model.encoder
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        vit = timm.create_model(
            encoder.model_name,
            img_size=encoder.image_size,
            depth=encoder.depth,
            num_heads=encoder.num_heads,
            embed_dim=encoder.embed_dim,
            patch_size=encoder.patch_size,
        )
        path = folder / f"vit{seed}.pth"
        torch.save(vit.state_dict(), path)
        paths.append(str(path))
    return paths[0], paths[1]


@pytest.mark.parametrize("experiment", ["videosaur_synthetic", "slotcontrast_synthetic"])
def test_synthetic_variant_trains_and_validates(tmp_path, experiment):
    cfg = compose_config([f"experiment={experiment}", *FEATURE_TINY, f"paths.output_dir={tmp_path}"])
    metrics = train(cfg)
    # an adjusted Rand index lies in [-1, 1]; after 4 steps it is near 0 and may be slightly negative
    assert -1.0 <= metrics["val/video_fg_ari"] <= 1.0 and 0.0 <= metrics["val/mbo"] <= 1.0
    assert math.isfinite(metrics["val/loss"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == cfg.trainer.max_steps
    # the shipped stand-in encoder is rebuilt from its file: left out, its fingerprint kept
    assert not any(key.startswith("encoder.") for key in checkpoint["state_dict"])
    assert "encoder." in checkpoint[FINGERPRINT_KEY]
    moments = [state["exp_avg"] for state in checkpoint["optimizer_states"][0]["state"].values()]
    assert moments and all(torch.isfinite(m).all() for m in moments) and any(m.abs().sum() > 0 for m in moments)


def test_keys_as_the_reconstruction_target_leave_the_stand_ins_position_channels_out(tmp_path):
    overrides = ["experiment=slotcontrast_synthetic", *FEATURE_TINY, f"paths.output_dir={tmp_path}"]
    model = build_model(compose_config(overrides))  # the experiment's target: keys
    video = torch.rand(2, 2, 3, 32, 32)
    output = model({VIDEO: video})
    encoded = model.encoder(video.flatten(0, 1))
    content = model.encoder.embed_dim - 4 * len(model.encoder.position_frequencies)
    torch.testing.assert_close(output.target, encoded.keys.unflatten(0, (2, 2)))
    assert not output.target[..., content:].any() and encoded.features[..., content:].any()
    assert model.frozen_feature_fingerprint()["keys"]  # a feature cache must then hold the keys
    recipe = build_model(compose_config([*overrides, "model.reconstruction_target=features"]))
    torch.testing.assert_close(recipe({VIDEO: video}).target, encoded.features.unflatten(0, (2, 2)))
    assert not recipe.frozen_feature_fingerprint()["keys"]
    with pytest.raises(InstantiationException, match="reconstruction_target must be 'features' or 'keys'"):
        build_model(compose_config([*overrides, "model.reconstruction_target=tokens"]))


@pytest.mark.slow
def test_pretrained_encoder_is_left_out_of_checkpoints_and_checked_on_eval(tmp_path, encoder_weights):
    weights, other_weights = encoder_weights
    train_dir = tmp_path / "train"
    trained_run = run_cli(
        "train.py",
        [
            *VIT_SLOTCONTRAST,
            *FEATURE_TINY,
            f"model.encoder.weights={weights}",
            f"hydra.run.dir={train_dir}",
        ],
    )
    assert trained_run.returncode == 0, trained_run.stderr[-3000:]
    checkpoint = torch.load(train_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(key.startswith("encoder.") for key in checkpoint["state_dict"])
    assert "encoder." in checkpoint[FINGERPRINT_KEY]
    last = f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}"
    evaluated = run_cli("eval.py", [last, f"hydra.run.dir={tmp_path / 'e'}"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    trained = json.loads((train_dir / "metrics.json").read_text())
    assert json.loads((tmp_path / "e" / "metrics.json").read_text()) == pytest.approx(trained)
    mismatched = run_cli("eval.py", [last, f"model.encoder.weights={other_weights}", f"hydra.run.dir={tmp_path / 'm'}"])
    assert mismatched.returncode != 0
    assert "encoder weights" in mismatched.stderr and "differ" in mismatched.stderr
