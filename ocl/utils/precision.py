"""Computation dtypes: parts that must not run in half precision upcast only that; and whether
bf16 autocast on this CPU is native or emulated."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CPUAccelerator


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32, or unchanged if it is float64 (fp16 / bf16 and float32 give float32)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles). Without
    either, bf16 kernels are emulated: the ``*_synthetic`` feature experiments' step in
    ``bf16-mixed`` took 9-14x the time of ``32-true`` on an AVX2-only AMD EPYC (docs/benchmarks.md)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def emulated_bf16_warning(trainer: pl.Trainer) -> str | None:
    """What to tell the user when ``trainer`` autocasts to bf16 on a CPU that emulates it, else
    ``None``. Lightning runs ``16-mixed`` as ``bf16-mixed`` on a CPU, so this covers both."""
    emulated = "bf16" in str(trainer.precision) and isinstance(trainer.accelerator, CPUAccelerator)
    if not emulated or cpu_has_native_bf16():
        return None
    return (
        f"trainer.precision={trainer.precision} on a CPU without native bf16 (no AVX512-BF16 or AMX): "
        "emulated bf16 steps take ~10x the time of trainer.precision=32-true here (docs/scaling.md)"
    )
