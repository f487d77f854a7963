"""SLASH: ARK, IPPE, point labels (centres, labelled fractions, resumable batches), point loss."""

import numpy as np
import pytest
import torch
from conftest import compose_config

from ocl.cli import build_model
from ocl.data.batch import POINTS
from ocl.data.datamodule import SyntheticDataModule
from ocl.data.points import PointLabels, WithPointLabels, object_centres
from ocl.data.sampling import LabelledMixSampler
from ocl.losses.points import PointSupervision
from ocl.methods.output import PREDICTED_POINTS, ModelOutput
from ocl.modules.ark import AttentionRefiningKernel, gaussian_kernel, token_grid
from ocl.modules.points import PointPredictorEncoder, match_points
from ocl.modules.slot_attention import SlotAttention


def test_token_grid_keeps_the_aspect_ratio():
    assert token_grid(16 * 16, (64, 64)) == (16, 16)
    assert token_grid(12 * 20, (480, 800)) == (12, 20)
    with pytest.raises(ValueError, match="grid"):
        token_grid(7, (64, 64))


def test_ark_convolves_each_slot_map_with_its_kernel():
    ark = AttentionRefiningKernel("gaussian", size=3, sigma=0.8)
    logits = torch.zeros(1, 2, 4 * 5)
    logits[0, 0, 2 * 5 + 2] = 1.0  # a delta in slot 0 at (2, 2)
    out = ark(logits, (4, 5)).view(1, 2, 4, 5)
    torch.testing.assert_close(out[0, 0, 1:4, 1:4], gaussian_kernel(3, 0.8))
    assert out[0, 1].abs().sum() == 0 and out[0, 0].sum() == pytest.approx(1.0)


def test_wnconv_kernel_learns_and_stays_positive_with_sum_one():
    torch.manual_seed(0)
    corrector = SlotAttention(input_dim=8, slot_dim=8, num_iterations=2, ark="wnconv")
    before = corrector.ark.kernel().detach().clone()
    optimizer = torch.optim.Adam(corrector.parameters(), lr=0.05)
    inputs, target = torch.randn(4, 36, 8), torch.randn(4, 3, 8)
    for _ in range(5):
        slots, attention = corrector(torch.randn(4, 3, 8), inputs, grid=(6, 6))[:2]
        loss = (slots - target).pow(2).mean() + attention[:, 0].std()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = corrector.ark.kernel().detach()
    assert not torch.allclose(before, after)
    assert (after > 0).all() and after.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("variant", ["gaussian", "conv"])
def test_other_ark_variants_run_and_only_conv_learns(variant):
    corrector = SlotAttention(input_dim=4, slot_dim=4, ark=variant)
    slots, attention = corrector(torch.randn(2, 3, 4), torch.randn(2, 15, 4), grid=(3, 5))[:2]
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2, 15))
    slots.sum().backward()
    learned = [p for p in corrector.ark.parameters()]
    assert (variant == "conv") == bool(learned)
    if learned:
        assert learned[0].grad.abs().sum() > 0


def test_authors_code_flag_is_a_fixed_uniform_kernel():
    ark = AttentionRefiningKernel("wnconv", size=5, fixed_uniform=True)
    assert not list(ark.parameters())
    torch.testing.assert_close(ark.kernel(), torch.full((5, 5), 1 / 25))


def test_ark_needs_the_grid():
    with pytest.raises(ValueError, match="grid"):
        SlotAttention(input_dim=4, slot_dim=4, ark="wnconv")(torch.randn(1, 2, 4), torch.randn(1, 9, 4))


def test_match_points_pairs_nearest_and_skips_absent_targets():
    predicted = torch.tensor([[0.4, 0.4], [-0.3, -0.3], [0.0, 0.1]])
    targets = torch.tensor([[float("nan"), float("nan")], [-0.3, -0.2], [0.4, 0.3]])
    slot_index, target_index = match_points(predicted, targets)
    assert dict(zip(slot_index.tolist(), target_index.tolist(), strict=True)) == {0: 2, 1: 1}


def test_ippe_encodes_true_points_for_matched_slots_and_predictions_otherwise():
    torch.manual_seed(0)
    ippe = PointPredictorEncoder(slot_dim=6)
    slots = torch.randn(2, 3, 6)
    targets = torch.full((2, 4, 2), float("nan"))
    targets[0, 1] = torch.tensor([0.2, -0.1])  # sample 0 labelled with one object; sample 1 unlabelled
    updated, predicted = ippe(slots, targets)
    assert predicted.shape == (2, 3, 2) and predicted.abs().max() <= 0.5
    matched = int(match_points(predicted[0], targets[0])[0][0])
    expected = predicted.clone()
    expected[0, matched] = targets[0, 1]
    torch.testing.assert_close(updated, slots + ippe.encoder(expected))


def test_point_loss_is_zero_for_perfect_predictions_and_positive_otherwise():
    targets = torch.full((2, 1, 4, 2), float("nan"))
    targets[0, 0, :2] = torch.tensor([[0.1, 0.2], [-0.3, 0.0]])
    predicted = torch.tensor([[-0.3, 0.0], [0.25, -0.25], [0.1, 0.2]])[None, None].repeat(2, 1, 1, 1)
    output = ModelOutput(slots=torch.zeros(1), masks=torch.zeros(1), extras={PREDICTED_POINTS: predicted})
    loss = PointSupervision(weight=0.01)
    assert loss(output, {POINTS: targets}) == 0
    output.extras[PREDICTED_POINTS] = predicted + 0.1
    assert loss(output, {POINTS: targets}) == pytest.approx(0.01)
    assert loss(output, {}) == 0


def test_object_centres_are_mean_pixel_positions():
    masks = torch.zeros(2, 4, 8, dtype=torch.int64)
    masks[0, 0:2, 0:2] = 1  # rows 0-1, cols 0-1
    masks[0, 3, 7] = 3
    masks[1, :, 4:] = 1
    masks[1, 0, 0] = -1
    centres = object_centres(masks, max_objects=3)
    torch.testing.assert_close(centres[0, 0], torch.tensor([1 / 4 - 0.5, 1 / 8 - 0.5]))
    torch.testing.assert_close(centres[0, 2], torch.tensor([3.5 / 4 - 0.5, 7.5 / 8 - 0.5]))
    assert torch.isnan(centres[0, 1]).all() and torch.isnan(centres[1, 1:]).all()
    torch.testing.assert_close(centres[1, 0], torch.tensor([0.0, 6 / 8 - 0.5]))


def test_labelled_fraction_of_the_set_and_of_every_batch():
    labels = PointLabels(labelled_fraction=0.1, batch_fraction=0.25, max_objects=8)
    labelled, unlabelled = labels.split(200, seed=3)
    assert len(labelled) == 20 and len(set(labelled) | set(unlabelled)) == 200
    sampler = LabelledMixSampler(labelled, unlabelled, 8, labels.per_batch(8), num_batches=30, seed=3)
    indices = list(sampler)
    assert len(indices) == 240 == len(sampler)
    for start in range(0, 240, 8):
        assert sum(index in set(labelled) for index in indices[start : start + 8]) == 2
    assert set(indices) & set(labelled) == set(labelled)  # every labelled item is seen


def test_labelled_mix_resumes_and_shards_exactly():
    labelled, unlabelled = np.arange(5), np.arange(5, 40)
    full = list(LabelledMixSampler(labelled, unlabelled, 4, 1, 10, seed=0, with_positions=True))
    resumed = list(LabelledMixSampler(labelled, unlabelled, 4, 1, 6, seed=0, start_batch=4, with_positions=True))
    assert resumed == full[16:]
    ranks = [list(LabelledMixSampler(labelled, unlabelled, 4, 1, 5, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    interleaved = [i for b in range(5) for r in (0, 1) for i in ranks[r][4 * b : 4 * b + 4]]
    assert interleaved == [index for index, _ in full]


def test_datamodule_batches_carry_points_only_for_labelled_items():
    labels = PointLabels(labelled_fraction=0.25, batch_fraction=0.5, max_objects=8)
    data = SyntheticDataModule(train_size=16, val_size=2, batch_size=4, train_frames=1, point_labels=labels)
    labelled, _ = labels.split(16, seed=0)
    batch = next(iter(data.train_dataloader()))
    assert batch[POINTS].shape == (4, 1, 8, 2)
    has_points = (~torch.isnan(batch[POINTS][..., 0])).any(dim=(1, 2))
    assert has_points.tolist() == [True, True, False, False]
    dataset = WithPointLabels(data.train_set, labelled, 8)
    item = dataset[int(labelled[0])]
    torch.testing.assert_close(item[POINTS], object_centres(item["masks"], 8), equal_nan=True)
    assert "points" not in next(iter(data.val_dataloader()))


def test_slash_training_step_uses_labels_and_learns_the_kernel(tmp_path):
    cfg = compose_config(
        [
            "experiment=slash_synthetic",
            "data.train_size=16",
            "data.batch_size=4",
            "data.resolution=32",
            f"paths.output_dir={tmp_path}",
        ]
    )
    model = build_model(cfg)
    data = SyntheticDataModule(
        train_size=16, batch_size=4, train_frames=1, resolution=32, point_labels=PointLabels(0.5, 0.5, 8)
    )
    batch = next(iter(data.train_dataloader()))
    output = model(batch)
    assert output.extras[PREDICTED_POINTS].shape == (4, 1, 5, 2)
    total, terms = model.compute_losses(output, batch)
    assert terms["points"] > 0
    total.backward()
    assert model.processor.corrector.ark.weight.grad.abs().sum() > 0
    assert model.processor.corrector.points.predictor[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("experiment", ["savi_synthetic", "slotcurri_synthetic"])
def test_ark_runs_inside_video_models(experiment, tmp_path):
    cfg = compose_config(
        [f"experiment={experiment}", "model.processor.corrector.ark=wnconv", f"paths.output_dir={tmp_path}"]
    )
    model = build_model(cfg)
    data = SyntheticDataModule(train_size=4, batch_size=2, train_frames=2, resolution=cfg.data.resolution)
    output = model(next(iter(data.train_dataloader())))
    assert output.slots.shape[:2] == (2, 2)
    output.masks.sum().backward()
    assert model.processor.corrector.ark.weight.grad.abs().sum() > 0
