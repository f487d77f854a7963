"""The pre-LayerNorm transformer block shared by the predictor and the SlotMixer allocator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_INITS = ("torch", "xavier")


class TransformerBlock(nn.Module):
    """``x + proj(attention(norm_attention(x), memory))``, then ``+ ffn(norm_ffn(.))``; no final norm.

    Multi-head attention with one fused ``qkv`` projection (with bias): its rows are the query,
    key and value projections in that order, each head a contiguous group of ``head_dim`` rows.
    Without ``memory`` the block attends over its own (normalised) inputs; with ``memory`` the
    queries come from the inputs and keys and values from ``memory`` (a cross-attention only:
    no self-attention among the inputs), as in the VideoSAUR allocator.

    Args:
        dim: token dimension (inputs and memory).
        num_heads: attention heads; ``dim`` must be divisible by it.
        ffn_multiplier: hidden size of the feed-forward block is ``ffn_multiplier * dim``.
        legacy_scale: multiply the logits by ``sqrt(head_dim)`` as the VideoSAUR / SlotContrast /
            SlotCurri code does (its attention divides the queries by ``head_dim ** -0.5``);
            False divides by ``sqrt(head_dim)`` (standard attention).
        attention_init: ``xavier`` (the VideoSAUR / SlotContrast / SlotCurri code: each of the
            q, k, v blocks of ``qkv`` and the output projection Xavier-uniform, their biases
            zero) or ``torch`` (``nn.Linear``'s default initialisation).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        ffn_multiplier: int = 4,
        legacy_scale: bool = False,
        attention_init: str = "torch",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if attention_init not in ATTENTION_INITS:
            raise ValueError(f"unknown attention_init {attention_init!r}; choose one of {list(ATTENTION_INITS)}")
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
        if attention_init == "xavier":
            self._xavier_attention()

    @torch.no_grad()
    def _xavier_attention(self) -> None:
        """Xavier-uniform q, k and v blocks (each ``dim x dim``) and output projection; zero biases."""
        dim = self.proj.in_features
        bound = math.sqrt(6.0 / (dim + dim))
        self.qkv.weight.uniform_(-bound, bound)
        nn.init.xavier_uniform_(self.proj.weight)
        self.qkv.bias.zero_()
        self.proj.bias.zero_()

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, dim]``, ``memory [B, M, dim]`` or None -> ``[B, N, dim]``."""
        batch, length, dim = x.shape
        heads = self.num_heads
        normed = self.norm_attention(x)
        if memory is None:
            q, k, v = self.qkv(normed).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
        else:
            weight_q, weight_kv = self.qkv.weight.split([dim, 2 * dim])
            bias_q, bias_kv = self.qkv.bias.split([dim, 2 * dim])
            q = F.linear(normed, weight_q, bias_q).unflatten(-1, (heads, -1)).transpose(1, 2)
            k, v = F.linear(memory, weight_kv, bias_kv).unflatten(-1, (2, heads, -1)).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [B, heads, N, head_dim]
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, dim))
        return x + self.ffn(self.norm_ffn(x))
