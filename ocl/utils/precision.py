"""Computation dtypes: parts that must not run in half precision upcast only that."""

from __future__ import annotations

import torch


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32, or unchanged if it is float64 (fp16 / bf16 and float32 give float32)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()
