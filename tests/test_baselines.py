"""VideoSAUR and SlotContrast: decoders, losses against their formulas, real config shapes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config

from ocl.build import build_model
from ocl.contracts.output import ModelOutput
from ocl.losses.contrastive import slot_contrastive_loss
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS, TemporalFeatureSimilarity, similarity_targets
from ocl.modules.decoders import MLPFeatureDecoder, SlotMixerDecoder


def direct_similarity_loss(keys: torch.Tensor, logits: torch.Tensor, tau: float, unmatched_rows: str) -> float:
    """METHODS.md, VideoSAUR, written with loops over videos, frames and patches; a patch with no
    positive similarity gets a uniform target (``uniform``) or none (``ignore``)."""
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
                if norm == 0 and unmatched_rows == "uniform":
                    weights, norm = [1.0] * patches, float(patches)
                log_norm = math.log(sum(math.exp(float(v)) for v in logits[b, t, n]))
                if norm > 0:
                    total -= sum(w / norm * (float(logits[b, t, n, m]) - log_norm) for m, w in enumerate(weights))
                count += 1
    return total / count


def direct_contrastive_loss(slots: torch.Tensor, tau: float, softmax_over: str) -> float:
    """METHODS.md, SlotContrast: per frame pair, pooled slots, positive = same (video, slot); the
    softmax runs over the pooled slots of frame t (``current``) or t+1 (``next``)."""
    batch, frames, num_slots, _ = slots.shape
    normed = slots / slots.norm(dim=-1, keepdim=True)
    total, count = 0.0, 0
    for t in range(frames - 1):
        pooled_now = [normed[b, t, k] for b in range(batch) for k in range(num_slots)]
        pooled_next = [normed[b, t + 1, k] for b in range(batch) for k in range(num_slots)]
        anchors, candidates = (pooled_next, pooled_now) if softmax_over == "current" else (pooled_now, pooled_next)
        for i, anchor in enumerate(anchors):
            logits = [float(anchor @ other) / tau for other in candidates]
            total -= logits[i] - math.log(sum(math.exp(v) for v in logits))
            count += 1
    return total / count


@pytest.mark.parametrize("unmatched_rows", ["uniform", "ignore"])
def test_temporal_similarity_loss_matches_the_formula(unmatched_rows):
    torch.manual_seed(0)
    keys, logits = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 5)
    keys[0, 2] = keys[0, 2].abs()
    keys[0, 1, 2] = -keys[0, 2].mean(dim=0)  # a patch of frame 1 with a negative cosine to every patch of frame 2
    assert (torch.einsum("d,md->m", keys[0, 1, 2], keys[0, 2]) < 0).all()
    output = ModelOutput(slots=torch.zeros(2, 3, 1, 1), masks=torch.zeros(2, 3, 1, 1, 1))
    output.extras.update({KEYS: keys, SIMILARITY_LOGITS: logits})
    loss = TemporalFeatureSimilarity(temperature=0.25, unmatched_rows=unmatched_rows)(output, {})
    assert loss.item() == pytest.approx(direct_similarity_loss(keys, logits, 0.25, unmatched_rows), rel=1e-5)
    targets = similarity_targets(keys, 0.25, unmatched_rows)
    expected_row = torch.full((5,), 0.2) if unmatched_rows == "uniform" else torch.zeros(5)
    torch.testing.assert_close(targets[0, 1, 2], expected_row)
    torch.testing.assert_close(targets[0, 0].sum(dim=-1), torch.ones(5))  # the other rows are distributions
    with pytest.raises(ValueError, match="unmatched_rows"):
        TemporalFeatureSimilarity(unmatched_rows="zero")


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


@pytest.mark.parametrize("softmax_over", ["current", "next"])
def test_slot_contrastive_loss_matches_the_formula_and_rewards_consistent_slots(softmax_over):
    torch.manual_seed(0)
    slots = torch.randn(2, 3, 4, 8)
    loss = slot_contrastive_loss(slots, 0.1, softmax_over=softmax_over)
    assert loss.item() == pytest.approx(direct_contrastive_loss(slots, 0.1, softmax_over), rel=1e-5)
    # the two settings are one loss on time-reversed clips of each other
    other = "next" if softmax_over == "current" else "current"
    torch.testing.assert_close(slot_contrastive_loss(slots.flip(1), 0.1, softmax_over=other), loss)
    assert not torch.allclose(slot_contrastive_loss(slots, 0.1, softmax_over=other), loss)
    steady = slots[:, :1].expand(-1, 3, -1, -1)
    shuffled = torch.stack([steady[:, 0], steady[:, 1, torch.randperm(4)], steady[:, 2]], dim=1)
    assert slot_contrastive_loss(steady, 0.1, softmax_over=softmax_over) < slot_contrastive_loss(
        shuffled, 0.1, softmax_over=softmax_over
    )
    with pytest.raises(ValueError, match="softmax_over"):
        slot_contrastive_loss(slots, 0.1, softmax_over="previous")


@pytest.mark.parametrize("softmax_over", ["current", "next"])
def test_pooled_groups_give_the_mean_of_separate_batches_losses_and_gradients(softmax_over):
    """SlotCurri's 2 GPUs x 64 without a gather, at 2 x 3: each GPU's loss is the mean over its own
    anchors with its own batch as the pool; DDP averages the GPUs' gradients (equal batches)."""
    torch.manual_seed(2)
    slots = torch.randn(6, 3, 4, 8, dtype=torch.float64)
    grouped = slots.clone().requires_grad_(True)
    loss = slot_contrastive_loss(grouped, 0.1, softmax_over=softmax_over, pool_videos=3)
    loss.backward()
    separate = [slots[:3].clone().requires_grad_(True), slots[3:].clone().requires_grad_(True)]
    per_gpu = [slot_contrastive_loss(part, 0.1, softmax_over=softmax_over) for part in separate]
    (sum(per_gpu) / 2).backward()
    torch.testing.assert_close(loss, sum(per_gpu) / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(grouped.grad, torch.cat([part.grad for part in separate]), rtol=0, atol=1e-12)
    assert per_gpu[0].item() == pytest.approx(direct_contrastive_loss(slots[:3], 0.1, softmax_over), rel=1e-10)
    whole = slot_contrastive_loss(slots, 0.1, softmax_over=softmax_over)
    assert not torch.allclose(loss, whole)  # the other half's negatives are left out
    torch.testing.assert_close(slot_contrastive_loss(slots, 0.1, softmax_over=softmax_over, pool_videos=6), whole)
    # a smaller last group (here 6 = 4 + 2): every anchor weighs the same
    groups = [slot_contrastive_loss(part, 0.1, softmax_over=softmax_over) for part in (slots[:4], slots[4:])]
    torch.testing.assert_close(
        slot_contrastive_loss(slots, 0.1, softmax_over=softmax_over, pool_videos=4),
        (4 * groups[0] + 2 * groups[1]) / 6,
        rtol=0,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="pool_videos"):
        slot_contrastive_loss(slots, 0.1, pool_videos=0)


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


def test_slot_mixer_patches_attend_to_the_slots_only_and_render_each_patch_alone():
    torch.manual_seed(0)
    decoder = SlotMixerDecoder(slot_dim=8, num_tokens=6, output_dim=3, num_blocks=2, num_heads=2, hidden_dims=[16, 16])
    slots = torch.randn(2, 4, 8)
    values, masks = decoder(slots)
    with torch.no_grad():
        decoder.position[:, 0] += torch.randn(8)  # no self-attention among patches: the other patches do not see it
    moved_values, moved_masks = decoder(slots)
    torch.testing.assert_close(moved_values[:, 1:], values[:, 1:])
    torch.testing.assert_close(moved_masks[..., 1:], masks[..., 1:])
    assert not torch.allclose(moved_masks[..., 0], masks[..., 0])
    # the rendered patch is the MLP of the mask-weighted raw slots plus its position embedding
    mixed = torch.einsum("bkn,bkd->bnd", moved_masks, slots) + decoder.position
    torch.testing.assert_close(moved_values, decoder.render(mixed))
    assert [type(layer).__name__ for layer in decoder.render] == ["Linear", "ReLU"] * 2 + ["Linear"]


def test_slot_mixer_legacy_scale_multiplies_the_allocator_logits():
    torch.manual_seed(0)
    standard = SlotMixerDecoder(slot_dim=8, num_tokens=5, output_dim=3, num_heads=2, hidden_dims=[16])
    legacy = SlotMixerDecoder(slot_dim=8, num_tokens=5, output_dim=3, num_heads=2, hidden_dims=[16], legacy_scale=True)
    legacy.load_state_dict(standard.state_dict())
    assert [block.scale for block in standard.allocator] == [0.5, 0.5]  # head_dim 4
    assert [block.scale for block in legacy.allocator] == [2.0, 2.0]
    slots = torch.randn(2, 3, 8)
    assert not torch.allclose(standard(slots)[1], legacy(slots)[1])


def test_feature_decoders_start_from_the_authors_initial_values():
    torch.manual_seed(0)
    dim, tokens = 64, 400
    mlp_decoder = MLPFeatureDecoder(slot_dim=dim, num_tokens=tokens, output_dim=5, hidden_dims=[32])
    mixer = SlotMixerDecoder(slot_dim=dim, num_tokens=tokens, output_dim=5, hidden_dims=[32, 32])
    for position in (mlp_decoder.position, mixer.position):  # randn * d ** -0.5
        assert float(position.detach().std()) == pytest.approx(dim**-0.5, rel=0.05)
    output_layer = mixer.render[-1]
    for layer in (mixer.to_q, mixer.to_k, output_layer):  # Xavier-uniform
        bound = (6 / sum(layer.weight.shape)) ** 0.5
        weight = layer.weight.detach()
        assert weight.abs().max() <= bound and float(weight.std()) == pytest.approx(bound / 3**0.5, rel=0.1)
    assert not output_layer.bias.any()
    assert mixer.render[0].bias.abs().sum() > 0  # the hidden render layers keep nn.Linear's init
    for block in mixer.allocator:  # attention as the predictor's attention_init="xavier"
        assert not block.qkv.bias.any() and not block.proj.bias.any()


TINY_FEATURE_MODEL = [
    "model.encoder.weights=random",
    "+model.encoder.depth=1",  # the recipe's ViT (patch, width, tokens) with one block: its init is 12x cheaper
    "model.encoder.block=1",
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
