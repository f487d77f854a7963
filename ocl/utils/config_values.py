"""Checks of a composed config's known numeric values before any work starts.

Hydra checks that keys exist, not what their values are: ``model.processor.initialiser.num_slots=0``
would train for hours and fail in the metrics, ``trainer.max_steps=abc`` fail inside Lightning
without naming the key. :func:`check_config_values` names the key and the value expected.
Rules apply to a key by its full name (:data:`BY_KEY`) or, wherever it is in the config, by its
last component (:data:`BY_NAME`: e.g. every ``num_slots``); null values are left to their users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigValueError(ValueError):
    """A config value has the wrong type or range; the message (one line) names the key."""


@dataclass(frozen=True)
class Rule:
    """A value that must be an integer (``integer``) or any number, at least ``minimum`` (or above
    it, with ``strict``)."""

    integer: bool
    minimum: float
    strict: bool = False

    def violated_by(self, value: Any) -> bool:
        kind = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            return True
        return value <= self.minimum if self.strict else value < self.minimum

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} {'>' if self.strict else '>='} {self.minimum:g}"


BY_KEY: dict[str, Rule] = {
    "seed": Rule(integer=True, minimum=0),
    "trainer.max_steps": Rule(integer=True, minimum=1),
    "trainer.log_every_n_steps": Rule(integer=True, minimum=1),
}
"""Rules for keys at one place of the config."""

BY_NAME: dict[str, Rule] = {
    "num_slots": Rule(integer=True, minimum=1),
    "num_iterations": Rule(integer=True, minimum=1),
    "batch_size": Rule(integer=True, minimum=1),
    "val_batch_size": Rule(integer=True, minimum=1),
    "train_frames": Rule(integer=True, minimum=1),
    "val_frames": Rule(integer=True, minimum=1),
    "num_workers": Rule(integer=True, minimum=0),
    "every_n_train_steps": Rule(integer=True, minimum=0),
    "lr": Rule(integer=False, minimum=0, strict=True),
    "mlp_hidden_dim": Rule(integer=True, minimum=0),  # 0: no residual MLP (VideoSAUR's corrector)
    **{  # sizes: frames, clips, token grids and widths
        name: Rule(integer=True, minimum=1)
        for name in (
            "size",
            "image_size",
            "output_size",
            "broadcast_size",
            "patch_size",
            "kernel_size",
            "train_clip_length",
            "eval_clip_length",
            "frame_stride",
            "dim",
            "input_dim",
            "output_dim",
            "hidden_dim",
            "slot_dim",
            "token_dim",
            "embed_dim",
        )
    },
}
"""Rules for keys of that name anywhere in the config (their last component)."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_config_values(config: DictConfig) -> None:
    """Raise :class:`ConfigValueError` for the first value of ``config`` (resolved) that breaks
    its rule in :data:`BY_KEY` or :data:`BY_NAME`."""
    for key, value in flatten(OmegaConf.to_container(config, resolve=True)).items():
        rule = BY_KEY.get(key) or BY_NAME.get(key.rsplit(".", 1)[-1])
        if rule is not None and value is not None and rule.violated_by(value):
            raise ConfigValueError(f"{key} must be {rule.describe()}, got {value!r}")
