"""Initial slots for the first frame."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ocl.modules.slot_growth import Split, split_slots


class LearnedInit(nn.Module):
    """Learned fixed slots: one parameter ``[K, d]`` initialised ``randn * d**-0.5``.

    ``num_active`` limits training to the first rows (a slot curriculum grows it,
    :class:`~ocl.callbacks.curriculum.SlotCurriculum`); evaluation always uses all ``K`` slots.
    It is a Python int (no device sync in ``forward``) saved in checkpoints as the module's
    extra state.
    """

    def __init__(self, num_slots: int, dim: int) -> None:
        super().__init__()
        self.slots = nn.Parameter(torch.randn(num_slots, dim) * dim**-0.5)
        self.num_slots = num_slots
        self.num_active = num_slots

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> ``[B, K_active, d]`` in training, ``[B, K, d]`` in evaluation."""
        slots = self.slots[: self.num_active] if self.training else self.slots
        return slots.unsqueeze(0).expand(batch_size, -1, -1)

    def activate(self, count: int) -> None:
        """Train the first ``count`` rows from now on (``1 <= count <= K``)."""
        if not 1 <= count <= self.num_slots:
            raise ValueError(f"cannot activate {count} of {self.num_slots} slots")
        self.num_active = count

    @torch.no_grad()
    def grow(
        self,
        errors: torch.Tensor,
        noise: torch.Tensor,
        noise_scale: float,
        over_all: bool = True,
        from_copy: bool = False,
        synchronise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> list[Split]:
        """Write one child per row of ``noise [num_new, d]`` into the rows after the active ones.

        The split rule is :func:`~ocl.modules.slot_growth.split_slots` (parents chosen by
        ``errors [num_active]``), computed on a CPU copy of the rows; ``synchronise`` maps the
        result before it is written (e.g. a DDP broadcast from rank 0). The new rows are not
        active yet: :meth:`activate` decides when they train. -> one
        :class:`~ocl.modules.slot_growth.Split` per parent that got children.
        """
        if self.num_active + noise.shape[0] > self.num_slots:
            raise ValueError(f"{noise.shape[0]} children do not fit after {self.num_active} of {self.num_slots} rows")
        rows = self.slots.detach().cpu().clone()
        splits = split_slots(rows, self.num_active, errors, noise, noise_scale, over_all, from_copy)
        rows = rows.to(self.slots)
        self.slots.copy_(synchronise(rows) if synchronise is not None else rows)
        return splits

    def get_extra_state(self) -> dict[str, int]:
        return {"num_active": self.num_active}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.num_active = int(state["num_active"])


MEAN_INITS = ("scaled_normal", "zeros", "normal")
STD_INITS = ("scaled", "uniform")


class GaussianInit(nn.Module):
    """Slots sampled per video from one Gaussian ``N(mu, sigma^2)`` shared by all slots.

    ``learn=True``: the sample is ``mu + sigma * eps`` (reparameterised), so ``mu`` and ``sigma``
    both train (VideoSAUR's ``RandomInit``; ``learn_sigma=False`` keeps ``sigma`` at its initial
    value). ``learn=False``: the draw passes no gradient, so ``mu`` and ``sigma`` stay at their
    initial values (SLASH's code samples with ``torch.normal``).

    Args:
        num_slots: ``K``.
        dim: slot dimension ``d``.
        mean_init: initial ``mu [d]``: ``scaled_normal`` (``randn * d**-0.5``, ocl's SAVi),
            ``zeros`` (VideoSAUR), ``normal`` (``randn``, SLASH).
        std_init: initial ``sigma [d]``: ``scaled`` (``d**-0.5``, VideoSAUR and SAVi) or
            ``uniform`` (``|U(0, 1)| + 1e-8``, SLASH's ``abs(rand) + eps``).
        learn: train ``mu`` and ``sigma`` through the reparameterised sample.
        learn_sigma: with ``learn``, whether ``sigma`` trains too.

    ``sigma`` is stored as ``log_sigma``.
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        mean_init: str = "scaled_normal",
        std_init: str = "scaled",
        learn: bool = True,
        learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        if mean_init not in MEAN_INITS:
            raise ValueError(f"unknown mean_init {mean_init!r}; choose one of {list(MEAN_INITS)}")
        if std_init not in STD_INITS:
            raise ValueError(f"unknown std_init {std_init!r}; choose one of {list(STD_INITS)}")
        mean = torch.zeros(1, 1, dim) if mean_init == "zeros" else torch.randn(1, 1, dim)
        self.mu = nn.Parameter(mean * dim**-0.5 if mean_init == "scaled_normal" else mean)
        if std_init == "uniform":
            log_sigma = (torch.rand(1, 1, dim).abs() + 1e-8).log()
        else:
            log_sigma = torch.full((1, 1, dim), -0.5 * math.log(dim))  # sigma = d ** -0.5
        self.log_sigma = nn.Parameter(log_sigma)
        self.mu.requires_grad_(learn)
        self.log_sigma.requires_grad_(learn and learn_sigma)
        self.learn = learn
        self.num_slots = num_slots

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> ``[B, K, d]``."""
        eps = torch.randn(batch_size, self.num_slots, self.mu.shape[-1], device=self.mu.device, dtype=self.mu.dtype)
        sample = self.mu + self.log_sigma.exp() * eps
        return sample if self.learn else sample.detach()
