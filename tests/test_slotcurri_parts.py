"""SlotCurri's parts that any method can use: the 3-D SSIM structure loss and cyclic inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from pytorch_msssim import ssim as reference_ssim

from ocl.build import build_model
from ocl.contracts.output import ModelOutput
from ocl.losses.ssim3d import StructureSSIM3D, gaussian_taps, ssim3d
from ocl.modules.initialisers import LearnedInit
from ocl.modules.predictors import TransformerPredictor
from ocl.modules.slot_attention import SlotAttention
from ocl.modules.video import VideoSlotProcessor


@pytest.mark.parametrize("shape", [(2, 5, 4, 6, 7), (1, 3, 3, 3, 3), (2, 8, 6, 12, 9)])
def test_ssim3d_equals_pytorch_msssim_3d_ssim(shape):
    torch.manual_seed(0)
    x = torch.rand(shape, dtype=torch.float64)
    y = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    expected = reference_ssim(x, y, data_range=1.0, size_average=False, win_size=3, win_sigma=1.5, K=(0.01, 0.03))
    # float64 volumes, and the window built in float32 as pytorch_msssim builds it: equal to rounding
    torch.testing.assert_close(ssim3d(x, y), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(ssim3d(x, x), torch.ones(shape[0], dtype=torch.float64))


def test_ssim3d_rejects_volumes_smaller_than_the_window():
    with pytest.raises(ValueError, match="window"):
        ssim3d(torch.rand(1, 2, 2, 5, 5), torch.rand(1, 2, 2, 5, 5))


def dense_kernel_ssim3d(x: torch.Tensor, y: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """3-D SSIM ``[B]`` of ``[B, C, T, H, W]`` computed the straightforward way: each of the five
    moments blurred by its own depthwise conv3d with the full (outer-product) 3-D Gaussian."""
    taps = gaussian_taps(window, sigma).to(x)
    kernel = taps[:, None, None] * taps[None, :, None] * taps[None, None, :]
    channels = x.shape[1]

    def blur(volume: torch.Tensor) -> torch.Tensor:
        return F.conv3d(volume, kernel.expand(channels, 1, -1, -1, -1), groups=channels)

    mean_x, mean_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mean_x**2, blur(y * y) - mean_y**2, blur(x * y) - mean_x * mean_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = (2 * mean_x * mean_y + c1) * (2 * cov + c2) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


@pytest.mark.parametrize(
    ("shape", "window", "sigma", "channels_last"),
    [((2, 5, 4, 6, 7), 3, 1.5, True), ((3, 2, 6, 9, 5), 5, 1.0, False), ((1, 4, 3, 3, 3), 3, 0.7, True)],
)
def test_fused_ssim3d_equals_the_dense_kernel_formulation_with_gradients(shape, window, sigma, channels_last):
    torch.manual_seed(1)

    def volume() -> torch.Tensor:  # token volumes are channels-last views, pixel volumes channels-first
        batch, channels, *sizes = shape
        if not channels_last:
            data = torch.rand(shape, dtype=torch.float64, requires_grad=True)
            return data, data
        data = torch.rand(batch, *sizes, channels, dtype=torch.float64, requires_grad=True)
        return data, data.movedim(-1, 1)

    (x_leaf, x), (y_leaf, y) = volume(), volume()
    fast = ssim3d(x, y, window, sigma)
    fast_grads = torch.autograd.grad(fast.square().sum(), (x_leaf, y_leaf))
    dense = dense_kernel_ssim3d(x, y, window, sigma)
    dense_grads = torch.autograd.grad(dense.square().sum(), (x_leaf, y_leaf))
    torch.testing.assert_close(fast, dense, rtol=0, atol=1e-14)
    for fast_grad, dense_grad in zip(fast_grads, dense_grads, strict=True):
        torch.testing.assert_close(fast_grad, dense_grad, rtol=0, atol=1e-14)
    # the custom backward of the blurred moments against finite differences
    small = [t.detach()[:1, :2].clone().requires_grad_() for t in (x, y)]
    assert torch.autograd.gradcheck(lambda a, b: ssim3d(a, b, window, sigma), small)


def test_structure_loss_on_half_precision_equals_the_loss_on_the_inputs_upcast_first():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 12, 6).bfloat16()
    reconstruction = (target.float() + 0.5 * torch.randn(2, 4, 12, 6)).bfloat16().requires_grad_()
    loss = StructureSSIM3D()(token_output(reconstruction, target, (3, 4)), {})
    loss.backward()
    upcast = reconstruction.detach().float().requires_grad_()
    expected = StructureSSIM3D()(token_output(upcast, target.float(), (3, 4)), {})
    expected.backward()
    assert loss.dtype == torch.float32 and torch.equal(loss, expected)
    assert reconstruction.grad.dtype == torch.bfloat16 and torch.equal(reconstruction.grad, upcast.grad.bfloat16())


def token_output(reconstruction: torch.Tensor, target: torch.Tensor, grid: tuple[int, int]) -> ModelOutput:
    batch, frames = reconstruction.shape[:2]
    return ModelOutput(
        slots=torch.zeros(batch, frames, 2, 1),
        masks=torch.zeros(batch, frames, 2, *grid),
        reconstruction=reconstruction,
        target=target,
    )


def test_structure_loss_on_tokens_normalises_jointly_and_trains_only_the_reconstruction():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 12, 6, requires_grad=True)  # [B, T, N = 3 x 4, D]
    reconstruction = (target.detach() + 0.5 * torch.randn(2, 4, 12, 6)).requires_grad_()
    loss = StructureSSIM3D()(token_output(reconstruction, target, (3, 4)), {})
    assert 0 < loss.item() < 1
    loss.backward()
    assert reconstruction.grad.abs().sum() > 0 and target.grad is None
    same = StructureSSIM3D()(token_output(target.detach(), target.detach(), (3, 4)), {})
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    # joint min-max normalisation: the same affine change of both volumes leaves the loss unchanged
    moved = StructureSSIM3D()(token_output(3 * reconstruction.detach() + 7, 3 * target.detach() + 7, (3, 4)), {})
    assert moved.item() == pytest.approx(loss.item(), rel=1e-5)
    # the tokens are laid out on the mask grid: the same volume built by hand scores the same

    def volume(tokens: torch.Tensor) -> torch.Tensor:  # [B, T, N, D] -> [B, D, T, 3, 4]
        return tokens.detach().permute(0, 3, 1, 2).reshape(2, 6, 4, 3, 4)

    both = torch.cat([volume(reconstruction).flatten(1), volume(target).flatten(1)], dim=1)
    low, high = both.min(1).values.view(-1, 1, 1, 1, 1), both.max(1).values.view(-1, 1, 1, 1, 1)
    span = high - low + 1e-6  # SlotCurri's code adds 1e-6 to the range
    direct = 1 - ssim3d((volume(reconstruction) - low) / span, (volume(target) - low) / span).mean()
    assert loss.item() == pytest.approx(direct.item(), rel=1e-5)


def test_structure_loss_reads_pixel_reconstructions_too():
    frames = torch.rand(1, 3, 3, 8, 8)  # [B, T, C, h, w]
    output = ModelOutput(slots=torch.zeros(1, 3, 2, 1), masks=torch.zeros(1, 3, 2, 8, 8), target=frames)
    output.reconstruction = frames.flip(-1)
    assert StructureSSIM3D()(output, {}).item() > 0.05


def make_processor(cyclic: bool) -> VideoSlotProcessor:
    torch.manual_seed(0)
    processor = VideoSlotProcessor(
        LearnedInit(3, 8), SlotAttention(6, 8, num_iterations=1), TransformerPredictor(8, 2), 2
    )
    processor.cyclic_inference = cyclic
    return processor


def test_cyclic_inference_takes_frames_before_the_last_from_the_backward_pass():
    features = torch.randn(2, 4, 5, 6)
    processor = make_processor(cyclic=True).eval()
    slots, attention, _ = processor(features)
    with torch.no_grad():
        state = processor.initialiser(2)
        forward = []
        for t in range(4):
            state, attn = processor.corrector(state, features[:, t], num_iterations=2 if t == 0 else None)[:2]
            forward.append((state, attn))
            state = processor.predictor(state)
        state = processor.predictor(forward[-1][0])
        backward = {}
        for t in (2, 1, 0):
            state, attn = processor.corrector(state, features[:, t])[:2]
            backward[t] = (state, attn)
            state = processor.predictor(state)
    for t in range(3):
        torch.testing.assert_close(slots[:, t], backward[t][0])
        torch.testing.assert_close(attention[:, t], backward[t][1])
        assert not torch.allclose(slots[:, t], forward[t][0])
    torch.testing.assert_close(slots[:, 3], forward[3][0])
    plain = make_processor(cyclic=False).eval()(features)[0]
    torch.testing.assert_close(plain[:, 3], slots[:, 3])
    torch.testing.assert_close(processor.train()(features)[0], plain)  # training never runs it


def test_cyclic_inference_is_a_model_switch_and_needs_a_predictor(tmp_path):
    cfg = compose_config(["model.cyclic_inference=true", f"paths.output_dir={tmp_path}"])
    assert build_model(cfg).processor.cyclic_inference
    with pytest.raises(ValueError, match="predictor"):
        VideoSlotProcessor(LearnedInit(2, 4), SlotAttention(4, 4), None).cyclic_inference = True
