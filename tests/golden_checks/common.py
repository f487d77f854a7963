"""What every golden check uses: the fixture folder, a float64 view of a fixture, loading the
authors' parameters into an ocl module through a name map, and comparisons that record their
max difference (``pytest tests/test_golden.py -s`` prints them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
"""The authors' outputs, copied from ``../shared/golden`` (test_golden.py checks the copy is current)."""

FLOAT64 = 1e-10
"""Tolerance where the computation is float64 end to end."""
FLOAT32 = 1e-6
"""Tolerance where ocl deliberately computes in float32 (each use says why)."""

MEASURED: list[tuple[str, str, float, float]] = []
"""``(case, quantity, max |diff|, tolerance)`` of every comparison made, in order."""
CURRENT_CASE = ["?"]


class Fixture:
    """One ``.npz`` fixture: ``fixture["input/x"]`` is a float64 tensor; :meth:`params` the
    ``param/*`` arrays (prefix dropped, optionally only those under ``prefix``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with np.load(path) as arrays:
            self.arrays = {key: arrays[key] for key in arrays.files}

    def __getitem__(self, key: str) -> torch.Tensor:
        return torch.from_numpy(self.arrays[key]).to(torch.float64)

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, in file order."""
        return [key for key in self.arrays if key.startswith(prefix)]

    def params(self, prefix: str = "param/") -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of the keys under ``prefix`` (``prefix`` removed)."""
        return {key[len(prefix) :]: self[key] for key in self.keys(prefix)}


def load_mapped(module: nn.Module, params: Mapping[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, str]:
    """Copy the authors' ``params`` into ``module`` (float64) under ``rename(their name)``; every
    parameter of ``module`` must be set exactly once. -> ``{ocl name: their name}``."""
    module.double()
    own = dict(module.named_parameters())
    mapping: dict[str, str] = {}
    for theirs, value in params.items():
        name = rename(theirs)
        assert name in own, f"{theirs} -> {name}: no such parameter in {type(module).__name__} ({sorted(own)})"
        assert name not in mapping, f"{name} set twice ({mapping.get(name)}, {theirs})"
        assert own[name].shape == value.reshape(own[name].shape).shape, f"{theirs} -> {name}: shape"
        with torch.no_grad():
            own[name].copy_(value.reshape(own[name].shape))
        mapping[name] = theirs
    missing = sorted(set(own) - set(mapping))
    assert not missing, f"parameters of {type(module).__name__} not in the fixture: {missing}"
    return mapping


def expect_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str) -> float:
    """Assert ``max |actual - expected| <= tolerance`` (same shape), record it, return it."""
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    expected = torch.as_tensor(expected).to(torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    difference = float((actual - expected).abs().max()) if actual.numel() else 0.0
    MEASURED.append((CURRENT_CASE[0], what, difference, tolerance))
    assert difference <= tolerance, f"{what}: max |diff| {difference:.3g} > {tolerance:g}"
    return difference


def expect_gradients(
    module: nn.Module, fixture: Fixture, mapping: Mapping[str, str], grad_prefix: str, tolerance: float
) -> None:
    """Compare each mapped parameter's ``.grad`` (zeros if None) with ``fixture[grad_prefix + their name]``."""
    for ours, theirs in mapping.items():
        parameter = dict(module.named_parameters())[ours]
        expected = fixture[grad_prefix + theirs]
        grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        expect_close(grad.reshape(expected.shape), expected, tolerance, f"grad {theirs}")
