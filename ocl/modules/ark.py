"""SLASH's attention refining kernel (ARK): smooth each slot's attention logits over the token grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ARK_VARIANTS = ("wnconv", "gaussian", "conv")


def token_grid(num_tokens: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``num_tokens`` tokens of an image of ``image_size = (H, W)``
    (same aspect ratio, ``h * w == num_tokens``); raises ``ValueError`` if there is none."""
    height, width = image_size
    rows = max(1, round(height * math.sqrt(num_tokens / (height * width))))
    if num_tokens % rows:
        raise ValueError(f"{num_tokens} tokens do not form a grid with the aspect ratio of a {height}x{width} image")
    return rows, num_tokens // rows


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian ``[size, size]`` (sums to 1)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum()


class AttentionRefiningKernel(nn.Module):
    """Convolves each slot's attention logits, as a 1-channel ``h x w`` map, with one
    ``size x size`` kernel (zero padding, no bias), before slot attention's softmax over slots.

    Variants:
        ``wnconv``: SLASH's kernel, learned and normalised: ``softmax(w / ||w||_2)`` over its
            taps, so it stays positive and sums to 1.
        ``gaussian``: a fixed Gaussian blur of standard deviation ``sigma``.
        ``conv``: a free learned kernel, initialised at the uniform average.

    ``fixed_uniform=True`` reproduces the authors' code (SLASH b6e9aca), which re-creates the
    ``wnconv`` weight on every forward pass, so it never trains: the kernel is the uniform
    ``1 / size**2`` average, not learned, whatever the variant.
    """

    def __init__(self, variant: str = "wnconv", size: int = 5, sigma: float = 1.0, fixed_uniform: bool = False) -> None:
        super().__init__()
        if variant not in ARK_VARIANTS:
            raise ValueError(f"unknown ARK variant {variant!r}; choose one of {list(ARK_VARIANTS)}")
        if size < 1 or size % 2 == 0:
            raise ValueError(f"ARK kernel size must be odd and positive, got {size}")
        self.variant = "uniform" if fixed_uniform else variant
        self.size = size
        if self.variant == "wnconv":
            # Direction only matters (w is normalised); randn gives a near-uniform start.
            self.weight = nn.Parameter(torch.randn(size, size))
        elif self.variant == "conv":
            self.weight = nn.Parameter(torch.full((size, size), 1.0 / size**2))
        elif self.variant == "gaussian":
            self.register_buffer("fixed", gaussian_kernel(size, sigma), persistent=False)
        else:
            self.register_buffer("fixed", torch.full((size, size), 1.0 / size**2), persistent=False)

    def kernel(self) -> torch.Tensor:
        """The kernel now applied, ``[size, size]``."""
        if self.variant == "wnconv":
            flat = self.weight.flatten()
            return (flat / flat.norm()).softmax(dim=0).view(self.size, self.size)
        if self.variant == "conv":
            return self.weight
        return self.fixed

    def forward(self, logits: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``logits [B, K, N]`` with ``N = h * w`` tokens in row-major ``grid = (h, w)`` -> ``[B, K, N]``."""
        batch, num_slots, num_tokens = logits.shape
        if grid[0] * grid[1] != num_tokens:
            raise ValueError(f"ARK grid {grid} does not hold {num_tokens} tokens")
        maps = logits.reshape(batch * num_slots, 1, *grid)
        kernel = self.kernel().to(logits.dtype)[None, None]
        return F.conv2d(maps, kernel, padding=self.size // 2).reshape(batch, num_slots, num_tokens)
