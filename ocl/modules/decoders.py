"""Decoders that turn slots into a reconstruction and per-slot alpha masks."""

from __future__ import annotations

import itertools
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


def mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MLPFeatureDecoder(nn.Module):
    """DINOSAUR's broadcast MLP decoder over patches (SlotContrast, SlotCurri).

    Every slot is broadcast to the ``N`` patch positions and gets a learned position embedding;
    a shared MLP maps each (slot, position) to ``output_dim`` values and one alpha logit. Alpha
    is softmaxed over slots (the masks); the reconstruction is the alpha-weighted sum of values.

    Args:
        slot_dim: slot dimension ``d``.
        num_tokens: number of patches ``N``.
        output_dim: decoded channels per patch (the feature dimension ``D``).
        hidden_dims: hidden layer sizes of the MLP (DINOSAUR: 1024 x 3).
    """

    def __init__(self, slot_dim: int, num_tokens: int, output_dim: int, hidden_dims: Sequence[int] = (1024,) * 3):
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, 1, num_tokens, slot_dim) * 0.02)
        self.mlp = mlp([slot_dim, *hidden_dims, output_dim + 1])

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]`` -> (reconstruction ``[B, N, output_dim]``, masks ``[B, K, N]``)."""
        decoded = self.mlp(slots.unsqueeze(2) + self.position)  # [B, K, N, output_dim + 1]
        values, alpha_logits = decoded[..., :-1], decoded[..., -1]
        masks = alpha_logits.softmax(dim=1)
        return torch.einsum("bkn,bknc->bnc", masks, values), masks


class SlotMixerDecoder(nn.Module):
    """SlotMixer decoder (Sajjadi et al. 2022) as used by VideoSAUR.

    Learned per-patch queries pass through an allocation transformer (pre-LN decoder blocks:
    self-attention over patches, cross-attention to the slots, MLP). A final single-head
    dot-product attention of each query over the slots gives the mixing weights (the masks,
    softmax over slots); each patch's weighted mixture of slots plus its position embedding
    is rendered by an MLP into ``output_dim`` values. Unlike the MLP decoder, the render runs
    once per patch, not once per (slot, patch).

    Args:
        slot_dim: slot dimension ``d``.
        num_tokens: number of patches ``N``.
        output_dim: rendered channels per patch.
        num_blocks: allocation transformer blocks.
        num_heads: attention heads in those blocks.
        hidden_dims: hidden layer sizes of the render MLP.
    """

    def __init__(
        self,
        slot_dim: int,
        num_tokens: int,
        output_dim: int,
        num_blocks: int = 2,
        num_heads: int = 4,
        hidden_dims: Sequence[int] = (1024,) * 3,
    ) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, num_tokens, slot_dim) * 0.02)
        block = nn.TransformerDecoderLayer(
            slot_dim, num_heads, 4 * slot_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.allocator = nn.TransformerDecoder(block, num_blocks, norm=nn.LayerNorm(slot_dim))
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(slot_dim, slot_dim, bias=False)
        self.render = mlp([slot_dim, *hidden_dims, output_dim])

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]`` -> (rendered ``[B, N, output_dim]``, masks ``[B, K, N]``)."""
        queries = self.allocator(self.position.expand(slots.shape[0], -1, -1), slots)
        keys = self.to_k(self.norm_slots(slots))
        logits = torch.einsum("bnd,bkd->bkn", self.to_q(queries), keys) * slots.shape[-1] ** -0.5
        masks = logits.softmax(dim=1)
        mixed = torch.einsum("bkn,bkd->bnd", masks, slots)
        return self.render(mixed + self.position), masks
