"""Shared building blocks: shapes, normalisations, gradients, options."""

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from ocl.data.sampling import ResumableRandomSampler
from ocl.modules.decoders import MLPFeatureDecoder, SlotMixerDecoder, SpatialBroadcastDecoder
from ocl.modules.encoders import CNNEncoder
from ocl.modules.initialisers import GaussianInit, LearnedInit
from ocl.modules.predictors import TransformerPredictor
from ocl.modules.slot_attention import SlotAttention
from ocl.modules.video import VideoSlotProcessor
from ocl.utils.schedules import WarmupExponentialDecay, warmup_exponential_decay


def test_cnn_encoder_token_grid_follows_strides():
    encoder = CNNEncoder(channels=(8, 8, 8), strides=(2, 2, 1), output_dim=16)
    tokens = encoder(torch.rand(3, 3, 32, 32))
    assert tokens.shape == (3, 8 * 8, 16)


def test_slot_attention_competes_over_slots_and_returns_last_attention():
    torch.manual_seed(0)
    attention_module = SlotAttention(input_dim=16, slot_dim=8, num_iterations=2, mlp_hidden_dim=16)
    slots, attention = attention_module(torch.randn(2, 4, 8), torch.randn(2, 10, 16))[:2]
    assert slots.shape == (2, 4, 8) and attention.shape == (2, 4, 10)
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2, 10))


def test_slot_attention_iteration_count_is_respected():
    torch.manual_seed(0)
    module = SlotAttention(input_dim=4, slot_dim=4, num_iterations=1)
    slots0, inputs = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    once = module(slots0, inputs).slots
    twice = module(slots0, inputs, num_iterations=2).slots
    again = module(once, inputs, num_iterations=1).slots
    torch.testing.assert_close(twice, again)
    assert not torch.allclose(once, twice)


def test_gaussian_init_reparameterised_so_mu_and_sigma_learn():
    init = GaussianInit(num_slots=5, dim=8)
    slots = init(3)
    assert slots.shape == (3, 5, 8)
    slots.pow(2).sum().backward()
    assert init.mu.grad.abs().sum() > 0 and init.log_sigma.grad.abs().sum() > 0
    frozen = GaussianInit(num_slots=5, dim=8, learn_sigma=False)
    assert not frozen.log_sigma.requires_grad


def test_learned_init_is_shared_across_the_batch():
    init = LearnedInit(num_slots=4, dim=6)
    slots = init(2)
    assert slots.shape == (2, 4, 6) and torch.equal(slots[0], slots[1])


def test_predictor_scales_differ_only_by_flag():
    torch.manual_seed(0)
    standard = TransformerPredictor(dim=8, num_heads=2)
    legacy = TransformerPredictor(dim=8, num_heads=2, legacy_scale=True)
    legacy.load_state_dict(standard.state_dict())
    slots = torch.randn(2, 3, 8)
    assert standard(slots).shape == (2, 3, 8)
    assert standard.scale == pytest.approx(0.5) and legacy.scale == pytest.approx(2.0)
    assert not torch.allclose(standard(slots), legacy(slots))
    with pytest.raises(ValueError, match="divisible"):
        TransformerPredictor(dim=10, num_heads=4)


@pytest.mark.parametrize("output_size,broadcast_size", [(32, 8), (8, 8), (16, 4)])
def test_broadcast_decoder_masks_are_a_partition(output_size, broadcast_size):
    decoder = SpatialBroadcastDecoder(
        slot_dim=8, output_size=output_size, broadcast_size=broadcast_size, channels=(8, 8)
    )
    reconstruction, masks = decoder(torch.randn(2, 5, 8))
    assert reconstruction.shape == (2, 3, output_size, output_size)
    assert masks.shape == (2, 5, output_size, output_size)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, output_size, output_size))


def test_broadcast_decoder_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="power of two"):
        SpatialBroadcastDecoder(slot_dim=8, output_size=24, broadcast_size=8, channels=(8, 8))
    with pytest.raises(ValueError, match="power of two"):
        SpatialBroadcastDecoder(slot_dim=8, output_size=64, broadcast_size=8, channels=(8, 8))


def test_video_processor_uses_predictor_between_frames():
    torch.manual_seed(0)
    corrector = SlotAttention(input_dim=6, slot_dim=8, num_iterations=1)
    features = torch.randn(2, 3, 10, 6)
    processor = VideoSlotProcessor(LearnedInit(4, 8), corrector, TransformerPredictor(8, 2), first_frame_iterations=2)
    slots, attention, _ = processor(features)
    assert slots.shape == (2, 3, 4, 8) and attention.shape == (2, 3, 4, 10)
    without_predictor = VideoSlotProcessor(processor.initialiser, corrector, None, first_frame_iterations=2)
    plain_slots = without_predictor(features).slots
    torch.testing.assert_close(slots[:, 0], plain_slots[:, 0])
    assert not torch.allclose(slots[:, 1], plain_slots[:, 1])


def test_schedule_warms_up_from_zero_then_decays_from_the_end_of_the_warmup():
    """VideoSAUR / SlotContrast / SlotCurri: s / w, then decay_rate ** ((s - w) / (decay_steps - w))."""
    schedule = WarmupExponentialDecay(warmup_steps=10, decay_steps=100, decay_rate=0.5)
    assert [schedule(step) for step in (0, 1, 5, 9, 10)] == [0.0, 0.1, 0.5, 0.9, 1.0]
    assert schedule(55) == pytest.approx(0.5**0.5) and schedule(100) == 0.5 and schedule(190) == 0.25
    all_warmup = WarmupExponentialDecay(warmup_steps=10, decay_steps=10)  # a run as long as its warm-up
    assert [all_warmup(step) for step in (9, 10)] == [0.9, 0.5]


def test_slash_schedule_decays_continuously_from_its_first_step_counted_as_one():
    """SLASH's train.py: lr(t) = base * min(1, t / W) * 0.5 ** (t / D) at its steps t = 1, 2, ...;
    W, D = 2%, 20% of the run, here given as fractions of 1000 steps through the optimiser."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=4e-4)
    scheduler = warmup_exponential_decay(
        optimizer, 0.02, 0.2, decay_rate=0.5, decay_during_warmup=True, first_step=1, total_steps=1000
    )
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [4e-4 * min(1.0, t / 20) * 0.5 ** (t / 200) for t in range(1, 1001)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] > 0 and lrs[-1] == pytest.approx(4e-4 / 32)  # 0.5 ** 5 at the end
    assert lrs[249] != pytest.approx(lrs[299])  # continuous, not a staircase


def test_slash_recipe_schedule_reads_the_run_length(tmp_path):
    cfg = compose_config(["experiment=slash_movi", "trainer.max_steps=5000", f"paths.output_dir={tmp_path}"])
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    factor = instantiate(cfg.model.scheduler)(optimizer).lr_lambdas[0]
    assert [factor(s) for s in (0, 99, 999)] == pytest.approx([0.01 * 0.5**0.001, 0.5**0.1, 0.5])


def test_resumable_sampler_continues_the_same_stream():
    full = list(ResumableRandomSampler(dataset_size=7, num_samples=20, seed=3))
    resumed = list(ResumableRandomSampler(dataset_size=7, num_samples=12, seed=3, start=8))
    assert resumed == full[8:]
    assert sorted(full[:7]) == list(range(7)) and sorted(full[7:14]) == list(range(7))
    assert full != list(ResumableRandomSampler(dataset_size=7, num_samples=20, seed=4))


def test_resumable_sampler_shards_across_ranks():
    single = list(ResumableRandomSampler(dataset_size=10, num_samples=12, seed=0, start=4))
    ranks = [list(ResumableRandomSampler(10, 6, seed=0, start=4, rank=r, world_size=2)) for r in range(2)]
    assert ranks[0] == single[0::2] and ranks[1] == single[1::2]


def test_residual_update_adds_the_attention_weighted_values():
    torch.manual_seed(0)
    module = SlotAttention(input_dim=4, slot_dim=4, num_iterations=1, update="residual")
    assert module.gru is None
    slots, inputs = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    updated, attention = module(slots, inputs)[:2]
    weights = (attention + module.eps) / (attention + module.eps).sum(dim=-1, keepdim=True)
    torch.testing.assert_close(updated, slots + weights @ module.to_v(module.norm_inputs(inputs)))


def test_input_weights_keep_slots_off_excluded_inputs():
    torch.manual_seed(0)
    module = SlotAttention(input_dim=4, slot_dim=4, num_iterations=2)
    slots, inputs = torch.randn(1, 2, 4), torch.randn(1, 6, 4)
    area = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    changed = inputs.clone()
    changed[:, 3:] = torch.randn(1, 3, 4) * 10
    restricted, attention = module(slots, inputs, input_weights=area)[:2]
    again = module(slots, changed, input_weights=area).slots
    torch.testing.assert_close(restricted, again, atol=1e-5, rtol=1e-5)  # excluded inputs do not matter
    assert attention[..., 3:].abs().max() == 0


def test_straight_through_sends_the_last_iteration_gradient_to_the_initial_slots():
    torch.manual_seed(0)
    inputs = torch.randn(1, 5, 4)
    plain = SlotAttention(input_dim=4, slot_dim=4, num_iterations=3)
    straight = SlotAttention(input_dim=4, slot_dim=4, num_iterations=3, straight_through=True)
    straight.load_state_dict(plain.state_dict())
    init = torch.randn(1, 2, 4, requires_grad=True)
    torch.testing.assert_close(straight(init, inputs).slots, plain(init, inputs).slots)  # same values
    last_only = SlotAttention(input_dim=4, slot_dim=4, num_iterations=1)
    last_only.load_state_dict(plain.state_dict())
    (grad_straight,) = torch.autograd.grad(straight(init, inputs).slots.sum(), init)
    before_last = plain(init, inputs, num_iterations=2).slots.detach().requires_grad_()
    (grad_last,) = torch.autograd.grad(last_only(before_last, inputs).slots.sum(), before_last)
    torch.testing.assert_close(grad_straight, grad_last)  # only the last iteration's Jacobian, at its input
    with pytest.raises(ValueError, match="update"):
        SlotAttention(input_dim=4, slot_dim=4, update="lstm")


@pytest.mark.parametrize("gru_state", ["raw", "normalised"])
def test_slot_attention_gru_hidden_state_is_the_raw_or_the_normalised_slots(gru_state):
    torch.manual_seed(0)
    module = SlotAttention(input_dim=4, slot_dim=6, num_iterations=1, gru_state=gru_state)
    slots, inputs = torch.randn(2, 3, 6) * 3 + 1, torch.randn(2, 5, 4)
    updated, attention = module(slots, inputs)[:2]
    weights = (attention + module.eps) / (attention + module.eps).sum(dim=-1, keepdim=True)
    updates = weights @ module.to_v(module.norm_inputs(inputs))
    state = slots if gru_state == "raw" else module.norm_slots(slots)
    expected = module.gru(updates.reshape(-1, 6), state.reshape(-1, 6)).reshape(2, 3, 6)
    torch.testing.assert_close(updated, expected)
    other_state = "normalised" if gru_state == "raw" else "raw"
    other = SlotAttention(input_dim=4, slot_dim=6, num_iterations=1, gru_state=other_state)
    other.load_state_dict(module.state_dict())
    assert not torch.allclose(other(slots, inputs).slots, updated)
    with pytest.raises(ValueError, match="gru_state"):
        SlotAttention(input_dim=4, slot_dim=6, gru_state="layer_norm")


def test_transformer_attention_init_xavier_as_the_videosaur_code_or_torch_default():
    torch.manual_seed(0)
    dim = 64
    xavier = TransformerPredictor(dim, num_heads=4, attention_init="xavier")
    bound = (6 / (dim + dim)) ** 0.5  # each of q, k, v and the output projection is a dim x dim Xavier block
    for weight in (*xavier.qkv.weight.detach().split(dim), xavier.proj.weight.detach()):
        assert weight.abs().max() <= bound and float(weight.std()) == pytest.approx(bound / 3**0.5, rel=0.05)
    assert not xavier.qkv.bias.any() and not xavier.proj.bias.any()
    default = TransformerPredictor(dim, num_heads=4)  # nn.Linear's init: bound 1 / sqrt(fan_in), random biases
    assert default.qkv.weight.abs().max() <= dim**-0.5 < bound / 1.5 and default.qkv.bias.abs().sum() > 0
    # the feed-forward layers keep nn.Linear's init in both (as the authors' nn.TransformerEncoderLayer)
    assert xavier.ffn[0].bias.abs().sum() > 0 and xavier.ffn[0].weight.abs().max() <= dim**-0.5
    with pytest.raises(ValueError, match="attention_init"):
        TransformerPredictor(dim, attention_init="kaiming")


@pytest.mark.parametrize("decoder_class", [MLPFeatureDecoder, SlotMixerDecoder])
def test_a_sinusoidal_decoder_position_is_smooth_over_the_grid_from_the_start(decoder_class):
    decoder = decoder_class(
        slot_dim=16, num_tokens=64, output_dim=5, hidden_dims=(32,), position_frequencies=(0.5, 1.0)
    )
    position = decoder.sinusoidal_position().unflatten(0, (8, 8))  # [8, 8, 16]
    neighbours = (position[:, 1:] - position[:, :-1]).norm(dim=-1).mean()
    opposite_corners = (position[0, 0] - position[-1, -1]).norm()
    assert neighbours < opposite_corners / 4
    assert decoder.position is None
    reconstruction, masks = decoder(torch.rand(2, 3, 16))
    assert reconstruction.shape == (2, 64, 5) and masks.shape == (2, 3, 64)
    with pytest.raises(ValueError, match="square token grid"):
        decoder_class(slot_dim=16, num_tokens=60, output_dim=5, hidden_dims=(32,), position_frequencies=(1.0,))
