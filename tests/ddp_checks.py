"""Callbacks that DDP tests add to a ``train.py`` run (``+callbacks.<name>._target_=ddp_checks.<Class>``,
with ``tests/`` on ``PYTHONPATH``); each prints one line per rank that the test counts."""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer


class TeacherAgreement(Callback):
    """At the end of training, every rank compares its EMA teacher (``pl_module.teacher_head``) with
    every other rank's and prints ``teacher identical on <world size> ranks`` when they all match."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.teacher_head.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        student = torch.cat([p.detach().flatten() for p in pl_module.head.parameters()])
        moved = not torch.equal(flat, student)  # the teacher lags the student: it is an average, not a copy
        if moved and all(torch.equal(flat, other) for other in gathered):
            print(f"teacher identical on {dist.get_world_size()} ranks", flush=True)
