"""SlotCurri's structure-aware loss: 1 - 3-D SSIM between reconstructed and target volumes."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ocl.losses.base import LossTerm
from ocl.methods.output import ModelOutput
from ocl.utils.precision import at_least_float32

RANGE_EPS = 1e-6
"""Added to each sample's value range before the min-max normalisation (SlotCurri's code)."""


def gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap, in float32 whatever the
    input's precision (as ``pytorch_msssim``, which SlotCurri's code calls, builds its window)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _blur(volume: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian over the last three dims of ``[B, C, T, H, W]``, valid padding (each dim shrinks by ``len(taps) - 1``)."""
    channels = volume.shape[1]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = taps.numel()
        kernel = taps.to(volume).reshape(shape).expand(channels, 1, *shape[2:])
        volume = F.conv3d(volume, kernel, groups=channels)
    return volume


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
    and W, without padding, then averaged over positions and channels.
    """
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(
            f"ssim3d needs two [B, C, T, H, W] volumes of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if min(x.shape[2:]) < window:
        raise ValueError(f"ssim3d needs T, H, W >= the window ({window}), got {tuple(x.shape[2:])}")
    taps = gaussian_taps(window, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mean_x, mean_y = _blur(x, taps), _blur(y, taps)
    var_x = _blur(x * x, taps) - mean_x**2
    var_y = _blur(y * y, taps) - mean_y**2
    cov = _blur(x * y, taps) - mean_x * mean_y
    luminance = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)
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
            prediction = as_volume(at_least_float32(output.reconstruction), grid)
            target = as_volume(at_least_float32(output.target.detach()), grid)
            with torch.no_grad():
                both = torch.cat([prediction.flatten(1), target.flatten(1)], dim=1)
                low = both.min(dim=1).values.view(-1, 1, 1, 1, 1)
                span = both.max(dim=1).values.view(-1, 1, 1, 1, 1) - low + RANGE_EPS
            similarity = ssim3d(
                (prediction - low) / span, (target - low) / span, self.window, self.sigma, self.k1, self.k2
            )
            return 1.0 - similarity.mean()
