"""Golden checks: the tiny full-model fixtures (tests/fixtures/golden/README.md, "Tiny full-model fixtures").

Each fixture is a whole model of the authors' (encoder, initialiser, processor, decoder, losses)
at tiny sizes. The check builds ocl's model from the recipe experiment shrunk to the same sizes,
loads the fixture's ``param/*`` through :func:`ocl.published.convert_state_dict` (what
``scripts/import_checkpoint.py`` runs), feeds ``input/video`` and compares every ``output/*``:
encoder, processor, decoder, each loss and the weighted total.

Everything is float64. The SlotContrast / SlotCurri ViT's 4x4 position table is resampled to the
3x3 grid once, when converted, by timm's own function in float32, as timm resamples it on every
forward of their ``dynamic_img_size`` model in float32 too: the values are identical, so every
comparison holds to ``FLOAT64``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from conftest import compose_config

from golden_checks.common import FLOAT64, Fixture, expect_close
from golden_checks.feature_video import injected_randn
from ocl.build import build_model
from ocl.contracts.batch import VIDEO
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS, similarity_targets
from ocl.methods.feature_video import FeatureVideoMethod
from ocl.published import LAYOUTS, convert_state_dict

TINY_VIT = [
    "model.encoder.image_size=12",  # 3x3 patches of 4 pixels
    "model.encoder.embed_dim=4",
    "model.encoder.patch_size=4",
    "+model.encoder.num_heads=2",
    "+model.encoder.mlp_ratio=1",
    "model.processor.initialiser.dim=8",
]
"""The fixtures' sizes (timm kwargs embed_dim 4, 2 heads, mlp_ratio 1, patch 4, depth 12; D 8); the
ViT's weights stay the recipe's (``scripts/import_checkpoint.py`` builds it with random ones)."""
TINY = {
    "videosaur": [*TINY_VIT, "model.processor.initialiser.num_slots=4", "model.decoder.hidden_dims=[16,16,16,16]"],
    "slotcontrast": [
        *TINY_VIT,
        "model.processor.initialiser.num_slots=4",
        "model.processor.corrector.mlp_hidden_dim=32",
        "model.decoder.hidden_dims=[16,16,16]",
    ],
    "slotcurri": [
        *TINY_VIT,
        "model.processor.initialiser.num_slots=6",
        "model.processor.corrector.mlp_hidden_dim=32",
        "model.decoder.hidden_dims=[16,16,16]",
    ],
}
EXPERIMENTS = {"videosaur": "videosaur_movi_c", "slotcontrast": "slotcontrast_movi_c", "slotcurri": "slotcurri_movi"}
LOSS_NAMES = {"loss_timesim": "similarity", "loss_featrec": "mse", "loss_ss": "contrastive", "loss_ssim": "ssim3d"}
"""The authors' loss names -> the recipes' loss terms (configs/loss/*.yaml)."""


def imported_model(fixture: Fixture, family: str) -> FeatureVideoMethod:
    """The recipe's model at the fixture's sizes with the fixture's parameters, taking the video
    as it is (the fixture's video is already normalised: ViT mean 0, std 1)."""
    overrides = [f"experiment={EXPERIMENTS[family]}", *TINY[family], "model.encoder.weights=random"]
    cfg = compose_config([*overrides, "paths.output_dir=/unused"])
    model = build_model(cfg)
    model.load_state_dict(convert_state_dict(LAYOUTS[family], fixture.params(), model))
    model.encoder.mean.zero_()
    model.encoder.std.fill_(1.0)
    return model


def _compare_encoder(model: FeatureVideoMethod, fixture: Fixture, video: torch.Tensor) -> None:
    batch_size, num_frames = video.shape[:2]
    with torch.no_grad():
        encoded = model.encode(video)
        features = model.token_mlp(encoded.features)
    for name, value in (
        ("features", features),
        ("backbone_features", encoded.features),
        ("vit_block_keys12", encoded.keys),
    ):
        expect_close(value.unflatten(0, (batch_size, num_frames)), fixture[f"output/encoder/{name}"], FLOAT64, name)


def _compare_forward(model: FeatureVideoMethod, fixture: Fixture, case: str = "") -> None:
    """Run the model on ``input/video`` (in its current train / eval mode) and compare
    ``output/<case>processor/*``, ``decoder/*`` and ``loss/*``."""
    video = fixture["input/video"]
    noise = "input/initializer_noise"
    draws = injected_randn(fixture[noise]) if noise in fixture else nullcontext()
    with torch.no_grad(), draws:
        output = model({VIDEO: video})
        total, terms = model.compute_losses(output, {VIDEO: video})
        predicted = model.processor.predictor(output.slots.flatten(0, 1)).unflatten(0, output.slots.shape[:2])
    prefix = f"output/{case}"
    expect_close(output.slots, fixture[f"{prefix}processor/state"], FLOAT64, "processor state")
    expect_close(predicted, fixture[f"{prefix}processor/state_predicted"], FLOAT64, "predicted state")
    expect_close(output.attention, fixture[f"{prefix}processor/corrector/masks"], FLOAT64, "corrector masks")
    decoded = output.extras[SIMILARITY_LOGITS] if model.predict_similarity else output.reconstruction
    expect_close(decoded, fixture[f"{prefix}decoder/reconstruction"], FLOAT64, "decoder reconstruction")
    expect_close(output.masks.flatten(-2), fixture[f"{prefix}decoder/masks"], FLOAT64, "decoder masks")
    losses = {key.rsplit("/", 1)[1] for key in fixture.keys(f"{prefix}loss/")} - {"total"}
    assert {LOSS_NAMES[name] for name in losses} == set(terms), f"loss terms {sorted(terms)} != theirs {losses}"
    for name in sorted(losses):
        expect_close(terms[LOSS_NAMES[name]], fixture[f"{prefix}loss/{name}"], FLOAT64, name)
    expect_close(total, fixture[f"{prefix}loss/total"], FLOAT64, "total loss")
    if model.predict_similarity:
        temperature = model.losses[LOSS_NAMES["loss_timesim"]].temperature
        targets = similarity_targets(output.extras[KEYS], temperature, "uniform")
        expect_close(targets.flatten(1, 2), fixture["output/targets/loss_timesim"], FLOAT64, "similarity targets")


def _whole_model(fixture: Fixture, family: str) -> None:
    """VideoSAUR / SlotContrast: one forward (train and eval modes run the same)."""
    model = imported_model(fixture, family).eval()
    _compare_encoder(model, fixture, fixture["input/video"])
    _compare_forward(model, fixture)


def _slotcurri(fixture: Fixture, case: str, active_slots: int | None) -> None:
    """SlotCurri: ``eval`` = evaluation forward with cyclic inference (the recipe's
    ``cyclic_inference``); the others a training forward with the first ``active_slots`` slots
    (the curriculum's count at the case's global step: 2 before the first growth, all after both)."""
    model = imported_model(fixture, "slotcurri")
    if active_slots is None:
        model.eval()
        assert model.processor.cyclic_inference
    else:
        model.train()
        model.processor.initialiser.num_active = active_slots
    _compare_encoder(model, fixture, fixture["input/video"])
    _compare_forward(model, fixture, f"{case}/")


CHECKS: dict[str, dict[str, Callable[[Fixture], None]]] = {
    "checkpoints/tiny_videosaur_movi_c.npz": {"forward": lambda fixture: _whole_model(fixture, "videosaur")},
    "checkpoints/tiny_slotcontrast_movi_c.npz": {"forward": lambda fixture: _whole_model(fixture, "slotcontrast")},
    "checkpoints/tiny_slotcurri_movi_c.npz": {
        "eval": lambda fixture: _slotcurri(fixture, "eval", None),
        "train_step50000": lambda fixture: _slotcurri(fixture, "train_step50000", 6),
        "train_step5000": lambda fixture: _slotcurri(fixture, "train_step5000", 2),
    },
}
