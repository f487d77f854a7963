"""Cycle-consistency losses: formulas, minimum, gradients, token subsampling, fp32 under autocast."""

import math

import pytest
import torch
from conftest import compose_config

from ocl.build import build_model
from ocl.contracts.output import ModelOutput
from ocl.losses.cycle import FeatureSlotFeatureCycle, SlotFeatureSlotCycle


def output_of(slots: torch.Tensor, features: torch.Tensor) -> ModelOutput:
    """``slots [B, T, K, D]``, ``features [B, T, N, D]`` -> a ModelOutput holding them."""
    return ModelOutput(slots=slots, masks=torch.zeros(1), features=features)


def loop_affinities(slots, features, tau):
    """Per-element softmaxes of cosine logits, written with plain loops (one frame)."""
    s = [v / v.norm() for v in slots]
    f = [v / v.norm() for v in features]
    a_sf = torch.tensor([[math.exp(float(si @ fj) / tau) for fj in f] for si in s])
    a_sf = a_sf / a_sf.sum(dim=1, keepdim=True)
    a_fs = torch.tensor([[math.exp(float(fj @ si) / tau) for si in s] for fj in f])
    a_fs = a_fs / a_fs.sum(dim=1, keepdim=True)
    return a_sf, a_fs


def test_sfs_equals_its_formula():
    torch.manual_seed(0)
    slots, features = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 7, 4)
    loss = SlotFeatureSlotCycle(weight=1.0, temperature=0.5, max_tokens=None)(output_of(slots, features), {})
    expected = []
    for b in range(2):
        a_sf, a_fs = loop_affinities(slots[b, 0], features[b, 0], 0.5)
        k = slots.shape[2]
        cycle = [[sum(a_sf[i, n] * a_fs[n, j] for n in range(7)) for j in range(k)] for i in range(k)]
        expected.append(-sum(math.log(cycle[i][i]) for i in range(k)) / k)
    torch.testing.assert_close(loss, torch.tensor(sum(expected) / 2), atol=1e-5, rtol=1e-5)


def test_fsf_equals_its_formula_with_thresholded_target():
    torch.manual_seed(1)
    slots, features = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4)
    term = FeatureSlotFeatureCycle(weight=1.0, temperature=0.3, target_temperature=0.2, threshold=0.1, max_tokens=None)
    loss = term(output_of(slots, features), {})
    a_sf, a_fs = loop_affinities(slots[0, 0], features[0, 0], 0.3)
    f = [v / v.norm() for v in features[0, 0]]
    total = 0.0
    for i in range(5):
        weights = [
            math.exp(float(f[i] @ f[j]) / 0.2) if (float(f[i] @ f[j]) >= 0.1 or i == j) else 0.0 for j in range(5)
        ]
        norm = sum(weights)
        for j in range(5):
            cycle = sum(a_fs[i, k] * a_sf[k, j] for k in range(3))
            total -= weights[j] / norm * math.log(cycle)
    torch.testing.assert_close(loss, torch.tensor(total / 5), atol=1e-5, rtol=1e-5)


def test_sfs_is_near_zero_when_each_slot_owns_disjoint_features():
    slots = torch.eye(4)[None, None]  # slot i = axis i
    features = torch.eye(4).repeat_interleave(3, dim=0)[None, None]  # three features on each axis
    owned = SlotFeatureSlotCycle(weight=1.0, temperature=0.05, max_tokens=None)(output_of(slots, features), {})
    shared = torch.ones(1, 1, 4, 4) + 0.01 * torch.randn(1, 1, 4, 4)
    mixed = SlotFeatureSlotCycle(weight=1.0, temperature=0.05, max_tokens=None)(output_of(shared, features), {})
    assert owned < 1e-3 and mixed > 0.5


def test_cycle_losses_send_gradients_to_slots_and_features():
    for term in (SlotFeatureSlotCycle(weight=1.0), FeatureSlotFeatureCycle(weight=1.0)):
        slots = torch.randn(2, 2, 3, 8, requires_grad=True)
        features = torch.randn(2, 2, 10, 8, requires_grad=True)
        term(output_of(slots, features), {}).backward()
        assert slots.grad.abs().sum() > 0 and features.grad.abs().sum() > 0


def test_fsf_target_gets_no_gradient_unless_asked():
    features = torch.randn(1, 1, 6, 4, requires_grad=True)
    detached = FeatureSlotFeatureCycle(weight=1.0).target(features.flatten(0, 1))
    attached = FeatureSlotFeatureCycle(weight=1.0, detach_target=False).target(features.flatten(0, 1))
    assert not detached.requires_grad and attached.requires_grad
    torch.testing.assert_close(detached.sum(dim=-1), torch.ones(1, 6))


def test_token_subsampling_keeps_max_tokens():
    term = SlotFeatureSlotCycle(weight=1.0, max_tokens=5)
    slots, features = term.inputs(output_of(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 40, 4)))
    assert slots.shape == (2, 3, 4) and features.shape == (2, 5, 4)


@pytest.mark.parametrize("slot_dim", [8, 6])  # 6: through the fp32 projection
def test_cycle_loss_runs_in_fp32_under_autocast(slot_dim):
    slots, features = torch.randn(1, 1, 3, slot_dim).bfloat16(), torch.randn(1, 1, 10, 8).bfloat16()
    term = FeatureSlotFeatureCycle(weight=1.0, slot_dim=slot_dim, feature_dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = term(output_of(slots, features), {})
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_different_dimensions_need_the_projection():
    slots, features = torch.randn(1, 1, 3, 6), torch.randn(1, 1, 10, 8)
    with pytest.raises(ValueError, match="slot_dim and feature_dim"):
        SlotFeatureSlotCycle(weight=1.0)(output_of(slots, features), {})
    projected = SlotFeatureSlotCycle(weight=1.0, slot_dim=6, feature_dim=8)
    assert torch.isfinite(projected(output_of(slots, features), {}))
    assert projected.projection.weight.shape == (8, 6)


def test_cycle_terms_switch_on_by_weight_on_any_method(tmp_path):
    plain = build_model(compose_config(["experiment=slotcurri_synthetic", f"paths.output_dir={tmp_path}"]))
    cycled = build_model(
        compose_config(
            [
                "experiment=slotcurri_synthetic",
                "loss.cycle_sfs.weight=0.1",
                "loss.cycle_fsf.weight=0.1",
                f"paths.output_dir={tmp_path}",
            ]
        )
    )
    assert "cycle_sfs" not in plain.losses and {"cycle_sfs", "cycle_fsf"} <= set(cycled.losses)
