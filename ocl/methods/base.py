"""The Lightning module every method extends.

A method only implements :meth:`ObjectCentricMethod.forward` (batch -> :class:`ModelOutput`);
losses, optimisation, logging, deterministic evaluation and exact resumption live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ocl.contracts.batch import num_items
from ocl.contracts.output import ModelOutput
from ocl.data.sampling import global_batch_index
from ocl.losses.base import LossTerm
from ocl.modules.patch_features import PatchEncoder
from ocl.utils.rng import capture_rng_state, restore_rng_state, seeded

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; no optimiser step is taken."""


class ObjectCentricMethod(pl.LightningModule, ABC):
    """Shared training logic.

    Args:
        losses: named loss terms; the total loss is ``sum(weight * term)``. Terms with weight
            0 are dropped so they cost nothing.
        optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: factory ``optimizer -> LRScheduler`` stepped every optimiser step, or None.
        eval_seed: seed of the random stream used inside validation/test steps (evaluations
            of the same weights always give the same numbers).
        eval_losses: compute and log ``{stage}/loss`` in validation and test (False: only the
            metrics, for methods whose losses are costly on whole videos, e.g. SMTC's frame pairs).
    """

    def __init__(
        self,
        losses: Mapping[str, LossTerm],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        eval_seed: int = 0,
        eval_losses: bool = True,
    ) -> None:
        super().__init__()
        active = {name: term for name, term in losses.items() if term.weight != 0}
        if not active:
            raise ValueError(f"all loss terms have weight 0: {sorted(losses)}; set at least one loss.<name>.weight")
        self.losses = nn.ModuleDict(active)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.eval_seed = eval_seed
        self.eval_losses = eval_losses

    def slot_initialiser(self) -> nn.Module | None:
        """The module giving the first frame's initial slots (what a slot curriculum grows), or
        None for a method without one."""
        return None

    def uses_cyclic_inference(self) -> bool:
        """Whether evaluation runs backward over the whole video (then it cannot run in chunks)."""
        return False

    def patch_encoder(self) -> PatchEncoder | None:
        """The ViT (or stand-in) whose patch tokens the method groups (what label propagation
        evaluates), or None for a method without one."""
        return None

    @abstractmethod
    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Run the method on a batch (see :mod:`ocl.contracts.batch`)."""

    def frozen_feature_fingerprint(self) -> dict[str, Any] | None:
        """What a frozen-feature cache (``data.feature_cache``, :mod:`ocl.data.feature_cache`) must
        match to stand in for this method's frozen encoder: ``{"encoder", "resolution", "keys"}``;
        None (the default): the method has no frozen encoder a cache could replace."""
        return None

    def compute_losses(
        self, output: ModelOutput, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (weighted total, unweighted value of each term)."""
        terms = {name: term(output, batch) for name, term in self.losses.items()}
        total = sum(self.losses[name].weight * value for name, value in terms.items())
        return total, terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """-> ``{"loss": total, "output": ModelOutput (detached)}``; callbacks (e.g. the slot
        curriculum) read the output in ``on_train_batch_end``."""
        output = self(batch)
        total, terms = self.compute_losses(output, batch)
        # Decided on all DDP ranks together, so that no rank steps while another one stops.
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(total)), all=True):
            values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} (rank {self.global_rank}: {values}); stopped "
                "before the optimiser step, so the checkpoints already written are intact.\n"
                "  To continue from the last one at a lower learning rate: the same command with\n"
                "  ckpt_path=<run folder>/checkpoints/<checkpoint> model.optimizer.lr=<lower> resume.reset_schedule=true"
            )
        # Losses are averaged over DDP ranks (equal batches: the loss of the global batch, as on one process).
        batch_size = num_items(batch)
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size, sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/loss/{name}", value, batch_size=batch_size, sync_dist=True)
        return {"loss": total, "output": output.detach()}

    def _evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> dict[str, Any]:
        # The seed of the one-process batch: under DDP each rank evaluates whole batches in turn.
        trainer = self._trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        with seeded(self.eval_seed + global_batch_index(batch_idx, rank, world_size)):
            output = self(batch)
        if not self.eval_losses:
            return {"output": output}
        total, _ = self.compute_losses(output, batch)
        self.log(f"{stage}/loss", total, batch_size=num_items(batch), sync_dist=True)
        return {"loss": total, "output": output}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._evaluation_step(batch, batch_idx, "test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: one group of every trainable parameter. A group may
        carry ``lr_scale`` (its learning rate is the configured one times it, through the schedule)
        and any option of the optimiser (e.g. ``weight_decay``)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ocl_rng_state"] = capture_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "ocl_rng_state" in checkpoint:
            restore_rng_state(checkpoint["ocl_rng_state"])
