"""One converter for every family: the authors' state dict + the ocl model built from the recipe ->
the model's state dict, every key filled from their file (:class:`~ocl.published.layouts.Layout`).

A key of theirs that has no place in the model, a key of the model their file lacks, or a shape
that does not fit raises :class:`LayoutMismatch`, whose one-line message names the first such key
and what was expected instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from ocl.published.layouts import Layout, Rename

LAYER = "{n}"
LAST = "{last}"

VALUE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "log(|x| + 1e-8)": lambda sigma: (sigma.abs() + 1e-8).log(),  # a standard deviation |s| + eps -> its log
}
"""The value functions a :class:`~ocl.published.layouts.Layout`'s ``value_maps`` name."""


class LayoutMismatch(ValueError):
    """Their file does not fit the model: the message names the first key that does not fit."""


def their_state_dict(layout: Layout, checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file of ``layout``'s family (``checkpoint[layout.container]``)."""
    if not isinstance(checkpoint, Mapping):
        raise LayoutMismatch(f"the file holds a {type(checkpoint).__name__}, not the dict a {layout.title} file holds")
    state = checkpoint.get(layout.container)
    if not isinstance(state, Mapping):
        found = ", ".join(sorted(map(str, checkpoint))[:8]) or "nothing"
        raise LayoutMismatch(
            f"the file has no '{layout.container}' state dict, as a {layout.title} file has "
            f"(its top-level keys: {found})"
        )
    return dict(state)


def their_vit_weights(layout: Layout, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their ViT's weights under timm's names (``layout.encoder`` removed), as ``model.encoder.weights``
    reads them; empty for a family without a ViT."""
    if layout.encoder is None:
        return {}
    return {key[len(layout.encoder) :]: value for key, value in state.items() if key.startswith(layout.encoder)}


def convert_state_dict(layout: Layout, theirs: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
    """``model.state_dict()`` with every tensor taken from ``theirs`` (their names, their shapes).

    Values are cast to the model's dtypes and go through the layout's ``value_maps``; a shape that
    differs only in dimensions of size 1 fits; position tables (``layout.position_tables``) made
    for another grid are resampled to the model's. Their ``unused`` keys are left out; the layout's
    ``copies`` are filled from the converted values, its ``kept`` keys and the entries that are not
    tensors (modules' extra state) stay the model's. Raises :class:`LayoutMismatch`.
    """
    target = model.state_dict()
    names = NameMap(layout.renames, target)
    unused = [_pattern(template) for template in layout.unused]
    converted: dict[str, torch.Tensor] = {}
    for their_key, value in theirs.items():
        if any(pattern.match(their_key) for pattern in unused):
            continue
        ours = names.ours(their_key)
        if ours is None or ours not in target:
            problem = (
                f"is not a key of a {layout.title} checkpoint"
                if ours is None
                else f"maps to ocl's '{ours}', which this model has not"
            )
            raise LayoutMismatch(f"'{their_key}' {problem}{_expected(their_key, names, theirs, target)}")
        converted[ours] = _fitted(layout, their_key, value, ours, target[ours])
    not_theirs = (*layout.kept, *(copy for copy, _ in layout.copies))
    for ours, expected in target.items():
        if isinstance(expected, torch.Tensor) and ours not in converted and not ours.startswith(not_theirs):
            their_key = names.theirs(ours)
            shape = tuple(expected.shape)
            what = f"no '{their_key}' (shape {shape}, ocl's '{ours}')" if their_key else f"nothing for ocl's '{ours}'"
            raise LayoutMismatch(f"the file has {what}, which a {layout.title} checkpoint for this model holds")
    for copy, source in layout.copies:
        for ours in target:
            if ours.startswith(copy):
                converted[ours] = converted[source + ours[len(copy) :]].clone()
    return {key: converted.get(key, value) for key, value in target.items()}


def _expected(their_key: str, names: NameMap, theirs: Mapping[str, torch.Tensor], target: Mapping[str, Any]) -> str:
    """``"; expected '<key>'"``: of the model's keys (in their names) that ``theirs`` lacks, the one
    sharing the longest dotted prefix with ``their_key`` (the first in the model's order on a tie)."""
    absent = [
        key
        for ours, value in target.items()
        if isinstance(value, torch.Tensor) and (key := names.theirs(ours)) is not None and key not in theirs
    ]
    if not absent:
        return ""
    parts = their_key.split(".")

    def shared(key: str) -> int:
        return next((i for i, (a, b) in enumerate(zip(parts, key.split("."))) if a != b), len(parts))

    return f"; expected '{max(absent, key=shared)}'"


def _fitted(layout: Layout, their_key: str, value: torch.Tensor, ours: str, expected: torch.Tensor) -> torch.Tensor:
    """``value`` in ``expected``'s shape and dtype, or :class:`LayoutMismatch` naming both shapes."""
    if not isinstance(value, torch.Tensor):
        raise LayoutMismatch(f"'{their_key}' holds a {type(value).__name__}, not a tensor (ocl's '{ours}')")
    value = value.detach()
    value_map = dict(layout.value_maps).get(ours)
    if value_map is not None:
        value = VALUE_MAPS[value_map](value)
    if value.shape == expected.shape:
        return value.to(expected.dtype)
    if _without_ones(value.shape) == _without_ones(expected.shape):
        return value.reshape(expected.shape).to(expected.dtype)
    prefix_tokens = dict(layout.position_tables).get(ours)
    if prefix_tokens is not None:
        resampled = _resampled_positions(value, expected, prefix_tokens)
        if resampled is not None:
            return resampled
    shown = _in_their_layout(expected.shape, value.shape)
    raise LayoutMismatch(f"'{their_key}' has shape {tuple(value.shape)}; this model expects {shown} (ocl's '{ours}')")


def _in_their_layout(expected: torch.Size, theirs: torch.Size) -> tuple[int, ...]:
    """``expected`` written in the layout of their shape (their size-1 dimensions kept) where the
    two have as many dimensions of other sizes, e.g. ocl's ``(11, 64)`` as ``(1, 11, 64)``."""
    sizes = list(_without_ones(expected))
    if len(sizes) != len(_without_ones(theirs)):
        return tuple(expected)
    return tuple(1 if size == 1 else sizes.pop(0) for size in theirs)


def _without_ones(shape: Iterable[int]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def _resampled_positions(value: torch.Tensor, expected: torch.Tensor, prefix_tokens: int) -> torch.Tensor | None:
    """A ``[1, prefix + g*g, D]`` position table resampled to ``expected``'s square grid as timm
    resamples it (when loading weights, or on every forward of a ``dynamic_img_size`` ViT: the
    same bicubic, antialiased interpolation in float32); None if either is not such a table."""
    grids = [_square_grid(table, prefix_tokens) for table in (value, expected)]
    if None in grids or value.shape[-1] != expected.shape[-1]:
        return None
    resampled = resample_abs_pos_embed(value, new_size=[grids[1]] * 2, num_prefix_tokens=prefix_tokens)
    return resampled.to(expected.dtype)


def _square_grid(table: torch.Tensor, prefix_tokens: int) -> int | None:
    """The side of ``table [1, prefix + g*g, D]``'s grid, or None."""
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[1] <= prefix_tokens:
        return None
    side = round((table.shape[1] - prefix_tokens) ** 0.5)
    return side if side * side == table.shape[1] - prefix_tokens else None


class NameMap:
    """A layout's renames, both ways, with ``{last}`` resolved against ``target`` (the model's state dict)."""

    def __init__(self, renames: Iterable[Rename], target: Mapping[str, Any]) -> None:
        self.pairs = [
            (_pattern(rename.theirs), rename.theirs, _pattern(ours), ours)
            for rename in renames
            if (ours := _resolve_last(rename.ours, target)) is not None
        ]

    def ours(self, their_key: str) -> str | None:
        """Their key -> ocl's (None: no rename matches)."""
        return self._map(their_key, forward=True)

    def theirs(self, our_key: str) -> str | None:
        """ocl's key -> theirs (None: no rename matches)."""
        return self._map(our_key, forward=False)

    def _map(self, key: str, forward: bool) -> str | None:
        for their_pattern, their_template, our_pattern, our_template in self.pairs:
            pattern, template = (their_pattern, our_template) if forward else (our_pattern, their_template)
            match = pattern.match(key)
            if match:
                layer = match.groupdict().get("n")
                return template.replace(LAYER, layer or "") + key[match.end() :]
        return None


def _pattern(template: str) -> re.Pattern[str]:
    """``template`` as a regex: ``{n}`` a layer number; a trailing ``.`` matches the start of a key."""
    regex = re.escape(template).replace(re.escape(LAYER), r"(?P<n>\d+)")
    return re.compile(regex if template.endswith(".") else regex + "$")


def _resolve_last(template: str, target: Mapping[str, Any]) -> str | None:
    """``template`` with ``{last}`` replaced by the highest layer number under its path in
    ``target``; None if the model has no layers there (the rename cannot apply)."""
    if LAST not in template:
        return template
    path = template.split(LAST)[0]
    numbers = [int(match.group(1)) for key in target if (match := re.match(re.escape(path) + r"(\d+)\.", key))]
    return template.replace(LAST, str(max(numbers))) if numbers else None
