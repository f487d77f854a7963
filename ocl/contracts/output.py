"""The model-output contract shared by every method.

Metric callbacks and visualisations read only :class:`ModelOutput` and the batch, so a new
method gets every metric for free.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

PREDICTED_POINTS = "predicted_points"
"""``extras`` key of IPPE's point predictions of every corrector iteration ``[B, T, I, K, 2]``
(SLASH; :mod:`ocl.modules.points`, :class:`~ocl.modules.video.ProcessorOutput`)."""
ASSIGNED_POINTS = "assigned_points"
"""``extras`` key of the ground-truth points IPPE encoded ``[B, T, K, 2]`` (NaN: the slot's prediction)."""


@dataclass
class ModelOutput:
    """What every method's ``forward`` returns.

    Attributes:
        slots: ``[B, T, K, D]`` slot vectors after the corrector at each frame.
        masks: ``[B, T, K, h, w]`` soft masks (sum to 1 over ``K``) that the method's paper
            evaluates; ``h, w`` may be smaller than the video and are resized by the metrics.
        features: ``[B, T, N, D_in]`` the corrector's input tokens (for cycle losses etc.).
        reconstruction: ``[B, T, C, h', w']`` or ``[B, T, N, C]`` decoded target, if any.
        target: the tensor ``reconstruction`` is trained to match (same shape), if any.
        attention: ``[B, T, K, N]`` last corrector iteration's attention over inputs.
        extras: anything else a loss needs, under documented names.
    """

    slots: torch.Tensor
    masks: torch.Tensor
    features: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    target: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def detach(self) -> ModelOutput:
        """A copy whose tensors carry no autograd graph (to keep after the backward pass)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        values["extras"] = {k: v.detach() for k, v in self.extras.items()}
        return ModelOutput(**values)
