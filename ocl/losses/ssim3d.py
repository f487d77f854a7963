"""SlotCurri's structure-aware loss: 1 - 3-D SSIM between reconstructed and target volumes."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ocl.contracts.output import ModelOutput
from ocl.losses.base import LossTerm

RANGE_EPS = 1e-6
"""Added to each sample's value range before the min-max normalisation (SlotCurri's code)."""


def gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap, in float32 whatever the
    input's precision (as ``pytorch_msssim``, which SlotCurri's code calls, builds its window)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _correlate(volume: torch.Tensor, taps: list[float], dims: tuple[int, ...]) -> torch.Tensor:
    """Valid correlation with ``taps`` along each of ``dims`` in turn (each shrinks by ``len(taps) - 1``).

    ``out[i] = sum_k taps[k] * volume[i + k]``, a weighted sum of shifted views: elementwise work
    in any memory layout, no convolution kernel.
    """
    for dim in dims:
        length = volume.shape[dim] - len(taps) + 1
        out = volume.narrow(dim, 0, length) * taps[0]
        for offset, tap in enumerate(taps[1:], start=1):
            out.add_(volume.narrow(dim, offset, length), alpha=tap)
        volume = out
    return volume


def _correlate_transposed(grad: torch.Tensor, taps: list[float], dims: tuple[int, ...]) -> torch.Tensor:
    """The adjoint of :func:`_correlate` (each of ``dims`` grows by ``len(taps) - 1``), in reverse order."""
    for dim in reversed(dims):
        length = grad.shape[dim]
        shape = list(grad.shape)
        shape[dim] += len(taps) - 1
        out = grad.new_empty(shape)
        torch.mul(grad, taps[0], out=out.narrow(dim, 0, length))
        out.narrow(dim, length, len(taps) - 1).zero_()
        for offset, tap in enumerate(taps[1:], start=1):
            out.narrow(dim, offset, length).add_(grad, alpha=tap)
        grad = out
    return grad


class _BlurredMoments(torch.autograd.Function):
    """``(x, y)`` of ``[B, T, H, W, C]`` -> ``[5, B, T', H', W', C]``: the separable Gaussian blur
    (valid, over T, then H, then W) of x, y, x², y² and xy, stacked in one buffer and blurred at once.

    The backward blurs the incoming gradients with the transposed taps and applies the chain
    rule of the five products directly, without keeping any intermediate volume.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, taps: list[float]) -> torch.Tensor:
        moments = x.new_empty(5, *x.shape)
        moments[0].copy_(x)
        moments[1].copy_(y)
        torch.mul(x, x, out=moments[2])
        torch.mul(y, y, out=moments[3])
        torch.mul(x, y, out=moments[4])
        ctx.save_for_backward(x, y)
        ctx.taps = taps
        return _correlate(moments, taps, (2, 3, 4))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, y = ctx.saved_tensors
        d_mean_x, d_mean_y, d_xx, d_yy, d_xy = _correlate_transposed(grad, ctx.taps, (2, 3, 4)).unbind(0)
        grad_x = torch.addcmul(d_mean_x, x, d_xx, value=2).addcmul_(y, d_xy) if ctx.needs_input_grad[0] else None
        grad_y = torch.addcmul(d_mean_y, y, d_yy, value=2).addcmul_(x, d_xy) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None


def ssim3d(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 3,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Mean 3-D SSIM per sample of volumes ``[B, C, T, H, W]`` -> ``[B]``.

    SSIM is computed per channel with a ``window``-tap Gaussian (``sigma``) separable over T, H
    and W, without padding, then averaged over positions and channels (``pytorch_msssim``'s 3-D
    SSIM). The five local moments are blurred in one pass over a ``[5, B, T, H, W, C]`` buffer
    (channels last, the layout of token volumes, so these need no transposition).
    """
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(
            f"ssim3d needs two [B, C, T, H, W] volumes of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if min(x.shape[2:]) < window:
        raise ValueError(f"ssim3d needs T, H, W >= the window ({window}), got {tuple(x.shape[2:])}")
    taps = gaussian_taps(window, sigma).tolist()  # float32 values, exact in any wider dtype
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    moments = _BlurredMoments.apply(x.movedim(1, -1), y.movedim(1, -1), taps)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = moments.unbind(0)
    mean_x_sq, mean_y_sq, mean_x_y = mean_x * mean_x, mean_y * mean_y, mean_x * mean_y
    luminance = (2 * mean_x_y + c1) / (mean_x_sq + mean_y_sq + c1)
    structure = (2 * (mean_xy - mean_x_y) + c2) / ((mean_xx - mean_x_sq) + (mean_yy - mean_y_sq) + c2)
    return (luminance * structure).flatten(1).mean(dim=1)


def as_volume(tensor: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A reconstruction as ``[B, C, T, h, w]``: from ``[B, T, N, D]`` tokens on ``grid`` or ``[B, T, C, h, w]`` frames."""
    if tensor.ndim == 4:
        batch, frames, tokens, dim = tensor.shape
        if tokens != math.prod(grid):
            raise ValueError(f"{tokens} tokens do not fill the mask grid {grid}")
        return tensor.permute(0, 3, 1, 2).reshape(batch, dim, frames, *grid)
    return tensor.transpose(1, 2)


class StructureSSIM3D(LossTerm):
    """``1 - ssim3d`` of the reconstruction and its (detached) target, usable by any method with both.

    Both volumes are min-max normalised together per sample (the range detached):
    ``(x - min) / (max - min + 1e-6)`` as SlotCurri's code, so ``data_range`` is 1. Token
    reconstructions ``[B, T, N, D]`` are laid out on the grid of ``output.masks``; pixel
    reconstructions ``[B, T, C, h, w]`` are used as they are. Computed in the inputs' precision,
    at least float32.

    Args:
        window, sigma, k1, k2: see :func:`ssim3d` (SlotCurri: 3, 1.5, 0.01, 0.03).
        weight: loss weight (SlotCurri: 0.05).
    """

    def __init__(self, window: int = 3, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, weight: float = 0.05):
        super().__init__(weight)
        self.window, self.sigma, self.k1, self.k2 = window, sigma, k1, k2

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        if output.reconstruction is None or output.target is None:
            raise ValueError("StructureSSIM3D needs a method whose output has 'reconstruction' and 'target'")
        grid = tuple(output.masks.shape[-2:])
        # at least fp32 with autocast off: mixed precision would run the blurs in 16 bits, and the
        # variances (differences of blurred squares) would lose their digits.
        with torch.autocast(device_type=output.reconstruction.device.type, enabled=False):
            prediction = as_volume(output.reconstruction, grid)
            target = as_volume(output.target.detach(), grid)
            dtype = torch.promote_types(torch.promote_types(prediction.dtype, target.dtype), torch.float32)
            with torch.no_grad():  # min and max are exact in the inputs' own precision: no upcast copies
                dims = tuple(range(1, prediction.ndim))
                low = torch.minimum(prediction.amin(dims), target.amin(dims)).to(dtype).view(-1, 1, 1, 1, 1)
                high = torch.maximum(prediction.amax(dims), target.amax(dims)).to(dtype).view(-1, 1, 1, 1, 1)
                span = high - low + RANGE_EPS
            # the subtraction of the (at least float32) minimum is also the upcast
            similarity = ssim3d(
                (prediction - low).div_(span), (target - low).div_(span), self.window, self.sigma, self.k1, self.k2
            )
            return 1.0 - similarity.mean()
