"""Decoders that turn slots into a reconstruction and per-slot alpha masks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from ocl.modules.encoders import SinusoidalPositionEmbedding, SoftPositionEmbedding
from ocl.modules.transformer import TransformerBlock


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
        transposed: the layers at stride 1 are transposed convolutions too (Slot Attention's and
            SLASH's code: the same maps, with ``ConvTranspose2d``'s weight layout and default
            initialisation); False: ``Conv2d`` (ocl).
    """

    def __init__(
        self,
        slot_dim: int,
        output_size: int,
        broadcast_size: int = 8,
        channels: Sequence[int] = (64, 64, 64, 64),
        kernel_size: int = 5,
        out_channels: int = 3,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        ratio = output_size / broadcast_size
        num_upsamples = round(math.log2(ratio)) if ratio >= 1 else -1
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
        same_size = nn.ConvTranspose2d if transposed else nn.Conv2d
        for index, hidden in enumerate(channels):
            if index < num_upsamples:
                layers.append(
                    nn.ConvTranspose2d(in_channels, hidden, kernel_size, stride=2, padding=pad, output_padding=1)
                )
            else:
                layers.append(same_size(in_channels, hidden, kernel_size, padding=pad))
            layers.append(nn.ReLU(inplace=True))
            in_channels = hidden
        layers.append(same_size(in_channels, out_channels + 1, 3, padding=1))
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


def patch_position(
    num_tokens: int, dim: int, frequencies: Sequence[float] | None, leading: int = 2
) -> tuple[nn.Parameter | None, SinusoidalPositionEmbedding | None]:
    """A broadcast decoder's patch position embedding: the authors' learned vector per patch,
    ``randn * dim ** -0.5`` of shape ``[1] * leading + [N, dim]`` (``frequencies`` None), or a
    :class:`~ocl.modules.encoders.SinusoidalPositionEmbedding` at ``frequencies``; the other is None."""
    if frequencies is None:
        return nn.Parameter(torch.randn(*[1] * leading, num_tokens, dim) * dim**-0.5), None
    return None, SinusoidalPositionEmbedding(num_tokens, dim, frequencies)


class MLPFeatureDecoder(nn.Module):
    """DINOSAUR's broadcast MLP decoder over patches (SlotContrast, SlotCurri).

    Every slot is broadcast to the ``N`` patch positions and gets a learned position embedding
    (initialised ``randn * d ** -0.5``, as the authors' code); a shared MLP (``nn.Linear``'s
    default initialisation) maps each (slot, position) to ``output_dim`` values and one alpha
    logit. Alpha is softmaxed over slots (the masks); the reconstruction is the alpha-weighted
    sum of values.

    Args:
        slot_dim: slot dimension ``d``.
        num_tokens: number of patches ``N``.
        output_dim: decoded channels per patch (the feature dimension ``D``).
        hidden_dims: hidden layer sizes of the MLP (DINOSAUR: 1024 x 3).
        position_frequencies: ``None`` (the authors' code): one learned vector per patch. A tuple
            of frequencies (ocl's option for short runs): a learned linear map of the patches'
            sine / cosine position channels (:func:`~ocl.modules.encoders.sinusoidal_position`
            on the square ``sqrt(N) x sqrt(N)`` grid), smooth from the first step, where a learned
            vector per patch gets gradients from its own patch only.
    """

    def __init__(
        self,
        slot_dim: int,
        num_tokens: int,
        output_dim: int,
        hidden_dims: Sequence[int] = (1024,) * 3,
        position_frequencies: Sequence[float] | None = None,
    ):
        super().__init__()
        self.position, self.sinusoidal_position = patch_position(num_tokens, slot_dim, position_frequencies)
        self.mlp = mlp([slot_dim, *hidden_dims, output_dim + 1])

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]`` -> (reconstruction ``[B, N, output_dim]``, masks ``[B, K, N]``)."""
        position = self.position if self.sinusoidal_position is None else self.sinusoidal_position()
        decoded = self.mlp(slots.unsqueeze(2) + position.view(1, 1, *position.shape[-2:]))  # [B, K, N, output_dim + 1]
        values, alpha_logits = decoded[..., :-1], decoded[..., -1]
        masks = alpha_logits.softmax(dim=1)
        return torch.einsum("bkn,bknc->bnc", masks, values), masks


class SlotMixerDecoder(nn.Module):
    """SlotMixer decoder (Sajjadi et al. 2022) as VideoSAUR's code builds it.

    Allocation: learned per-patch queries (the position embedding) pass through ``num_blocks``
    pre-LN cross-attention blocks (:class:`~ocl.modules.transformer.TransformerBlock` with
    ``memory`` = LayerNorm(slots); no self-attention among the patches, no final norm). Mixing:
    ``q = to_q(norm_queries(queries))``, ``k = to_k(norm_slots(slots))``, logits ``q k^T * d**-0.5``
    softmaxed over slots (the masks); each patch's mixture of the raw slots plus its position
    embedding is rendered by Linear + ReLU layers (``hidden_dims``, ReLU after each) and an
    output Linear into ``output_dim`` values. The render runs once per patch, not once per
    (slot, patch).

    Initial values as the authors' code: position embedding ``randn * d ** -0.5``; ``to_q``,
    ``to_k`` and the output Linear Xavier-uniform (the output bias zero); the blocks' attention
    Xavier-uniform with zero biases; every other layer ``nn.Linear`` / ``nn.LayerNorm`` defaults.

    Args:
        slot_dim: slot dimension ``d``.
        num_tokens: number of patches ``N``.
        output_dim: rendered channels per patch.
        num_blocks: allocation blocks (VideoSAUR: MOVi 2, YT-VIS 3).
        num_heads: attention heads in those blocks.
        hidden_dims: widths of the render layers before the output Linear (VideoSAUR: MOVi
            1024 x 4, YT-VIS 1024 x 3).
        legacy_scale: the allocator's attention multiplies its logits by ``sqrt(head_dim)``
            (VideoSAUR's code) instead of dividing.
        position_frequencies: ``None`` (the authors' code) or frequencies of a sinusoidal
            position embedding, as :class:`MLPFeatureDecoder`'s.
    """

    def __init__(
        self,
        slot_dim: int,
        num_tokens: int,
        output_dim: int,
        num_blocks: int = 2,
        num_heads: int = 4,
        hidden_dims: Sequence[int] = (1024,) * 4,
        legacy_scale: bool = False,
        position_frequencies: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.position, self.sinusoidal_position = patch_position(num_tokens, slot_dim, position_frequencies, leading=1)
        self.norm_memory = nn.LayerNorm(slot_dim)
        self.allocator = nn.ModuleList(
            TransformerBlock(slot_dim, num_heads, legacy_scale=legacy_scale, attention_init="xavier")
            for _ in range(num_blocks)
        )
        self.norm_queries = nn.LayerNorm(slot_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(slot_dim, slot_dim, bias=False)
        self.render = mlp([slot_dim, *hidden_dims, output_dim])
        output_layer = self.render[-1]
        for layer in (self.to_q, self.to_k, output_layer):
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(output_layer.bias)

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slots [B, K, d]`` -> (rendered ``[B, N, output_dim]``, masks ``[B, K, N]``)."""
        position = self.position if self.sinusoidal_position is None else self.sinusoidal_position()[None]
        position = position.expand(slots.shape[0], -1, -1)
        memory = self.norm_memory(slots)
        queries = position
        for block in self.allocator:
            queries = block(queries, memory)
        keys = self.to_k(self.norm_slots(slots))
        logits = torch.einsum("bnd,bkd->bkn", self.to_q(self.norm_queries(queries)), keys) * slots.shape[-1] ** -0.5
        masks = logits.softmax(dim=1)
        mixed = torch.einsum("bkn,bkd->bnd", masks, slots)
        return self.render(mixed + position), masks
