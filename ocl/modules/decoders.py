"""Decoders that turn slots into a reconstruction and per-slot alpha masks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ocl.modules.encoders import SoftPositionEmbedding


class SpatialBroadcastDecoder(nn.Module):
    """Spatial broadcast decoder (Watters et al. 2019) as used by Slot Attention and SAVi.

    Each slot is broadcast to a ``broadcast_size`` grid, gets a soft position embedding, and a
    CNN decodes it to ``out_channels`` values plus one alpha logit per pixel. Layers upsample
    with stride-2 transposed convs until ``output_size`` is reached (broadcasting at a small
    grid and upsampling is far cheaper than broadcasting at full resolution). Alpha logits are
    softmaxed over slots: these are the masks.

    Args:
        slot_dim: slot dimension ``d``.
        output_size: side of the decoded square image.
        broadcast_size: side of the broadcast grid; ``output_size / broadcast_size`` must be a
            power of two not larger than ``2 ** len(channels)``.
        channels: channels of the hidden conv layers (ReLU after each).
        kernel_size: kernel size of the hidden layers.
        out_channels: decoded channels per pixel (3 for RGB).
    """

    def __init__(
        self,
        slot_dim: int,
        output_size: int,
        broadcast_size: int = 8,
        channels: Sequence[int] = (64, 64, 64, 64),
        kernel_size: int = 5,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        ratio = output_size / broadcast_size
        num_upsamples = int(round(math.log2(ratio))) if ratio >= 1 else -1
        if num_upsamples < 0 or 2**num_upsamples != ratio or num_upsamples > len(channels):
            raise ValueError(
                f"output_size {output_size} must be broadcast_size {broadcast_size} times a power of two "
                f"of at most 2**{len(channels)} (one per hidden layer)"
            )
        self.broadcast_size = broadcast_size
        self.position = SoftPositionEmbedding(slot_dim)
        layers: list[nn.Module] = []
        in_channels = slot_dim
        pad = kernel_size // 2
        for index, hidden in enumerate(channels):
            if index < num_upsamples:
                layers.append(
                    nn.ConvTranspose2d(in_channels, hidden, kernel_size, stride=2, padding=pad, output_padding=1)
                )
            else:
                layers.append(nn.Conv2d(in_channels, hidden, kernel_size, padding=pad))
            layers.append(nn.ReLU(inplace=True))
            in_channels = hidden
        layers.append(nn.Conv2d(in_channels, out_channels + 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]`` -> (reconstruction ``[B, C, h, w]``, masks ``[B, K, h, w]``)."""
        batch, num_slots, dim = slots.shape
        grid = slots.reshape(batch * num_slots, 1, 1, dim).expand(-1, self.broadcast_size, self.broadcast_size, -1)
        decoded = self.net(self.position(grid).permute(0, 3, 1, 2))
        decoded = decoded.unflatten(0, (batch, num_slots))
        values, alpha_logits = decoded[:, :, : self.out_channels], decoded[:, :, self.out_channels]
        masks = alpha_logits.softmax(dim=1)
        reconstruction = (values * masks.unsqueeze(2)).sum(dim=1)
        return reconstruction, masks
