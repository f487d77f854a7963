"""The stand-in patch encoder (ocl/modules/patch_features.py) and its build script."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ocl.modules.patch_features import SHIPPED_WEIGHTS, PatchFeatureEncoder, sinusoidal_position
from scripts.build_patch_encoder import main as build_patch_encoder
from scripts.build_patch_encoder import train_frames


def build_weights(out: Path, *args: str) -> None:
    """``python scripts/build_patch_encoder.py --out <out> <args>``, in this process."""
    build_patch_encoder(["--out", str(out), *args])


def test_features_are_one_token_per_patch_and_can_double_as_keys() -> None:
    encoder = PatchFeatureEncoder(image_size=64, patch_size=4, keys_with_position=True)
    encoded = encoder(torch.rand(2, 3, 64, 64))
    assert encoded.grid == (16, 16)
    assert encoded.features.shape == (2, 256, 64) == (2, encoder.num_tokens(), encoder.embed_dim)
    assert encoded.keys is encoded.features
    assert encoder.feature_maps(torch.rand(1, 3, 32, 64)).shape == (1, 64, 8, 16)


def test_keys_without_position_zero_the_position_channels() -> None:
    frames = torch.rand(2, 3, 64, 64)
    features = PatchFeatureEncoder(keys_with_position=True)(frames).keys
    keys = PatchFeatureEncoder(keys_with_position=False)(frames).keys
    assert keys.shape == features.shape
    torch.testing.assert_close(keys[..., :48], features[..., :48])
    assert not keys[..., 48:].any() and features[..., 48:].any()


def test_the_config_builds_the_shipped_encoder() -> None:
    cfg = OmegaConf.load(REPO / "configs" / "model" / "encoder" / "patch_synthetic.yaml")
    encoder = instantiate(cfg)
    assert isinstance(encoder, PatchFeatureEncoder) and encoder.pretrained
    assert encoder.embed_dim == cfg.embed_dim and encoder.num_tokens() == 256


def test_the_position_scale_multiplies_the_position_channels_only() -> None:
    frames = torch.rand(2, 3, 64, 64)
    plain = PatchFeatureEncoder()(frames).features
    scaled = PatchFeatureEncoder(position_scale=4.0)
    torch.testing.assert_close(scaled(frames).features, torch.cat([plain[..., :48], 4.0 * plain[..., 48:]], dim=-1))
    fingerprint = scaled.cache_fingerprint()["encoder"]
    assert fingerprint["position_scale"] == 4.0 and fingerprint != PatchFeatureEncoder().cache_fingerprint()["encoder"]


def test_a_token_sees_only_its_own_patch() -> None:
    encoder = PatchFeatureEncoder(image_size=16, patch_size=4, weights="random")
    frames = torch.rand(1, 3, 16, 16)
    changed = frames.clone()
    changed[0, :, 4:8, 8:12] = torch.rand(3, 4, 4)  # patch (row 1, column 2): token 1 * 4 + 2
    difference = (encoder(changed).features - encoder(frames).features).abs().amax(-1)[0]
    assert difference[6] > 1e-3
    assert torch.count_nonzero(difference) == 1


def test_position_channels_are_sines_and_cosines_of_patch_centres() -> None:
    channels = sinusoidal_position(2, 2, (1.0,))  # centres at -0.5 and 0.5 on both axes
    quarter = math.sin(math.pi / 4)
    expected_top_left = torch.tensor([-quarter, quarter, -quarter, quarter])  # sin y, cos y, sin x, cos x
    torch.testing.assert_close(channels[0], expected_top_left)
    torch.testing.assert_close(channels[3], expected_top_left.abs())


def test_the_encoder_stays_frozen() -> None:
    encoder = PatchFeatureEncoder()
    encoder.train()
    assert not encoder.training
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    assert not encoder(torch.rand(1, 3, 64, 64, requires_grad=True)).features.requires_grad


def test_a_trainable_encoder_fine_tunes_its_content_mlp_only() -> None:
    encoder = PatchFeatureEncoder(trainable=True)
    encoder.train()
    assert encoder.training
    encoder(torch.rand(1, 3, 64, 64)).features.square().sum().backward()
    assert all(parameter.grad is not None for parameter in encoder.content.parameters())
    assert not encoder.mean.requires_grad and not encoder.std.requires_grad
    with pytest.raises(ValueError, match="trainable"):
        encoder.cache_fingerprint()


def test_the_shipped_weights_are_what_the_build_script_writes(tmp_path: Path) -> None:
    out = tmp_path / "rebuilt.pt"
    build_weights(out)
    shipped = torch.load(SHIPPED_WEIGHTS, weights_only=True)
    rebuilt = torch.load(out, weights_only=True)
    assert shipped["architecture"] == rebuilt["architecture"]
    for name, tensor in shipped["state_dict"].items():
        # The seeded MLP is bit for bit; the channel statistics are float sums over the train frames,
        # whose rounding follows the CPU's vector width (AVX2 vs AVX-512 differ by ~1e-8).
        exact = name not in ("mean", "std")
        torch.testing.assert_close(
            rebuilt["state_dict"][name], tensor, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6, msg=name
        )


def test_the_built_statistics_standardise_the_train_frames(tmp_path: Path) -> None:
    out = tmp_path / "small.pt"
    build_weights(out, "--videos", "8", "--patch-size", "8")
    encoder = PatchFeatureEncoder(patch_size=8, weights=str(out))
    features = encoder(train_frames(8, "easy", 64, 4, 0)).features.flatten(0, 1)
    torch.testing.assert_close(features.mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(features.std(0), torch.ones(64), atol=1e-3, rtol=0)
    assert (
        encoder.cache_fingerprint()["encoder"]["weights_sha256"]
        != PatchFeatureEncoder().cache_fingerprint()["encoder"]["weights_sha256"]
    )


def test_weights_built_for_another_architecture_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "patch8.pt"
    build_weights(out, "--videos", "2", "--patch-size", "8")
    with pytest.raises(ValueError, match="was built for .*'patch_size': 8"):
        PatchFeatureEncoder(patch_size=4, weights=str(out))
    with pytest.raises(FileNotFoundError, match="build_patch_encoder.py --out"):
        PatchFeatureEncoder(weights=str(tmp_path / "missing.pt"))
