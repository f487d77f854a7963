"""SLASH's attention refining kernel (ARK): smooth each slot's attention logits over the token grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ARK_VARIANTS = ("wnconv", "gaussian", "conv")
PADDINGS = ("zeros", "reflect")
GAUSSIAN_SIGMA_RANGE = (0.1, 2.0)
"""The range SLASH's code draws the ``gaussian`` variant's sigma from on every call
(``ATTN_SMOOTH_GAU_MIN`` / ``_MAX`` of its ``SA_base.yaml``)."""


def token_grid(num_tokens: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``num_tokens`` tokens of an image of ``image_size = (H, W)``
    (same aspect ratio, ``h * w == num_tokens``); raises ``ValueError`` if there is none."""
    height, width = image_size
    rows = max(1, round(height * math.sqrt(num_tokens / (height * width))))
    if num_tokens % rows:
        raise ValueError(f"{num_tokens} tokens do not form a grid with the aspect ratio of a {height}x{width} image")
    return rows, num_tokens // rows


def gaussian_kernel(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian ``[size, size]``: the outer product of a 1-D Gaussian sampled at the
    offsets ``-(size // 2) .. size // 2`` and normalised to sum 1 (torchvision's ``GaussianBlur``)."""
    offsets = torch.arange(size, dtype=dtype) - (size - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    return torch.outer(taps, taps)


def normalised_kernel(weight: torch.Tensor) -> torch.Tensor:
    """SLASH's kernel normalisation: ``softmax(w / ||w||_2)`` over the taps of ``weight [1, 1, s, s]``."""
    flat = weight.flatten()
    return (flat / flat.norm()).softmax(dim=0).view_as(weight)


class AttentionRefiningKernel(nn.Module):
    """Convolves each slot's attention logits, as a 1-channel ``h x w`` map, with one
    ``size x size`` kernel (no bias), before slot attention's softmax over slots.

    Variants:
        ``wnconv``: SLASH's normalised kernel, ``softmax(w / ||w||_2)`` over its taps (positive,
            sums to 1). ``learn=False`` is the authors' code (SLASH b6e9aca, ``WNConv``): every call
            replaces the stored kernel ``w`` by its normalisation in place and convolves with the
            result, so the kernel never trains and approaches the uniform ``1 / size**2`` within a
            few calls; it is a buffer, saved in checkpoints (the authors' ``knconv.weight``).
            ``learn=True`` (ocl): ``w`` is a parameter and each call convolves with its
            normalisation, so the kernel learns.
        ``gaussian``: a Gaussian blur (:func:`gaussian_kernel`); ``sigma=None`` draws sigma from
            ``U(sigma_range)`` on every call (the authors' torchvision ``GaussianBlur``), a number
            fixes it.
        ``conv``: a free learned kernel, initialised at the uniform average.

    ``padding``: ``zeros`` or ``reflect`` around the map; None takes the variant's padding in the
    authors' code (``reflect`` for ``gaussian``, ``zeros`` for the convolutions).

    The ``wnconv`` weight starts as ``nn.Conv2d(1, 1, size)`` initialises it, ``U(-1/size, 1/size)``
    (the authors'), or ``randn`` with ``learn`` (only its direction matters).
    """

    def __init__(
        self,
        variant: str = "wnconv",
        size: int = 5,
        sigma: float | None = 1.0,
        learn: bool = True,
        padding: str | None = None,
        sigma_range: tuple[float, float] = GAUSSIAN_SIGMA_RANGE,
    ) -> None:
        super().__init__()
        if variant not in ARK_VARIANTS:
            raise ValueError(f"unknown ARK variant {variant!r}; choose one of {list(ARK_VARIANTS)}")
        if size < 1 or size % 2 == 0:
            raise ValueError(f"ARK kernel size must be odd and positive, got {size}")
        padding = padding or ("reflect" if variant == "gaussian" else "zeros")
        if padding not in PADDINGS:
            raise ValueError(f"unknown ARK padding {padding!r}; choose one of {list(PADDINGS)}")
        self.variant = variant
        self.size = size
        self.sigma = sigma
        self.sigma_range = sigma_range
        self.padding = padding
        self.learn = learn
        if variant == "wnconv" and learn:
            self.weight = nn.Parameter(torch.randn(1, 1, size, size))
        elif variant == "wnconv":
            self.register_buffer("weight", torch.empty(1, 1, size, size).uniform_(-1.0 / size, 1.0 / size))
        elif variant == "conv":
            self.weight = nn.Parameter(torch.full((1, 1, size, size), 1.0 / size**2))

    def kernel(self, dtype: torch.dtype) -> torch.Tensor:
        """The kernel of one call on logits of ``dtype``, ``[1, 1, size, size]``; the in-place
        ``wnconv`` variant updates its stored kernel here (so each call advances it once)."""
        if self.variant == "gaussian":
            sigma = self.sigma if self.sigma is not None else torch.empty(1).uniform_(*self.sigma_range).item()
            taps_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # never half precision
            return gaussian_kernel(self.size, sigma, taps_dtype)[None, None]
        if self.variant == "conv":
            return self.weight
        if self.learn:
            return normalised_kernel(self.weight)
        with torch.no_grad():
            self.weight.copy_(normalised_kernel(self.weight))
        return self.weight.clone()  # this call's kernel: the next call updates the buffer again

    def forward(self, logits: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``logits [B, K, N]`` with ``N = h * w`` tokens in row-major ``grid = (h, w)`` -> ``[B, K, N]``."""
        batch, num_slots, num_tokens = logits.shape
        if grid[0] * grid[1] != num_tokens:
            raise ValueError(f"ARK grid {grid} does not hold {num_tokens} tokens")
        maps = logits.reshape(batch * num_slots, 1, *grid)
        kernel = self.kernel(logits.dtype).to(logits)  # dtype and device of the logits
        half = self.size // 2
        if self.padding == "reflect":
            smoothed = F.conv2d(F.pad(maps, (half, half, half, half), mode="reflect"), kernel)
        else:
            smoothed = F.conv2d(maps, kernel, padding=half)
        return smoothed.reshape(batch, num_slots, num_tokens)
