"""Pixel encoders that turn frames into the corrector's input tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def position_grid(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Soft position coordinates ``[h, w, 4]``: (y, x, 1 - y, 1 - x), each in [0, 1]."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([y, x, 1.0 - y, 1.0 - x], dim=-1)


def sinusoidal_position(height: int, width: int, frequencies: tuple[float, ...]) -> torch.Tensor:
    """Position channels of a ``height x width`` patch grid, ``[h * w, 4 * len(frequencies)]`` (row-major).

    Patch centres get coordinates ``y, x`` in ``(-1, 1)``; each frequency ``f`` adds
    ``sin(f * pi/2 * y), cos(f * pi/2 * y), sin(f * pi/2 * x), cos(f * pi/2 * x)``.
    """
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height * 2.0 - 1.0
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2.0 - 1.0
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    channels = []
    for frequency in frequencies:
        scale = frequency * math.pi / 2.0
        channels += [torch.sin(scale * y), torch.cos(scale * y), torch.sin(scale * x), torch.cos(scale * x)]
    return torch.stack(channels, dim=-1).flatten(0, 1).float()


class SinusoidalPositionEmbedding(nn.Module):
    """A learned linear map of :func:`sinusoidal_position` on a square grid: ``[N, dim]`` position
    vectors that are smooth over the grid from the first step (a learned vector per token is not)."""

    def __init__(self, num_tokens: int, dim: int, frequencies: Sequence[float]) -> None:
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"a sinusoidal position embedding needs a square token grid, got {num_tokens} tokens")
        self.register_buffer("channels", sinusoidal_position(side, side, tuple(frequencies)), persistent=False)
        self.proj = nn.Linear(self.channels.shape[1], dim)

    def forward(self) -> torch.Tensor:
        """The position vectors ``[N, dim]`` (row-major over the grid)."""
        return self.proj(self.channels)


class SoftPositionEmbedding(nn.Module):
    """Adds a learned linear map of :func:`position_grid` to a channels-last feature map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features [B, h, w, C] -> [B, h, w, C]``."""
        _, h, w, _ = features.shape
        return features + self.proj(position_grid(h, w, features.device))


class CNNEncoder(nn.Module):
    """Slot Attention's CNN encoder: conv stack, soft position embedding, LayerNorm + MLP.

    Args:
        channels: output channels of each conv layer (ReLU after each, see ``last_relu``).
        strides: stride of each conv layer (same length as ``channels``); the token grid is
            the input size divided by their product.
        kernel_size: conv kernel size (padding keeps the size at stride 1).
        output_dim: token dimension after the MLP.
        last_relu: a ReLU after the last conv too (ocl); False: none (SLASH's code).
        centre_inputs: map the images from [0, 1] to [-1, 1] first (ocl); False: use them as
            they are (SLASH's code).
        joint_norm_tokens: ``None``: the LayerNorm normalises each token over its channels (ocl);
            ``N``: it normalises the ``N`` tokens of an image and their channels jointly, with
            per-position affine tables ``[N, C]`` (SLASH's code: ``LayerNorm([H * W, C])``), so the
            token grid must hold ``N`` tokens.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 64, 64, 64),
        strides: Sequence[int] = (1, 1, 1, 1),
        kernel_size: int = 5,
        output_dim: int = 64,
        last_relu: bool = True,
        centre_inputs: bool = True,
        joint_norm_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {list(channels)} and strides {list(strides)} differ in length")
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels, stride in zip(channels, strides, strict=True):
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.convs = nn.Sequential(*(layers if last_relu else layers[:-1]))
        self.position = SoftPositionEmbedding(in_channels)
        norm_shape = in_channels if joint_norm_tokens is None else (joint_norm_tokens, in_channels)
        self.mlp = nn.Sequential(
            nn.LayerNorm(norm_shape),
            nn.Linear(in_channels, output_dim),
            nn.ReLU(inplace=True),
            nn.Linear(output_dim, output_dim),
        )
        self.output_dim = output_dim
        self.centre_inputs = centre_inputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 3, H, W]`` in [0, 1] -> tokens ``[B, h * w, output_dim]``."""
        features = self.convs(images * 2.0 - 1.0 if self.centre_inputs else images).permute(0, 2, 3, 1)
        features = self.position(features)
        return self.mlp(features.flatten(1, 2))


class TokenMLP(nn.Module):
    """DINOSAUR's map from frozen features to the corrector's tokens: LN -> D->2D -> ReLU -> 2D->d.

    Args:
        input_dim: feature dimension ``D``.
        output_dim: token dimension ``d``.
    """

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.LayerNorm(input_dim),
            nn.Linear(input_dim, 2 * input_dim),
            nn.ReLU(inplace=True),
            nn.Linear(2 * input_dim, output_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., d]``."""
        return self.layers(features)
