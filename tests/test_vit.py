"""ViT encoders: features and keys against a manual timm computation, freezing, weights, configs; a
trainable one's drop path and DINO's per-call position interpolation (SMTC's student)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_abs_pos_embed
from torch import nn

from ocl.build import UsageError, build_model
from ocl.modules.vit import ViTEncoder, WeightsError, dino_position_embedding

ENCODER_CONFIGS = [
    path
    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "model" / "encoder").glob("*.yaml"))
    if OmegaConf.load(path).get("_target_") == "ocl.modules.vit.ViTEncoder"
]
"""The ViT configs (not the patch stand-in, nor dino_vits16_smtc, which extends dino_vits16)."""
SMTC_CHECKPOINT = Path(__file__).resolve().parent / "fixtures" / "golden" / "checkpoints" / "smtc.json"
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


def test_compiled_and_copied_encoders_return_their_own_keys():
    encoder = ViTEncoder(NAME, image_size=32, weights="random", **TINY)
    images = torch.rand(2, 3, 32, 32)
    expected = encoder(images)
    twin = copy.deepcopy(encoder)  # e.g. SMTC's teacher: its keys come from its own last block
    with torch.no_grad():
        twin.vit.blocks[-1].attn.qkv.weight.mul_(2)
    assert not torch.allclose(twin(images).keys, expected.keys)
    encoder.compile(backend="eager")  # as compile=true: the keys' hook must run inside the compiled forward
    compiled = encoder(images)
    torch.testing.assert_close(compiled.features, expected.features)
    torch.testing.assert_close(compiled.keys, expected.keys)


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
    with pytest.raises(WeightsError, match="nowhere.pth"):
        ViTEncoder(NAME, image_size=32, weights=str(path), **TINY)
    # through a config: the message alone (entry points print UsageErrors as one line), not Hydra's wrapper
    cfg = compose_config(["experiment=smtc_synthetic", f"model.encoder.weights={path}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(UsageError, match=r"^ViT weights file not found: .*nowhere.pth"):
        build_model(cfg)


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
    assert "model.encoder.weights=" in message and "model.weights=" in message


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
    with torch.device("meta"):  # the architecture only: no time spent drawing random weights
        encoder = instantiate(cfg, weights="random")
    assert isinstance(encoder, ViTEncoder)
    assert encoder.embed_dim == cfg.embed_dim and encoder.patch_size == cfg.patch_size
    assert len(encoder.vit.blocks) == cfg.block
    assert encoder.vit.pos_embed.shape[1] == encoder.num_tokens(cfg.image_size) + encoder.vit.num_prefix_tokens


# ----------------------------------------------------------------------------- SMTC's student ViT

TINY16 = {**TINY, "patch_size": 16}
"""A tiny ViT with DINO ViT-S/16's patch, so its 224 px table is DINO's 14x14."""


def test_drop_path_follows_the_linear_rule_and_acts_only_in_training_of_a_trainable_encoder():
    torch.manual_seed(0)
    encoder = ViTEncoder(NAME, image_size=32, weights="random", trainable=True, drop_path_rate=0.6, **TINY)
    rates = [[getattr(path, "drop_prob", 0.0) for path in (b.drop_path1, b.drop_path2)] for b in encoder.vit.blocks]
    assert rates == [[pytest.approx(0.6 * i / 3)] * 2 for i in range(4)]  # 0 -> 0.6 over 4 blocks (0: Identity)
    plain = ViTEncoder(NAME, image_size=32, weights="random", trainable=True, **TINY)
    plain.load_state_dict(encoder.state_dict())
    images = torch.rand(8, 3, 32, 32)
    reference = plain(images).features
    parent = nn.Sequential(encoder).train()
    assert encoder.training and all(module.training for module in encoder.modules())
    dropped, again = encoder(images).features, encoder(images).features
    assert not torch.allclose(dropped, reference) and not torch.allclose(dropped, again)  # random, per call
    plain.train()
    torch.testing.assert_close(plain(images).features, reference)  # rate 0: training mode changes nothing
    parent.eval()
    torch.testing.assert_close(encoder(images).features, reference)  # eval: identity
    teacher = copy.deepcopy(encoder).requires_grad_(False)  # SMTC's teacher: a frozen copy
    teacher.trainable = False
    teacher.train()
    assert not any(module.training for module in teacher.modules())
    torch.testing.assert_close(teacher(images).features, reference)
    with pytest.raises(ValueError, match="drop_path_rate needs trainable=true"):
        ViTEncoder(NAME, image_size=32, weights="random", drop_path_rate=0.1, **TINY)


def _cubic(distance: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel (bicubic interpolation's, ``a = -0.75``)."""
    x = abs(distance)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0


def _dino_resampling(side: int, size: int) -> torch.Tensor:
    """``[size, side]`` weights of DINO's 1-d bicubic resampling from ``side`` to ``size``
    positions: scale factor ``(size + 0.1) / side``, so output ``i`` reads the source at
    ``(i + 0.5) * side / (size + 0.1) - 0.5``; the 4 taps around it, clamped at the borders."""
    weights = torch.zeros(size, side, dtype=torch.float64)
    for i in range(size):
        source = (i + 0.5) * side / (size + 0.1) - 0.5
        base = math.floor(source)
        for tap in range(base - 1, base + 3):
            weights[i, min(max(tap, 0), side - 1)] += _cubic(source - tap)
    return weights


def _dino_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINO's formula by hand: the 14x14 part of ``table [1, 1 + 196, D]`` resampled to ``grid``."""
    side = math.isqrt(table.shape[1] - 1)
    patches = table[0, 1:].reshape(side, side, -1)  # [g, g, D]
    rows, cols = _dino_resampling(side, grid[0]), _dino_resampling(side, grid[1])
    resampled = torch.einsum("hi,ijd,wj->hwd", rows, patches, cols).reshape(1, grid[0] * grid[1], -1)
    return torch.cat([table[:, :1], resampled], dim=1)


def _timm_with_table(encoder: ViTEncoder, table: torch.Tensor, grid: tuple[int, int]) -> nn.Module:
    """A timm ViT with ``encoder``'s weights and the position ``table`` made for ``grid`` (timm uses
    a table of the input's own grid as it is)."""
    state = {**encoder.vit.state_dict(), "pos_embed": table}
    size = (grid[0] * 16, grid[1] * 16)
    model = timm.create_model(NAME, pretrained=False, img_size=size, dynamic_img_size=True, **TINY16)
    model.prune_intermediate_layers([len(encoder.vit.blocks) - 1], prune_norm=True, prune_head=True)
    model.load_state_dict(state)
    return model.to(table.dtype).eval()


@pytest.mark.parametrize("size", [(256, 256), (480, 800)], ids=["train_256", "eval_480x800"])
def test_dino_per_call_interpolation_is_dinos_formula(size):
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(1)
        encoder = ViTEncoder(
            NAME, image_size=256, weights="random", trainable=True, position_interpolation="dino_per_call", **TINY16
        )
        assert encoder.vit.pos_embed.shape == (1, 1 + 14 * 14, 32)  # the 224 px table is kept
        grid = (size[0] // 16, size[1] // 16)
        expected = _dino_table(encoder.vit.pos_embed.detach(), grid)
        torch.testing.assert_close(dino_position_embedding(encoder.vit.pos_embed, grid), expected, rtol=0, atol=1e-12)
        timm_way = resample_abs_pos_embed(encoder.vit.pos_embed.detach(), new_size=grid, num_prefix_tokens=1)
        assert (timm_way - expected).abs().max() > 1e-3  # antialiased, exact-size resampling differs
        images = torch.rand(2, 3, *size)
        out = encoder(images)
        features, keys = manual_block(_timm_with_table(encoder, expected, grid), images, len(encoder.vit.blocks))
        torch.testing.assert_close(out.features, features, rtol=0, atol=1e-10)
        torch.testing.assert_close(out.keys, keys, rtol=0, atol=1e-10)
        out.features.sum().backward()
        assert encoder.vit.pos_embed.grad.abs().sum() > 0  # the 14x14 table is what is fine-tuned
    finally:
        torch.set_default_dtype(torch.float32)


def test_dino_per_call_keeps_the_table_at_its_own_grid_and_refuses_other_layouts():
    encoder = ViTEncoder(NAME, image_size=224, weights="random", position_interpolation="dino_per_call", **TINY16)
    assert dino_position_embedding(encoder.vit.pos_embed, (14, 14)) is encoder.vit.pos_embed
    with pytest.raises(ValueError, match="DINO's layout"):
        ViTEncoder(NAME, weights="random", position_interpolation="dino_per_call", reg_tokens=2, **TINY16)
    with pytest.raises(ValueError, match="position_interpolation"):
        ViTEncoder(NAME, weights="random", position_interpolation="bilinear", **TINY16)


def test_smtc_recipe_student_keeps_the_table_of_the_authors_checkpoint():
    """SMTC's files store the student's fine-tuned 14x14 table (1, 197, 384): the recipe's
    encoder holds the same shape, so their checkpoint maps onto it 1:1 (no resampling)."""
    cfg = compose_config(["experiment=smtc_ytvos", "paths.output_dir=/unused", "paths.data_root=/unused"])
    assert cfg.model.encoder.drop_path_rate == 0.1
    encoder = instantiate(cfg.model.encoder, weights="random")
    theirs = json.loads(SMTC_CHECKPOINT.read_text())["state_dict"]["encoder.pos_embed"]
    assert list(encoder.vit.pos_embed.shape) == theirs == [1, 197, 384]
    assert encoder.num_tokens() == 16 * 16 and encoder.position_interpolation == "dino_per_call"
