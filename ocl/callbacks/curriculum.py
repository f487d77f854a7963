"""SlotCurri's reconstruction-guided slot curriculum, for any method with learned initial slots.

Training starts with a few of the learned slots and grows their number at given steps
(default counts ``[2, N//2, N]`` at ``[max_steps//10, max_steps//4]``). On the batch just before
a growth step ``h``, each active slot's reconstruction error is measured; at step ``h``, before
its forward pass, the new slots go to the parents in proportion to their error (floors first,
the rest to the largest remainders) and each child is written as its parent plus noise
(:func:`~ocl.modules.slot_growth.split_slots`, applied by :meth:`~ocl.modules.initialisers.LearnedInit.grow`), but step ``h`` still trains the old count: the children first train at
step ``h + 1``, as in the authors' code. Parents keep their values and the optimiser state is
untouched. Evaluation always uses all ``N`` slots (:class:`~ocl.modules.initialisers.LearnedInit`).

As the authors' code by default: the nearest neighbour and the mean norm are taken over all
``N`` rows, untrained ones included (``neighbours_over_all_slots=False``: the active slots only),
and the children are written in place while later parents of the same growth are still read
(``split_from_copy=True``: every parent uses the rows as they were before the growth).
Differences that change nothing on one process: errors are all-reduced over DDP ranks and the
split is seeded and broadcast from rank 0, so every rank holds the same slots; the measured
errors are callback state saved in checkpoints, so a run resumed between the measurement and
the split splits exactly as an uninterrupted one. With ``trainer.accumulate_grad_batches > 1``
the error is summed over all micro-batches of the step before the growth (the step's whole
batch) and the split happens once, before the first micro-batch of step ``h``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import torch

from ocl.contracts.output import ModelOutput
from ocl.modules.initialisers import LearnedInit
from ocl.utils.precision import at_least_float32

log = logging.getLogger(__name__)


def per_slot_error_sums(output: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum over batch and positions of e * mask_s  [K], number of (batch, position) terms)``.

    ``e`` is the squared reconstruction error averaged over channels at each position;
    ``mask_s`` the decoder's mask of slot ``s``. Reconstructions are tokens ``[B, T, N, D]`` or
    frames ``[B, T, C, h, w]`` (masks ``[B, T, K, h, w]`` on the same positions). Half precision
    is upcast to float32; float64 stays float64.
    """
    if output.reconstruction is None or output.target is None:
        raise ValueError("the slot curriculum needs a method whose output has 'reconstruction' and 'target'")
    squared = (at_least_float32(output.reconstruction) - at_least_float32(output.target)).square()
    error = squared.mean(dim=-1) if squared.ndim == 4 else squared.mean(dim=2).flatten(2)  # [B, T, P]
    masks = at_least_float32(output.masks).flatten(3)  # [B, T, K, P]
    if masks.shape[-1] != error.shape[-1]:
        raise ValueError(f"masks cover {masks.shape[-1]} positions, the reconstruction {error.shape[-1]}")
    sums = torch.einsum("btp,btkp->k", error, masks.to(error.dtype))
    return sums, torch.tensor(float(error.numel()), dtype=sums.dtype, device=sums.device)


class SlotCurriculum(pl.Callback):
    """Grow the number of active learned slots during training (see the module docs).

    Args:
        stages: active slot counts, ending at the initialiser's ``N``; ``None``: ``[2, N//2, N]``.
            Equal neighbours are allowed (no growth at that step, e.g. ``[2, 2, 5]`` for N = 5).
        growth_steps: the optimiser steps at which each next stage's slots are split off (one
            fewer than ``stages``, at least 2 apart); they first train one step later.
            ``None``: ``[max_steps//10, max_steps//4]``.
        noise_scale: the 0.2 of the split rule.
        neighbours_over_all_slots: nearest neighbour and mean norm over all ``N`` rows (the
            authors' code); ``False``: over the active slots.
        split_from_copy: every parent of a growth reads the rows as they were before it;
            ``False``: rows already written for earlier parents are read (the authors' code).
        seed: seed of the split noise (growth ``g`` uses ``seed * 1_000_003 + g``).
    """

    def __init__(
        self,
        stages: Sequence[int] | None = None,
        growth_steps: Sequence[int] | None = None,
        noise_scale: float = 0.2,
        neighbours_over_all_slots: bool = True,
        split_from_copy: bool = False,
        seed: int = 0,
    ) -> None:
        self.requested_stages = None if stages is None else list(stages)
        self.requested_growth_steps = None if growth_steps is None else list(growth_steps)
        self.noise_scale = noise_scale
        self.neighbours_over_all_slots = neighbours_over_all_slots
        self.split_from_copy = split_from_copy
        self.seed = seed
        self.stages: list[int] = []
        self.growth_steps: list[int] = []
        self.pending_errors: torch.Tensor | None = None
        self._error_sums: tuple[torch.Tensor, torch.Tensor] | None = None  # (sums [K], count) of this step so far
        self._batch_step = 0  # the optimiser step the current (micro-)batch trains
        self.history: list[dict[str, Any]] = []

    @staticmethod
    def initialiser(pl_module: pl.LightningModule) -> LearnedInit:
        """The method's learned initial slots (:meth:`~ocl.methods.base.ObjectCentricMethod.slot_initialiser`)."""
        initialiser = pl_module.slot_initialiser()
        if not isinstance(initialiser, LearnedInit):
            raise TypeError(
                "the slot curriculum needs learned initial slots: set "
                "model.processor.initialiser._target_=ocl.modules.initialisers.LearnedInit"
            )
        return initialiser

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        total = self.initialiser(pl_module).num_slots
        self.stages = self.requested_stages or [2, total // 2, total]
        if self.stages[-1] != total or self.stages[0] < 1 or any(a > b for a, b in itertools.pairwise(self.stages)):
            raise ValueError(f"curriculum stages {self.stages} must not decrease, from >= 1 to the {total} slots")
        if trainer.fast_dev_run:  # one batch: nothing to grow
            self.growth_steps = []
            return
        self.growth_steps = self.requested_growth_steps or [trainer.max_steps // 10, trainer.max_steps // 4]
        # each growth is measured on the step before it, which must still run the previous stage
        if len(self.growth_steps) != len(self.stages) - 1 or any(
            b - a < 2 for a, b in itertools.pairwise([-1, *self.growth_steps])
        ):
            raise ValueError(
                f"growth steps {self.growth_steps} must be {len(self.stages) - 1} steps >= 1, at least 2 apart"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:  # a fresh run; a resumed one restored num_active from its checkpoint
            self.initialiser(pl_module).activate(self.stages[0])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        """Split before the first (micro-)batch of a growth step; remember which step this batch trains."""
        self._batch_step = trainer.global_step
        if self.pending_errors is not None:
            self._split(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Measure the errors on every (micro-)batch of the step before a growth; activate the
        children once the growth step's optimiser step is done."""
        initialiser = self.initialiser(pl_module)
        pl_module.log("curriculum/active_slots", float(initialiser.num_active), batch_size=1)
        step = self._batch_step
        stepped = trainer.global_step > step  # this batch ended an optimiser step (its last micro-batch)
        if stepped and step in self.growth_steps:  # the children split off before this step train from the next
            initialiser.activate(self.stages[self.growth_steps.index(step) + 1])
        if step + 1 in self.growth_steps and self._stage_after(step + 1) > initialiser.num_active:
            sums, count = per_slot_error_sums(outputs["output"])
            if self._error_sums is not None:
                sums, count = sums + self._error_sums[0], count + self._error_sums[1]
            self._error_sums = (sums, count)
        if stepped and self._error_sums is not None:
            sums, count = (trainer.strategy.reduce(total, reduce_op="sum") for total in self._error_sums)
            self.pending_errors = (sums / count).cpu()
            self._error_sums = None

    def _stage_after(self, growth_step: int) -> int:
        """The stage split off at ``growth_step``."""
        return self.stages[self.growth_steps.index(growth_step) + 1]

    def noise(self, growth: int, num_new: int, dim: int) -> torch.Tensor:
        """``[num_new, dim]`` standard-normal rows, one per child of growth ``growth`` (seeded)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + growth)
        return torch.randn(num_new, dim, generator=generator, dtype=torch.float64)

    def _split(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the children of growth step ``trainer.global_step`` (before its forward pass)."""
        initialiser = self.initialiser(pl_module)
        growth = self.growth_steps.index(trainer.global_step)
        num_active, target = initialiser.num_active, self._stage_after(trainer.global_step)
        splits = initialiser.grow(
            self.pending_errors,
            self.noise(growth, target - num_active, initialiser.slots.shape[1]),
            self.noise_scale,
            self.neighbours_over_all_slots,
            self.split_from_copy,
            synchronise=lambda rows: trainer.strategy.broadcast(rows, src=0),
        )
        self.pending_errors = None
        for split in splits:
            self.history.append({"step": trainer.global_step, **asdict(split)})
            log.info(
                "step %d: slot %d (%.1f%% of the error) -> children %s (sigma %.3g)",
                trainer.global_step,
                split.parent,
                100 * split.error_share,
                split.children,
                split.sigma,
            )
        step = trainer.global_step
        log.info("step %d: %d -> %d slots (the new ones train from step %d)", step, num_active, target, step + 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check that every DDP rank ends with the same initial slots (raise if not)."""
        if trainer.world_size == 1:
            return
        slots = trainer.strategy.all_gather(self.initialiser(pl_module).slots.detach())  # [world, N, d]
        if not all(torch.equal(slots[0], other) for other in slots[1:]):
            raise RuntimeError("the learned initial slots differ between DDP ranks after the curriculum")
        log.info("initial slots identical on %d ranks", trainer.world_size)

    def state_dict(self) -> dict[str, Any]:
        return {"pending_errors": self.pending_errors, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending_errors = state_dict["pending_errors"]
        self.history = list(state_dict["history"])
