"""VideoSAUR and SlotContrast: decoders, losses against their formulas, real config shapes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config

from ocl.cli import build_model
from ocl.losses.contrastive import slot_contrastive_loss
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS, TemporalFeatureSimilarity
from ocl.methods.output import ModelOutput
from ocl.modules.decoders import MLPFeatureDecoder, SlotMixerDecoder


def direct_similarity_loss(keys: torch.Tensor, logits: torch.Tensor, tau: float) -> float:
    """METHODS.md, VideoSAUR, written with loops over videos, frames and patches."""
    batch, frames, patches, _ = keys.shape
    total, count = 0.0, 0
    for b in range(batch):
        for t in range(frames - 1):
            for n in range(patches):
                k_now = keys[b, t, n] / keys[b, t, n].norm()
                weights = []
                for m in range(patches):
                    similarity = float(k_now @ (keys[b, t + 1, m] / keys[b, t + 1, m].norm()))
                    weights.append(0.0 if similarity < 0 else math.exp(similarity / tau))
                norm = sum(weights)
                log_norm = math.log(sum(math.exp(float(v)) for v in logits[b, t, n]))
                if norm > 0:
                    total -= sum(w / norm * (float(logits[b, t, n, m]) - log_norm) for m, w in enumerate(weights))
                count += 1
    return total / count


def direct_contrastive_loss(slots: torch.Tensor, tau: float) -> float:
    """METHODS.md, SlotContrast: per frame pair, pooled slots, positive = same (video, slot)."""
    batch, frames, num_slots, _ = slots.shape
    normed = slots / slots.norm(dim=-1, keepdim=True)
    total, count = 0.0, 0
    for t in range(frames - 1):
        pooled_now = [normed[b, t, k] for b in range(batch) for k in range(num_slots)]
        pooled_next = [normed[b, t + 1, k] for b in range(batch) for k in range(num_slots)]
        for i, anchor in enumerate(pooled_now):
            logits = [float(anchor @ other) / tau for other in pooled_next]
            total -= logits[i] - math.log(sum(math.exp(v) for v in logits))
            count += 1
    return total / count


def test_temporal_similarity_loss_matches_the_formula():
    torch.manual_seed(0)
    keys, logits = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 5)
    output = ModelOutput(slots=torch.zeros(2, 3, 1, 1), masks=torch.zeros(2, 3, 1, 1, 1))
    output.extras.update({KEYS: keys, SIMILARITY_LOGITS: logits})
    loss = TemporalFeatureSimilarity(temperature=0.25)(output, {})
    assert loss.item() == pytest.approx(direct_similarity_loss(keys, logits, 0.25), rel=1e-5)


def test_temporal_similarity_loss_ignores_the_last_frames_predictions_and_needs_two_frames():
    torch.manual_seed(1)
    keys, logits = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 4)
    output = ModelOutput(slots=torch.zeros(1, 2, 1, 1), masks=torch.zeros(1, 2, 1, 1, 1), extras={KEYS: keys})
    output.extras[SIMILARITY_LOGITS] = logits
    before = TemporalFeatureSimilarity()(output, {})
    output.extras[SIMILARITY_LOGITS] = torch.cat([logits[:, :1], torch.randn(1, 1, 4, 4)], dim=1)
    assert TemporalFeatureSimilarity()(output, {}) == before
    output.extras[KEYS], output.extras[SIMILARITY_LOGITS] = keys[:, :1], logits[:, :1]
    with pytest.raises(ValueError, match="at least 2 frames"):
        TemporalFeatureSimilarity()(output, {})


def test_slot_contrastive_loss_matches_the_formula_and_rewards_consistent_slots():
    torch.manual_seed(0)
    slots = torch.randn(2, 3, 4, 8)
    assert slot_contrastive_loss(slots, 0.1).item() == pytest.approx(direct_contrastive_loss(slots, 0.1), rel=1e-5)
    steady = slots[:, :1].expand(-1, 3, -1, -1)
    shuffled = torch.stack([steady[:, 0], steady[:, 1, torch.randperm(4)], steady[:, 2]], dim=1)
    assert slot_contrastive_loss(steady, 0.1) < slot_contrastive_loss(shuffled, 0.1)


@pytest.mark.parametrize("decoder_class", [MLPFeatureDecoder, SlotMixerDecoder])
def test_feature_decoders_give_masks_over_slots_and_train(decoder_class):
    torch.manual_seed(0)
    decoder = decoder_class(slot_dim=16, num_tokens=9, output_dim=5, hidden_dims=[32])
    slots = torch.randn(2, 3, 16, requires_grad=True)
    values, masks = decoder(slots)
    assert values.shape == (2, 9, 5) and masks.shape == (2, 3, 9)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 9))
    values.square().mean().backward()
    assert slots.grad.abs().sum() > 0


def test_mlp_decoder_reconstruction_is_the_mask_weighted_sum_of_slot_values():
    torch.manual_seed(0)
    decoder = MLPFeatureDecoder(slot_dim=8, num_tokens=4, output_dim=3, hidden_dims=[16])
    slots = torch.randn(1, 2, 8)
    values, masks = decoder(slots)
    per_slot = decoder.mlp(slots.unsqueeze(2) + decoder.position)[..., :-1]  # [1, K, N, 3]
    torch.testing.assert_close(values, (masks.unsqueeze(-1) * per_slot).sum(dim=1))


TINY_FEATURE_MODEL = [
    "model.encoder.weights=random",
    "model.decoder.hidden_dims=[32]",
    "trainer.max_steps=10",
]


@pytest.mark.parametrize(
    ("experiment", "image_size", "slots", "losses"),
    [
        ("videosaur_movi_c", 32, 11, {"similarity"}),
        ("videosaur_movi_e", 32, 15, {"similarity"}),
        ("videosaur_ytvis", 32, 7, {"similarity", "mse"}),
        ("slotcontrast_movi_c", 28, 11, {"mse", "contrastive"}),
        ("slotcontrast_movi_e", 28, 15, {"mse", "contrastive"}),
        ("slotcontrast_ytvis", 28, 7, {"mse", "contrastive"}),
    ],
)
def test_published_recipes_run_forward_and_backward_at_a_tiny_image_size(
    tmp_path, experiment, image_size, slots, losses
):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            f"model.encoder.image_size={image_size}",
            *TINY_FEATURE_MODEL,
            f"paths.output_dir={tmp_path}",
        ]
    )
    model = build_model(cfg)
    assert set(model.losses) == losses
    video = torch.rand(2, 3, 3, image_size, image_size)
    output = model({"video": video})
    patches = image_size // model.encoder.patch_size
    assert output.slots.shape[:3] == (2, 3, slots)
    assert output.masks.shape == (2, 3, slots, patches, patches)
    total, _ = model.compute_losses(output, {"video": video})
    total.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is None for p in model.encoder.parameters())
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable) > 0.9 * len(trainable)
    assert torch.isfinite(total)


@pytest.mark.parametrize(
    ("experiment", "encoder", "image_size", "slots", "dim", "lr", "batch", "steps"),
    [
        ("videosaur_movi_c", "vit_base_patch8_224.dino", 224, 11, 128, 4e-4, 128, 100_000),
        ("videosaur_movi_e", "vit_base_patch8_224.dino", 224, 15, 128, 4e-4, 128, 100_000),
        ("videosaur_ytvis", "vit_base_patch16_224.dino", 224, 7, 64, 4e-4, 128, 100_000),
        ("slotcontrast_movi_c", "vit_small_patch14_dinov2.lvd142m", 336, 11, 64, 8e-4, 128, 100_000),
        ("slotcontrast_movi_e", "vit_base_patch14_dinov2.lvd142m", 336, 15, 128, 8e-4, 128, 300_000),
        ("slotcontrast_ytvis", "vit_base_patch14_dinov2.lvd142m", 518, 7, 64, 8e-4, 64, 100_000),
    ],
)
def test_experiments_carry_the_published_recipe(
    tmp_path, experiment, encoder, image_size, slots, dim, lr, batch, steps
):
    cfg = compose_config([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.encoder.model_name == encoder
    assert cfg.model.encoder.image_size == image_size
    assert cfg.data.train_transform.size == image_size == cfg.data.eval_transform.size
    assert (cfg.model.processor.initialiser.num_slots, cfg.model.processor.initialiser.dim) == (slots, dim)
    assert (cfg.model.optimizer.lr, cfg.data.batch_size, cfg.trainer.max_steps) == (lr, batch, steps)
    assert cfg.data.train_clip_length == 4 and cfg.data.eval_clip_length is None
    assert cfg.trainer.gradient_clip_val == 0.05
    assert (cfg.model.scheduler.warmup_steps, cfg.model.scheduler.decay_rate) == (2500, 0.5)
