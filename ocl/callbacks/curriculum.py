"""SlotCurri's reconstruction-guided slot curriculum, for any method with learned initial slots.

Training starts with a few of the learned slots and grows their number at given steps
(default counts ``[2, N//2, N]`` at ``[max_steps//10, max_steps//4]``). On the batch just before
a growth step, each active slot's reconstruction error is measured; the new slots go to the
parents in proportion to their error (floors first, the rest to the largest remainders), and
each child starts as its parent plus noise (:func:`split_slots`). Parents keep their values and
the optimiser state is untouched. Evaluation always uses all ``N`` slots
(:class:`~ocl.modules.initialisers.LearnedInit`).

Differences from the authors' code (METHODS.md, "Decision"): the nearest neighbour and mean
norm use the active slots (``neighbours_over_all_slots=True`` reproduces the code); errors are
all-reduced over DDP ranks and the split is seeded and broadcast from rank 0, so every rank
holds the same slots; the measured errors are callback state saved in checkpoints, so a run
resumed between the measurement and the split splits exactly as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ocl.methods.output import ModelOutput
from ocl.modules.initialisers import LearnedInit

log = logging.getLogger(__name__)


def per_slot_error_sums(output: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum over batch and positions of e * mask_s  [K], number of (batch, position) terms)``.

    ``e`` is the squared reconstruction error averaged over channels at each position;
    ``mask_s`` the decoder's mask of slot ``s``. Reconstructions are tokens ``[B, T, N, D]`` or
    frames ``[B, T, C, h, w]`` (masks ``[B, T, K, h, w]`` on the same positions).
    """
    if output.reconstruction is None or output.target is None:
        raise ValueError("the slot curriculum needs a method whose output has 'reconstruction' and 'target'")
    squared = (output.reconstruction.float() - output.target.float()).square()
    error = squared.mean(dim=-1) if squared.ndim == 4 else squared.mean(dim=2).flatten(2)  # [B, T, P]
    masks = output.masks.float().flatten(3)  # [B, T, K, P]
    if masks.shape[-1] != error.shape[-1]:
        raise ValueError(f"masks cover {masks.shape[-1]} positions, the reconstruction {error.shape[-1]}")
    sums = torch.einsum("btp,btkp->k", error, masks)
    return sums, torch.tensor(float(error.numel()), device=sums.device)


def allocate_children(errors: torch.Tensor, num_new: int) -> list[int]:
    """Children per parent, proportional to ``errors [K_active]``: floors, then the largest
    remainders (ties to the lower index). All-zero errors share equally."""
    errors = errors.double().clamp_min(0)
    shares = errors / errors.sum() if errors.sum() > 0 else torch.full_like(errors, 1 / errors.numel())
    quotas = shares * num_new
    counts = quotas.floor().long()
    remainders = quotas - counts
    order = sorted(range(len(counts)), key=lambda i: (-float(remainders[i]), i))
    for index in order[: num_new - int(counts.sum())]:
        counts[index] += 1
    return counts.tolist()


def noise_scales(slots: torch.Tensor, num_active: int, noise_scale: float, over_all: bool) -> torch.Tensor:
    """``sigma`` per active slot: ``noise_scale * ||p - nn(p)|| * ||p|| / mean slot norm``.

    ``nn(p)`` is the most cosine-similar other slot; it and the mean norm are taken over the
    active slots, or over all rows of ``slots [N, d]`` with ``over_all``.
    """
    pool = slots if over_all else slots[:num_active]
    parents = slots[:num_active]
    similarity = F.normalize(parents, dim=-1) @ F.normalize(pool, dim=-1).T
    similarity[torch.arange(num_active), torch.arange(num_active)] = float("-inf")
    nearest = pool[similarity.argmax(dim=1)]
    return noise_scale * (parents - nearest).norm(dim=-1) * parents.norm(dim=-1) / pool.norm(dim=-1).mean()


@dataclass
class Split:
    """One parent's share of a growth: its children's rows and its share of the error."""

    step: int
    parent: int
    children: list[int]
    error_share: float


def split_slots(
    slots: torch.Tensor,
    num_active: int,
    errors: torch.Tensor,
    num_new: int,
    noise_scale: float,
    generator: torch.Generator,
    over_all: bool = False,
) -> list[tuple[int, list[int], float]]:
    """Write ``num_new`` children into rows ``num_active..`` of ``slots [N, d]`` (in place).

    Child = parent + sigma_parent * u, ``u`` a random unit vector from ``generator``.
    -> ``(parent, child rows, error share)`` per parent that got children.
    """
    counts = allocate_children(errors, num_new)
    sigmas = noise_scales(slots, num_active, noise_scale, over_all)
    total = float(errors.sum()) or 1.0
    row, splits = num_active, []
    for parent, count in enumerate(counts):
        children = list(range(row, row + count))
        for child in children:
            direction = torch.randn(slots.shape[1], generator=generator, dtype=torch.float64)
            slots[child] = slots[parent] + sigmas[parent] * (direction / direction.norm()).to(slots)
        row += count
        if children:
            splits.append((parent, children, float(errors[parent]) / total))
    return splits


class SlotCurriculum(pl.Callback):
    """Grow the number of active learned slots during training (see the module docs).

    Args:
        stages: active slot counts, ending at the initialiser's ``N``; ``None``: ``[2, N//2, N]``.
            Equal neighbours are allowed (no growth at that step, e.g. ``[2, 2, 5]`` for N = 5).
        growth_steps: the optimiser steps at which each next stage starts (one fewer than
            ``stages``); ``None``: ``[max_steps//10, max_steps//4]``.
        noise_scale: the 0.2 of the split rule.
        neighbours_over_all_slots: nearest neighbour and mean norm over all ``N`` rows (the
            authors' code) instead of the active ones.
        seed: seed of the split noise (growth ``g`` uses ``seed * 1_000_003 + g``).
    """

    def __init__(
        self,
        stages: Sequence[int] | None = None,
        growth_steps: Sequence[int] | None = None,
        noise_scale: float = 0.2,
        neighbours_over_all_slots: bool = False,
        seed: int = 0,
    ) -> None:
        self.requested_stages = None if stages is None else list(stages)
        self.requested_growth_steps = None if growth_steps is None else list(growth_steps)
        self.noise_scale = noise_scale
        self.neighbours_over_all_slots = neighbours_over_all_slots
        self.seed = seed
        self.stages: list[int] = []
        self.growth_steps: list[int] = []
        self.pending_errors: torch.Tensor | None = None
        self.history: list[Split] = []

    @staticmethod
    def initialiser(pl_module: pl.LightningModule) -> LearnedInit:
        initialiser = getattr(getattr(pl_module, "processor", None), "initialiser", None)
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
        if len(self.growth_steps) != len(self.stages) - 1 or any(
            a >= b for a, b in itertools.pairwise([0, *self.growth_steps])
        ):
            raise ValueError(f"growth steps {self.growth_steps} must be {len(self.stages) - 1} increasing steps > 0")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:  # a fresh run; a resumed one restored num_active from its checkpoint
            self.initialiser(pl_module).num_active = self.stages[0]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if self.pending_errors is not None:
            self._grow(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        initialiser = self.initialiser(pl_module)
        pl_module.log("curriculum/active_slots", float(initialiser.num_active), batch_size=1)
        if (
            trainer.global_step in self.growth_steps
            and self.pending_errors is None
            and self._next_stage(trainer) > initialiser.num_active
        ):
            sums, count = per_slot_error_sums(outputs["output"])
            sums, count = (
                trainer.strategy.reduce(sums, reduce_op="sum"),
                trainer.strategy.reduce(count, reduce_op="sum"),
            )
            self.pending_errors = (sums / count).cpu()

    def _next_stage(self, trainer: pl.Trainer) -> int:
        """The active slot count from growth step ``trainer.global_step`` on."""
        return self.stages[self.growth_steps.index(trainer.global_step) + 1]

    def _grow(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        initialiser = self.initialiser(pl_module)
        growth = self.growth_steps.index(trainer.global_step)
        num_active, target = initialiser.num_active, self._next_stage(trainer)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + growth)
        with torch.no_grad():
            slots = initialiser.slots.detach().cpu().double()
            splits = split_slots(
                slots,
                num_active,
                self.pending_errors,
                target - num_active,
                self.noise_scale,
                generator,
                self.neighbours_over_all_slots,
            )
            grown = trainer.strategy.broadcast(slots.to(initialiser.slots), src=0)
            initialiser.slots.copy_(grown)
        initialiser.num_active = target
        self.pending_errors = None
        for parent, children, share in splits:
            self.history.append(Split(trainer.global_step, parent, children, share))
            log.info(
                "step %d: slot %d (%.1f%% of the error) -> children %s",
                trainer.global_step,
                parent,
                100 * share,
                children,
            )
        log.info("step %d: %d -> %d active slots", trainer.global_step, num_active, target)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check that every DDP rank ends with the same initial slots (raise if not)."""
        if trainer.world_size == 1:
            return
        slots = trainer.strategy.all_gather(self.initialiser(pl_module).slots.detach())  # [world, N, d]
        if not all(torch.equal(slots[0], other) for other in slots[1:]):
            raise RuntimeError("the learned initial slots differ between DDP ranks after the curriculum")
        log.info("initial slots identical on %d ranks", trainer.world_size)

    def state_dict(self) -> dict[str, Any]:
        return {"pending_errors": self.pending_errors, "history": [asdict(split) for split in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending_errors = state_dict["pending_errors"]
        self.history = [Split(**split) for split in state_dict["history"]]
