"""SLASH: ARK, IPPE, point labels (centres, labelled fractions, resumable batches), point loss,
the authors' base model options and the recipe model's parameter layout."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_config
from golden_checks.common import GOLDEN
from golden_checks.slash import CHECKPOINT_NAMES, rename
from torch import nn

from ocl.build import build_model
from ocl.contracts.batch import POINTS, VIDEO
from ocl.contracts.output import ASSIGNED_POINTS, PREDICTED_POINTS, ModelOutput
from ocl.data.datamodule import SyntheticDataModule
from ocl.data.points import PointLabels, WithPointLabels, object_centres
from ocl.data.sampling import LabelledMixSampler
from ocl.losses.points import PointSupervision
from ocl.modules.ark import AttentionRefiningKernel, gaussian_kernel, token_grid
from ocl.modules.decoders import SpatialBroadcastDecoder
from ocl.modules.encoders import CNNEncoder
from ocl.modules.initialisers import GaussianInit
from ocl.modules.points import PointPredictorEncoder, assign_points, match_points, stack_iterations
from ocl.modules.slot_attention import SlotAttention
from ocl.modules.video import VideoSlotProcessor

NAN = float("nan")


def test_token_grid_keeps_the_aspect_ratio():
    assert token_grid(16 * 16, (64, 64)) == (16, 16)
    assert token_grid(12 * 20, (480, 800)) == (12, 20)
    with pytest.raises(ValueError, match="grid"):
        token_grid(7, (64, 64))


# ----------------------------------------------------------------------------- ARK


def test_ark_convolves_each_slot_map_with_its_kernel():
    ark = AttentionRefiningKernel("gaussian", size=3, sigma=0.8, padding="zeros")
    logits = torch.zeros(1, 2, 4 * 5)
    logits[0, 0, 2 * 5 + 2] = 1.0  # a delta in slot 0 at (2, 2)
    out = ark(logits, (4, 5)).view(1, 2, 4, 5)
    torch.testing.assert_close(out[0, 0, 1:4, 1:4], gaussian_kernel(3, 0.8))
    assert out[0, 1].abs().sum() == 0 and out[0, 0].sum() == pytest.approx(1.0)


def test_gaussian_ark_pads_by_reflection_unless_zeros_are_asked():
    assert AttentionRefiningKernel("gaussian").padding == "reflect"
    assert AttentionRefiningKernel("wnconv").padding == "zeros"
    ones = torch.ones(1, 1, 36)
    reflected = AttentionRefiningKernel("gaussian", sigma=1.0)(ones, (6, 6))
    zeros = AttentionRefiningKernel("gaussian", sigma=1.0, padding="zeros")(ones, (6, 6))
    torch.testing.assert_close(reflected, ones)  # a constant map stays constant
    assert zeros.view(6, 6)[0, 0] < 0.6 and zeros.view(6, 6)[3, 3] == pytest.approx(1.0, abs=0.02)


def test_gaussian_ark_draws_sigma_on_every_call_unless_fixed():
    logits = torch.randn(1, 1, 36)
    drawn = AttentionRefiningKernel("gaussian", sigma=None)
    torch.manual_seed(0)
    first, second = drawn(logits, (6, 6)), drawn(logits, (6, 6))
    assert not torch.allclose(first, second)
    torch.manual_seed(0)
    sigma = torch.empty(1).uniform_(0.1, 2.0).item()
    torch.testing.assert_close(first, AttentionRefiningKernel("gaussian", sigma=sigma)(logits, (6, 6)))
    fixed = AttentionRefiningKernel("gaussian", sigma=1.0)
    torch.testing.assert_close(fixed(logits, (6, 6)), fixed(logits, (6, 6)))


def test_authors_wnconv_renormalises_its_stored_kernel_on_every_call():
    torch.manual_seed(0)
    ark = AttentionRefiningKernel("wnconv", size=5, learn=False)
    assert not list(ark.parameters()) and "weight" in ark.state_dict()
    assert ark.weight.abs().max() <= 0.2  # nn.Conv2d(1, 1, 5)'s initialisation, U(-1/5, 1/5)
    logits = torch.randn(2, 3, 36)
    kernels = []
    for _ in range(6):
        previous = ark.weight.clone()
        smoothed = ark(logits, (6, 6))
        flat = previous.flatten()
        torch.testing.assert_close(ark.weight.flatten(), (flat / flat.norm()).softmax(0))
        torch.testing.assert_close(
            smoothed, nn.functional.conv2d(logits.view(6, 1, 6, 6), ark.weight, padding=2).view(2, 3, 36)
        )
        kernels.append(ark.weight.clone())
    assert not torch.allclose(kernels[0], kernels[1])
    torch.testing.assert_close(kernels[-1], torch.full((1, 1, 5, 5), 1 / 25), atol=1e-4, rtol=0)


def test_wnconv_kernel_learns_and_stays_positive_with_sum_one():
    torch.manual_seed(0)
    corrector = SlotAttention(
        input_dim=8, slot_dim=8, num_iterations=2, logit_refiner=AttentionRefiningKernel("wnconv", learn=True)
    )
    before = corrector.logit_refiner.kernel(torch.float32).detach().clone()
    optimizer = torch.optim.Adam(corrector.parameters(), lr=0.05)
    inputs, target = torch.randn(4, 36, 8), torch.randn(4, 3, 8)
    for _ in range(5):
        slots, attention = corrector(torch.randn(4, 3, 8), inputs, grid=(6, 6))[:2]
        loss = (slots - target).pow(2).mean() + attention[:, 0].std()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = corrector.logit_refiner.kernel(torch.float32).detach()
    assert not torch.allclose(before, after)
    assert (after > 0).all() and after.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("variant", ["gaussian", "conv"])
def test_other_ark_variants_run_and_only_conv_learns(variant):
    corrector = SlotAttention(input_dim=4, slot_dim=4, logit_refiner=AttentionRefiningKernel(variant))
    slots, attention = corrector(torch.randn(2, 3, 4), torch.randn(2, 15, 4), grid=(3, 5))[:2]
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2, 15))
    slots.sum().backward()
    learned = [p for p in corrector.logit_refiner.parameters()]
    assert (variant == "conv") == bool(learned)
    if learned:
        assert learned[0].grad.abs().sum() > 0


def test_ark_needs_the_grid():
    with pytest.raises(ValueError, match="grid"):
        corrector = SlotAttention(input_dim=4, slot_dim=4, logit_refiner=AttentionRefiningKernel("wnconv"))
        corrector(torch.randn(1, 2, 4), torch.randn(1, 9, 4))


# ----------------------------------------------------------------------------- IPPE


def test_match_points_pairs_nearest_and_skips_absent_targets():
    predicted = torch.tensor([[0.4, 0.4], [-0.3, -0.3], [0.0, 0.1]])
    targets = torch.tensor([[NAN, NAN], [-0.3, -0.2], [0.4, 0.3]])
    slot_index, target_index = match_points(predicted, targets)
    assert dict(zip(slot_index.tolist(), target_index.tolist(), strict=True)) == {0: 2, 1: 1}


def test_absent_rows_join_the_authors_matching():
    # Slot 1 sits near the absent corner (-1.5, -1.5): with the absent row in the matching it takes
    # that row and the one present point goes to slot 0, although slot 1 is nearer to it.
    predicted = torch.tensor([[0.3, 0.3], [-0.45, -0.45]])
    targets = torch.tensor([[-0.2, -0.2], [NAN, NAN], [NAN, NAN]])
    assert match_points(predicted, targets)[0].tolist() == [1]
    slot_index, target_index = match_points(predicted, targets, match_absent=True)
    assert slot_index.tolist() == [0] and target_index.tolist() == [0]
    assigned = assign_points(predicted[None], targets[None], match_absent=True)
    torch.testing.assert_close(assigned[0, 0], targets[0])
    assert torch.isnan(assigned[0, 1]).all()


def test_ippe_encodes_true_points_for_matched_slots_and_predictions_otherwise():
    torch.manual_seed(0)
    ippe = PointPredictorEncoder(slot_dim=8)
    assert [layer.out_features for layer in ippe.predictor if isinstance(layer, nn.Linear)] == [4, 2, 2]
    assert [layer.out_features for layer in ippe.encoder if isinstance(layer, nn.Linear)] == [2, 4, 8]
    slots = torch.randn(2, 3, 8)
    targets = torch.full((2, 4, 2), NAN)
    targets[0, 1] = torch.tensor([0.2, -0.1])  # sample 0 labelled with one object; sample 1 unlabelled
    updated, predicted, assigned = ippe(slots, {POINTS: targets})
    assert predicted.shape == (2, 3, 2) and predicted.abs().max() <= 0.5
    matched = int(match_points(predicted[0], targets[0])[0][0])
    expected = predicted.clone()
    expected[0, matched] = targets[0, 1]
    torch.testing.assert_close(updated, slots + ippe.encoder(expected))
    assert torch.isnan(assigned).sum() == 2 * 5 and not torch.isnan(assigned[0, matched]).any()


@pytest.mark.parametrize("match_once", [True, False])
def test_ippe_keeps_the_first_assignment_only_when_matching_once(match_once):
    ippe = PointPredictorEncoder(slot_dim=4, match_once=match_once)
    slots = torch.zeros(1, 2, 4)
    targets = torch.tensor([[[0.3, 0.3], [-0.3, -0.3]]])
    kept = torch.tensor([[[-0.3, -0.3], [0.3, 0.3]]])  # the opposite of the nearest pairing
    with torch.no_grad():
        ippe.predictor[-1].bias.copy_(torch.tensor([5.0, 5.0]))  # every slot predicts (0.49, 0.49)
        ippe.predictor[-1].weight.zero_()
    assigned = ippe(slots, {POINTS: targets}, kept).assigned
    if match_once:
        torch.testing.assert_close(assigned, kept)
    else:  # matched again: both slots predict the same point, so the matching is the first feasible
        torch.testing.assert_close(assigned, targets)


def test_corrector_returns_every_iterations_points_and_the_assignment():
    torch.manual_seed(0)
    corrector = SlotAttention(8, 8, num_iterations=3, slot_refiner=PointPredictorEncoder(8, match_once=True))
    targets = torch.tensor([[[0.1, 0.2], [NAN, NAN]], [[NAN, NAN], [NAN, NAN]]])
    output = corrector(torch.randn(2, 3, 8), torch.randn(2, 5, 8), context={POINTS: targets})
    assert output.predictions.shape == (2, 3, 3, 2) and output.refiner_state.shape == (2, 3, 2)
    assert (~torch.isnan(output.refiner_state[0, :, 0])).sum() == 1 and torch.isnan(output.refiner_state[1]).all()


def test_video_points_align_frames_of_different_iteration_counts_at_the_last():
    first, later = torch.ones(1, 3, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    stacked = stack_iterations([first, later])
    assert stacked.shape == (1, 2, 3, 2, 2)
    assert torch.isnan(stacked[0, 1, :2]).all() and (stacked[0, 1, 2] == 2).all() and (stacked[0, 0] == 1).all()


# ----------------------------------------------------------------------------- point loss


def _loss_output(predicted: torch.Tensor, assigned: torch.Tensor) -> ModelOutput:
    extras = {PREDICTED_POINTS: predicted, ASSIGNED_POINTS: assigned}
    return ModelOutput(slots=torch.zeros(1), masks=torch.zeros(1), extras=extras)


def test_point_loss_is_zero_for_perfect_predictions_and_positive_otherwise():
    targets = torch.full((2, 1, 4, 2), NAN)
    targets[0, 0, :2] = torch.tensor([[0.1, 0.2], [-0.3, 0.0]])
    assigned = torch.full((2, 1, 3, 2), NAN)
    assigned[0, 0, 0], assigned[0, 0, 2] = targets[0, 0, 1], targets[0, 0, 0]
    predicted = torch.tensor([[-0.3, 0.0], [0.25, -0.25], [0.1, 0.2]])[None, None, None].repeat(2, 1, 1, 1, 1)
    loss = PointSupervision(weight=0.01)
    assert loss(_loss_output(predicted, assigned), {POINTS: targets}) == 0
    assert loss(_loss_output(predicted + 0.1, assigned), {POINTS: targets}) == pytest.approx(0.01)
    assert loss(_loss_output(predicted, assigned), {}) == 0


@pytest.mark.parametrize(
    ("all_iterations", "average", "expected"),
    [
        (False, "matched", 0.01),  # the last iteration, over the 2 matched points x 2 coordinates
        (False, "labelled", 0.01 * 4 / 6),  # over all 3 slots x 2 coordinates of the labelled sample
        (True, "matched", 0.01 + 0.04),  # iteration 1 off by 0.2, iteration 2 by 0.1
        (True, "labelled", (0.01 + 0.04) * 4 / 6),
    ],
)
def test_point_loss_iterations_and_average(all_iterations, average, expected):
    targets = torch.full((2, 1, 4, 2), NAN)
    targets[0, 0, :2] = torch.tensor([[0.1, 0.2], [-0.3, 0.0]])
    assigned = torch.full((2, 1, 3, 2), NAN)
    assigned[0, 0, 0], assigned[0, 0, 2] = targets[0, 0, 1], targets[0, 0, 0]
    perfect = torch.tensor([[-0.3, 0.0], [0.25, -0.25], [0.1, 0.2]])
    predicted = torch.stack([perfect + 0.2, perfect + 0.1])[None, None].repeat(2, 1, 1, 1, 1)
    loss = PointSupervision(all_iterations=all_iterations, average=average)
    assert loss(_loss_output(predicted, assigned), {POINTS: targets}) == pytest.approx(expected)


# ----------------------------------------------------------------------------- point labels


def test_object_centres_are_x_y_mean_pixel_positions_or_box_centres():
    masks = torch.zeros(2, 4, 8, dtype=torch.int64)
    masks[0, 0:2, 0:2] = 1  # rows 0-1, cols 0-1
    masks[0, 0, 0:2] = 0
    masks[0, 0, 0] = 1  # object 1: (0, 0), (1, 0), (1, 1)
    masks[0, 3, 7] = 3
    masks[1, :, 4:] = 1
    masks[1, 0, 0] = -1
    centres = object_centres(masks, max_objects=3)
    torch.testing.assert_close(centres[0, 0], torch.tensor([(1 / 3 + 0.5) / 8 - 0.5, (2 / 3 + 0.5) / 4 - 0.5]))
    torch.testing.assert_close(centres[0, 2], torch.tensor([7.5 / 8 - 0.5, 3.5 / 4 - 0.5]))
    assert torch.isnan(centres[0, 1]).all() and torch.isnan(centres[1, 1:]).all()
    torch.testing.assert_close(centres[1, 0], torch.tensor([6 / 8 - 0.5, 0.0]))
    boxes = object_centres(masks, max_objects=3, centre="box")
    torch.testing.assert_close(boxes[0, 0], torch.tensor([1 / 8 - 0.5, 1 / 4 - 0.5]))  # box [0, 2) x [0, 2)
    torch.testing.assert_close(boxes[0, 2], centres[0, 2])
    assert torch.isnan(boxes[0, 1]).all()


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


def test_the_rest_of_each_batch_may_come_from_the_whole_set():
    labelled, rest = PointLabels(0.1, 0.25, unlabelled_from_all=True).split(200, seed=3)
    assert len(labelled) == 20 and rest.tolist() == list(range(200))
    assert not set(labelled) & set(PointLabels(0.1, 0.25).split(200, seed=3)[1])


def test_labelled_mix_resumes_and_shards_exactly():
    labelled, unlabelled = np.arange(5), np.arange(5, 40)
    full = list(LabelledMixSampler(labelled, unlabelled, 4, 1, 10, seed=0, with_positions=True))
    resumed = list(LabelledMixSampler(labelled, unlabelled, 4, 1, 6, seed=0, start_batch=4, with_positions=True))
    assert resumed == full[16:]
    ranks = [list(LabelledMixSampler(labelled, unlabelled, 4, 1, 5, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    interleaved = [i for b in range(5) for r in (0, 1) for i in ranks[r][4 * b : 4 * b + 4]]
    assert interleaved == [index for index, _ in full]


@pytest.mark.parametrize("unlabelled_from_all", [False, True])
def test_datamodule_batches_carry_points_only_in_their_labelled_part(unlabelled_from_all):
    labels = PointLabels(0.25, 0.5, max_objects=8, unlabelled_from_all=unlabelled_from_all)
    data = SyntheticDataModule(train_size=16, val_size=2, batch_size=4, train_frames=1, point_labels=labels)
    labelled, _ = labels.split(16, seed=0)
    batch = next(iter(data.train_dataloader()))
    assert batch[POINTS].shape == (4, 1, 8, 2)
    has_points = (~torch.isnan(batch[POINTS][..., 0])).any(dim=(1, 2))
    assert has_points.tolist() == [True, True, False, False]
    dataset = WithPointLabels(data.train_set, 4, 2, labels, draws=False)
    index = int(labelled[0])
    item = dataset[index, 4 * 3 + 1]  # second place of a batch: labelled
    torch.testing.assert_close(item[POINTS], object_centres(item["masks"], 8), equal_nan=True)
    assert torch.isnan(dataset[index, 4 * 3 + 2][POINTS]).all()  # the same item in the rest of a batch
    assert "points" not in next(iter(data.val_dataloader()))


# ----------------------------------------------------------------------------- the authors' base model


def test_cnn_encoder_options_of_the_authors_code():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8)
    ocl = CNNEncoder((4, 4), (1, 1), kernel_size=3, output_dim=6)
    theirs = CNNEncoder(
        (4, 4), (1, 1), kernel_size=3, output_dim=6, last_relu=False, centre_inputs=False, joint_norm_tokens=64
    )
    assert isinstance(ocl.convs[-1], nn.ReLU) and isinstance(theirs.convs[-1], nn.Conv2d)
    assert ocl.mlp[0].weight.shape == (4,) and theirs.mlp[0].weight.shape == (64, 4)
    theirs.load_state_dict(ocl.state_dict() | {"mlp.0.weight": torch.ones(64, 4), "mlp.0.bias": torch.zeros(64, 4)})
    features = theirs.position(theirs.convs(images).permute(0, 2, 3, 1)).flatten(1, 2)
    assert (features < 0).any()  # no ReLU after the last conv
    normalised = theirs.mlp[0](features)
    torch.testing.assert_close(normalised.mean(dim=(1, 2)), torch.zeros(2), atol=1e-6, rtol=0)
    assert not torch.allclose(normalised.mean(dim=2), torch.zeros(2, 64), atol=1e-3)  # not per token
    ocl_features = ocl.position(ocl.convs(images * 2 - 1).permute(0, 2, 3, 1)).flatten(1, 2)
    torch.testing.assert_close(ocl(images), ocl.mlp(ocl_features))


def test_transposed_decoder_has_the_authors_layers_and_output_shapes():
    plain = SpatialBroadcastDecoder(8, 16, broadcast_size=4, channels=(4, 4, 4), kernel_size=5)
    transposed = SpatialBroadcastDecoder(8, 16, broadcast_size=4, channels=(4, 4, 4), kernel_size=5, transposed=True)
    convs = [layer for layer in transposed.net if not isinstance(layer, nn.ReLU)]
    assert all(isinstance(layer, nn.ConvTranspose2d) for layer in convs) and convs[-1].weight.shape == (4, 4, 3, 3)
    assert isinstance(plain.net[-1], nn.Conv2d) and plain.net[-1].weight.shape == (4, 4, 3, 3)
    slots = torch.randn(2, 3, 8)
    for decoder in (plain, transposed):
        reconstruction, masks = decoder(slots)
        assert reconstruction.shape == (2, 3, 16, 16) and masks.shape == (2, 3, 16, 16)


def test_slash_recipe_model_holds_the_authors_parameters_one_for_one(tmp_path):
    layout = json.loads((GOLDEN / "checkpoints" / "slash_movi.json").read_text())["state_dict"]
    model = build_model(compose_config(["experiment=slash_movi", f"paths.output_dir={tmp_path}"]))
    own = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    mapped = {rename(CHECKPOINT_NAMES)(name): tuple(shape) for name, shape in layout.items()}
    assert mapped == own


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
    assert output.extras[PREDICTED_POINTS].shape == (4, 1, 3, 5, 2)
    total, terms = model.compute_losses(output, batch)
    assert terms["points"] > 0
    total.backward()
    assert model.processor.corrector.logit_refiner.weight.grad.abs().sum() > 0
    assert model.processor.corrector.slot_refiner.predictor[-1].weight.grad.abs().sum() > 0


def test_slash_recipe_step_matches_points_once_and_keeps_its_kernel_out_of_training(tmp_path):
    cfg = compose_config(
        [
            "experiment=slash_movi",
            "model.encoder.channels=[8,8]",
            "model.encoder.strides=[1,1]",
            "model.encoder.output_dim=16",
            "model.encoder.joint_norm_tokens=256",
            "model.processor.initialiser.dim=16",
            "model.decoder.output_size=16",
            "model.decoder.channels=[8,8]",
            f"paths.output_dir={tmp_path}",
        ]
    )
    model = build_model(cfg)
    corrector = model.processor.corrector
    assert (
        corrector.slot_refiner.match_once and corrector.slot_refiner.match_absent and not corrector.logit_refiner.learn
    )
    data = SyntheticDataModule(
        train_size=16, batch_size=4, train_frames=1, resolution=16, point_labels=PointLabels(0.5, 0.5, 8, "box", True)
    )
    batch = next(iter(data.train_dataloader()))
    kernel = corrector.logit_refiner.weight.clone()
    output = model(batch)
    assert not torch.allclose(kernel, corrector.logit_refiner.weight)  # advanced three times in place
    total, terms = model.compute_losses(output, batch)
    assert terms["points"] > 0
    total.backward()
    assert all(p.grad is None for p in model.processor.initialiser.parameters())  # mu and sigma fixed


@pytest.mark.parametrize("experiment", ["savi_synthetic", "slotcurri_synthetic"])
def test_ark_runs_inside_video_models(experiment, tmp_path):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            "+model/ark@model.processor.corrector.logit_refiner=wnconv",
            "model.processor.corrector.logit_refiner.learn=true",
            f"paths.output_dir={tmp_path}",
        ]
    )
    model = build_model(cfg)
    data = SyntheticDataModule(train_size=4, batch_size=2, train_frames=2, resolution=cfg.data.resolution)
    output = model(next(iter(data.train_dataloader())))
    assert output.slots.shape[:2] == (2, 2)
    output.masks.sum().backward()
    assert model.processor.corrector.logit_refiner.weight.grad.abs().sum() > 0


def test_point_labels_reach_only_a_corrector_whose_refiner_reads_them():
    batch = {VIDEO: torch.zeros(1, 2, 3, 8, 8), POINTS: torch.zeros(1, 2, 4, 2)}
    plain = VideoSlotProcessor(GaussianInit(3, 8), SlotAttention(8, 8))
    with_ippe = VideoSlotProcessor(GaussianInit(3, 8), SlotAttention(8, 8, slot_refiner=PointPredictorEncoder(8)))
    assert plain.select_context(batch) == {}
    assert with_ippe.select_context(batch).keys() == {POINTS} and PointPredictorEncoder.context_keys == (POINTS,)
