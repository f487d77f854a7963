"""``compile=...``: torch.compile of a method's model parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def compile_options(setting: Any) -> dict[str, Any] | None:
    """The ``torch.compile`` options of the ``compile`` config value: None for false (or null),
    ``{}`` for true, the mapping itself for a mapping (e.g. ``compile={mode:max-autotune}``)."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return {}
    if isinstance(setting, Mapping):
        return dict(setting)
    raise ValueError(
        f"compile must be true, false or a mapping of torch.compile options (e.g. compile={{mode:max-autotune}}), "
        f"got {setting!r}"
    )


def compile_model_parts(method: nn.Module, **options: Any) -> list[str]:
    """Compile each direct child module of ``method`` (encoder, processor, decoder, ...) in place,
    except its loss terms (``method.losses``), and return the names compiled.

    ``nn.Module.compile`` keeps parameter names, so checkpoints load with or without compilation.
    The first steps (and each new input shape, e.g. a validation video of another length) pay
    the compilation; ``options`` go to ``torch.compile`` (``mode=``, ``backend=``, ``dynamic=``).
    """
    names = []
    for name, module in method.named_children():
        if name != "losses":
            module.compile(**options)
            names.append(name)
    return names
