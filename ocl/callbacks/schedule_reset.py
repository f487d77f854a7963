"""``resume.reset_schedule=true``: a resumed run takes its optimiser settings and learning-rate
schedule from its own config, not from the checkpoint.

A checkpoint restores the optimiser's hyper-parameters (its learning rate included) and the
scheduler's state (its base learning rates and the parameters of its schedule), so
``model.optimizer.lr=1e-4`` given when resuming a run that diverged at a large learning rate
would change nothing. With this callback the run continues with the weights, the optimiser's
moments and the step of the checkpoint, and with the learning rate the new config's schedule
gives at that step.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


def _configured(pl_module: pl.LightningModule) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser and scheduler (None without one) that ``pl_module.configure_optimizers()``
    builds from the run's config: an optimiser, or ``{"optimizer": ..., "lr_scheduler": {"scheduler": ...}}``."""
    configured = pl_module.configure_optimizers()
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None
    return configured["optimizer"], configured.get("lr_scheduler", {}).get("scheduler")


class ScheduleReset(pl.Callback):
    """At the start of a resumed fit: the optimiser's hyper-parameters (``lr``, ``weight_decay``,
    ...) are the config's, and the scheduler is the config's, stepped to the resumed step.

    For schedules that are functions of the step (``LambdaLR``: all of ``ocl.utils.schedules``):
    at step ``s`` the learning rate is the config's base rate times its schedule's factor at ``s``,
    as in a run trained with the new config from the start.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fresh_optimizer, fresh_scheduler = _configured(pl_module)
        (optimizer,) = trainer.optimizers
        for group, fresh in zip(optimizer.param_groups, fresh_optimizer.param_groups, strict=True):
            group.update({key: value for key, value in fresh.items() if key != "params"})
        if fresh_scheduler is None:
            return
        (config,) = trainer.lr_scheduler_configs
        state = fresh_scheduler.state_dict()
        # One step from the step before the resumed one sets the optimiser's rates for that step;
        # the step count is kept so that the scheduler does not take this for its first step.
        state.update(last_epoch=trainer.global_step - 1, _step_count=config.scheduler.state_dict()["_step_count"])
        config.scheduler.load_state_dict(state)
        config.scheduler.step()
