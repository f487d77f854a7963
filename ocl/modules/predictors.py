"""Predictors that carry slots from frame t to the initialisation of frame t + 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransformerPredictor(nn.Module):
    """One pre-LN transformer block over the slots of a frame (SAVi, VideoSAUR, SlotContrast).

    Args:
        dim: slot dimension.
        num_heads: attention heads.
        ffn_multiplier: hidden size of the feed-forward block is ``ffn_multiplier * dim``.
        legacy_scale: multiply logits by ``sqrt(head_dim)`` as the VideoSAUR / SlotContrast /
            SlotCurri code does (only to load their checkpoints); the default divides by it.
    """

    def __init__(self, dim: int, num_heads: int = 4, ffn_multiplier: int = 4, legacy_scale: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"slot dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**0.5 if legacy_scale else head_dim**-0.5
        self.norm_attention = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_multiplier * dim), nn.ReLU(inplace=True), nn.Linear(ffn_multiplier * dim, dim)
        )

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """``slots [B, K, d] -> [B, K, d]``."""
        batch, num_slots, dim = slots.shape
        qkv = self.qkv(self.norm_attention(slots)).reshape(batch, num_slots, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        slots = slots + self.proj(attended.transpose(1, 2).reshape(batch, num_slots, dim))
        return slots + self.ffn(self.norm_ffn(slots))
