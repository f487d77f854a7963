"""Frozen ViT encoders: features and keys against a manual timm computation, freezing, weights, configs."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_abs_pos_embed
from torch import nn

from ocl.modules.vit import ViTEncoder, WeightsError

ENCODER_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "model" / "encoder").glob("*.yaml"))
NAME = "vit_small_patch16_224.dino"
TINY = {"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2}


def tiny_timm(image_size: int = 32, **kwargs) -> nn.Module:
    """A tiny random timm ViT in eval mode, built like ViTEncoder builds it."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, img_size=image_size, dynamic_img_size=True, **TINY, **kwargs)
    return model.eval()


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``state`` with safetensors for a ``.safetensors`` path, else with torch.save."""
    if path.suffix == ".safetensors":
        safetensors.torch.save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def manual_block(model: nn.Module, images: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``block`` (1-based) output and keys by running the timm model's parts by hand."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        x = model.norm_pre(model._pos_embed(model.patch_embed((images - mean) / std)))
        for blk in model.blocks[: block - 1]:
            x = blk(x)
        last = model.blocks[block - 1]
        keys = last.attn.qkv(last.norm1(x)).chunk(3, dim=-1)[1]
        x = last(x)
    prefix = model.num_prefix_tokens
    return x[:, prefix:], keys[:, prefix:]


@pytest.mark.parametrize(
    ("block", "extra"),
    [(4, {}), (2, {}), (3, {"reg_tokens": 2, "no_embed_class": True})],
    ids=["last", "block2", "registers"],
)
def test_features_and_keys_equal_manual_timm_computation(tmp_path, block, extra):
    reference = tiny_timm(**extra)
    path = save(reference.state_dict(), tmp_path / "vit.pth")
    encoder = ViTEncoder(NAME, image_size=32, weights=str(path), block=block, **TINY, **extra)
    images = torch.rand(2, 3, 32, 40)
    out = encoder(images)
    features, keys = manual_block(reference, images, block)
    assert out.grid == (4, 5) and out.features.shape == (2, 20, 32) and out.keys.shape == (2, 20, 32)
    torch.testing.assert_close(out.features, features)
    torch.testing.assert_close(out.keys, keys)
    assert len(encoder.vit.blocks) == block  # later blocks never run


@pytest.mark.parametrize("size", [(32, 32), (16, 48), (64, 24)])
def test_token_count_follows_frame_size(size):
    encoder = ViTEncoder(NAME, image_size=32, weights="random", **TINY)
    out = encoder(torch.rand(1, 3, *size))
    h, w = size[0] // 8, size[1] // 8
    assert out.grid == (h, w) and out.features.shape[1] == h * w == encoder.num_tokens(size)
    assert encoder.num_tokens() == encoder.num_tokens(32) == 16 and encoder.embed_dim == 32 and encoder.patch_size == 8


def test_frozen_no_grad_into_encoder_but_into_the_next_layer():
    encoder = ViTEncoder(NAME, image_size=32, weights="random", **TINY)
    head = nn.Linear(32, 4)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = encoder(images)
    (head(out.features).sum() + head(out.keys).sum()).backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    assert images.grad is None


def test_stays_in_eval_mode_under_parent_train():
    parent = nn.Sequential(ViTEncoder(NAME, image_size=32, weights="random", **TINY), nn.Dropout())
    parent.train()
    assert parent[1].training
    assert not any(module.training for module in parent[0].modules())


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".safetensors"])
def test_local_file_round_trip(tmp_path, suffix):
    reference = tiny_timm()
    path = save(reference.state_dict(), tmp_path / f"vit{suffix}")
    encoder = ViTEncoder(NAME, image_size=32, weights=str(path), **TINY)
    images = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(encoder(images).features, manual_block(reference, images, 4)[0])


def test_original_dinov2_checkpoint_layout_loads(tmp_path):
    """The original DINOv2 files are timm's layout plus a mask token, which timm's filter drops."""
    reference = tiny_timm(init_values=1e-5)
    state = {**reference.state_dict(), "mask_token": torch.zeros(1, 32)}
    path = save({"model": state}, tmp_path / "dinov2_pretrain.pth")
    encoder = ViTEncoder(NAME, image_size=32, weights=str(path), init_values=1e-5, **TINY)
    images = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(encoder(images).keys, manual_block(reference, images, 4)[1])


def test_position_embedding_resampled_to_image_size(tmp_path):
    reference = tiny_timm(image_size=32)
    path = save(reference.state_dict(), tmp_path / "vit.pth")
    encoder = ViTEncoder(NAME, image_size=64, weights=str(path), **TINY)
    expected = resample_abs_pos_embed(reference.pos_embed, new_size=(8, 8), num_prefix_tokens=1)
    torch.testing.assert_close(encoder.vit.pos_embed, expected)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ViTEncoder(NAME, image_size=32, weights=str(path), **TINY)


def test_wrong_keys_name_the_file_and_keys(tmp_path):
    state = tiny_timm().state_dict()
    state["extra.weight"] = state.pop("blocks.0.attn.qkv.weight")
    path = save(state, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="other.pth") as error:
        ViTEncoder(NAME, image_size=32, weights=str(path), **TINY)
    assert "blocks.0.attn.qkv.weight" in str(error.value) and "extra.weight" in str(error.value)


def test_wrong_shapes_are_reported(tmp_path):
    path = save(tiny_timm().state_dict(), tmp_path / "small.pth")
    with pytest.raises(WeightsError, match="wrong shape"):
        ViTEncoder(NAME, image_size=32, weights=str(path), **{**TINY, "embed_dim": 48})


@pytest.mark.timeout(30)
def test_offline_hub_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # no cached copy
    with pytest.raises(WeightsError) as error:
        ViTEncoder(NAME, image_size=32, weights="hub", **TINY)
    message = str(error.value)
    assert NAME in message and "timm/vit_small_patch16_224.dino" in message
    assert "model.encoder.weights=" in message


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        ViTEncoder(NAME, image_size=36, weights="random", **TINY)
    encoder = ViTEncoder(NAME, image_size=32, weights="random", **TINY)
    with pytest.raises(ValueError, match="33x32 is not a multiple of the patch size 8"):
        encoder(torch.rand(1, 3, 33, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encoder(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match=r"block must be in \[1, 4\]"):
        ViTEncoder(NAME, image_size=32, weights="random", block=5, **TINY)


@pytest.mark.parametrize("config", ENCODER_CONFIGS, ids=lambda path: path.stem)
def test_encoder_configs_instantiate_with_random_weights(config):
    cfg = OmegaConf.load(config)
    assert cfg.model_name in timm.list_models(pretrained=True) or cfg.weights == "random"
    encoder = instantiate(cfg, weights="random")
    assert isinstance(encoder, ViTEncoder)
    assert encoder.embed_dim == cfg.embed_dim and encoder.patch_size == cfg.patch_size
    assert len(encoder.vit.blocks) == cfg.block
    assert encoder.vit.pos_embed.shape[1] == encoder.num_tokens(cfg.image_size) + encoder.vit.num_prefix_tokens
