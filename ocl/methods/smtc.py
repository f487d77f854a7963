"""SMTC (Qian et al., "Semantics meets temporal correspondence", ICCV 2023): semantic and instance
slots on a fine-tuned DINO ViT, trained by an EMA teacher with no reconstruction.

Per frame: the ViT's last-block keys, fused with their correlation to the previous frame, feed
:class:`~ocl.modules.semantic_instance.SemanticInstanceAttention` (16 semantic slots, 4 instance
slots inside each semantic's area). The teacher is a frozen copy of the encoder at its initial
(DINO) weights plus an exponential moving average of the rest: the authors' update skips every
parameter whose name contains ``encoder``, so their teacher's ViT also stays at the DINO weights
it was copied with. Student and teacher see independent photometric augmentations of each clip.
Losses (``configs/loss/smtc.yaml``, all in :mod:`ocl.losses.smtc`) read the ``extras`` documented
there.

The student's encoder is frozen for ``encoder_frozen_steps``: ``encoder_freeze="zero_lr"`` is the
authors' way (it gets gradients and AdamW steps it at learning rate 0, so AdamW's moments fill
up and its weight decay does nothing), ``"no_grad"`` ocl's cheaper one (no gradient through the
ViT, so AdamW's state for it starts when it starts training).

Output: ``masks [B, T, S*I, h, w]`` are the instance masks (what SMTC's object discovery scores),
``slots [B, T, S*I, d]`` the instance slots, ``extras["semantic_masks"] [B, T, S, h, w]`` the
semantic masks (scored by ``configs/metrics/method/smtc.yaml``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from ocl.contracts.batch import VIDEO
from ocl.contracts.output import ModelOutput
from ocl.losses.smtc import INSTANCE_EMBEDDINGS, INSTANCE_SLOTS, SEMANTIC_LOGITS, SEMANTIC_SLOTS, TEACHER, TEACHER_KEYS
from ocl.methods.base import ObjectCentricMethod
from ocl.methods.encoder_weights import leave_out_frozen_encoder, put_back_frozen_encoder
from ocl.modules.augment import PhotometricAugmentation
from ocl.modules.ema import ExponentialMovingAverage
from ocl.modules.patch_features import PatchEncoder
from ocl.modules.semantic_instance import SemanticInstanceHead, SemanticInstanceOutput

SEMANTIC_MASKS = "semantic_masks"
"""``extras`` key of the soft semantic masks ``[B, T, S, h, w]`` (softmax over semantics)."""
ENCODER_FREEZES = ("zero_lr", "no_grad")
"""How the student's encoder is frozen for ``encoder_frozen_steps`` (see the module docs)."""


class SMTC(ObjectCentricMethod):
    """The SMTC student with its EMA teacher (see the module docs).

    Args:
        encoder: the student's ViT (``trainable=True``, DINO ViT-S/16 in SMTC); the teacher's
            encoder is a frozen copy of it made here.
        head: the student's :class:`~ocl.modules.semantic_instance.SemanticInstanceHead`; the
            teacher's is its exponential moving average.
        augmentation: photometric augmentation drawn independently for student and teacher in
            training (the same for all frames of a clip); None: none.
        ema_momentum: the teacher's momentum per optimiser step.
        encoder_frozen_steps: the student's encoder does not change before this training step.
        encoder_freeze: ``zero_lr`` (gradients, stepped at learning rate 0: the authors' code) or
            ``no_grad`` (no gradients: cheaper) during those steps.
        encoder_lr_scale: the encoder's learning rate relative to the rest afterwards.
        shared_instance_noise: draw the instance slots' initial noise once per clip and use it in
            every frame (so instance ``i`` of a semantic is comparable over time, which video-level
            evaluation needs); False draws it per frame, as the authors' code.
        **kwargs: :class:`ObjectCentricMethod` arguments (losses, optimizer, scheduler, eval_seed,
            eval_losses).
    """

    def __init__(
        self,
        encoder: PatchEncoder,
        head: SemanticInstanceHead,
        augmentation: PhotometricAugmentation | None = None,
        ema_momentum: float = 0.999,
        encoder_frozen_steps: int = 3000,
        encoder_freeze: str = "no_grad",
        encoder_lr_scale: float = 0.01,
        shared_instance_noise: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not encoder.trainable:
            raise ValueError("SMTC fine-tunes its encoder: set model.encoder.trainable=true")
        if encoder_freeze not in ENCODER_FREEZES:
            raise ValueError(f"unknown encoder_freeze {encoder_freeze!r}; known: {list(ENCODER_FREEZES)}")
        self.encoder = encoder
        self.teacher_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_encoder.trainable = False
        self.head = head
        self.teacher_head = ExponentialMovingAverage(head, ema_momentum)
        self.augmentation = augmentation
        self.encoder_frozen_steps = encoder_frozen_steps
        self.encoder_freeze = encoder_freeze
        self.encoder_lr_scale = encoder_lr_scale
        self.shared_instance_noise = shared_instance_noise

    def _noise(self, batch_size: int, num_frames: int, like: torch.Tensor) -> torch.Tensor:
        """Standard normal ``[B, T, S, I, d]`` for the instance slots' initialisation."""
        attention = self.head.attention
        shape = (attention.num_semantic, attention.num_instances, attention.mu.shape[1])
        draws = 1 if self.shared_instance_noise else num_frames
        noise = torch.randn(batch_size, draws, *shape, device=like.device, dtype=like.dtype)
        return noise.expand(batch_size, num_frames, *shape)

    def _augmented(self, video: torch.Tensor) -> torch.Tensor:
        return self.augmentation(video) if self.training and self.augmentation is not None else video

    def _run(
        self,
        encoder: PatchEncoder,
        head: torch.nn.Module,
        video: torch.Tensor,
        encoder_grad: bool,
        num_iterations: int | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int], SemanticInstanceOutput]:
        """``video [B, T, 3, H, W]`` -> (encoder keys ``[B, T, N, D]``, token grid, head output);
        ``encoder_grad`` False runs the encoder without autograd."""
        batch_size, num_frames = video.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_grad):
            encoded = encoder(video.flatten(0, 1))
        keys = encoded.keys.unflatten(0, (batch_size, num_frames))
        noise = self._noise(batch_size, num_frames, keys)
        return keys, encoded.grid, head(keys, encoded.grid, noise, num_iterations)

    def patch_encoder(self) -> PatchEncoder:
        return self.encoder

    def _encoder_frozen(self) -> bool:
        return self.global_step < self.encoder_frozen_steps

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        video = batch[VIDEO]
        encoder_grad = self.encoder_freeze == "zero_lr" or not self._encoder_frozen()
        _, grid, student = self._run(self.encoder, self.head, self._augmented(video), encoder_grad)
        slots = student.slots
        masks = slots.instance_masks().flatten(2, 3).unflatten(-1, grid)  # [B, T, S*I, h, w]
        output = ModelOutput(slots=slots.instance_slots.flatten(2, 3), masks=masks)
        output.extras.update(self._extras(student))
        output.extras[SEMANTIC_MASKS] = slots.semantic_logits.softmax(dim=2).unflatten(-1, grid)
        if self.training or self.eval_losses:
            with torch.no_grad():
                teacher_keys, _, teacher = self._run(
                    self.teacher_encoder, self.teacher_head, self._augmented(video), encoder_grad=False
                )
            output.extras.update({TEACHER + k: v for k, v in self._extras(teacher).items()})
            output.extras[TEACHER_KEYS] = teacher_keys
        return output

    @torch.no_grad()
    def instance_proposals(
        self, video: torch.Tensor, num_iterations: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's evaluation call of the authors' model (``forward`` without ``p_s``) on
        ``video [B, T, 3, H, W]`` in [0, 1], no augmentation: instance masks ``[B, T, S*I, h, w]``
        (:meth:`~ocl.modules.semantic_instance.SemanticInstanceSlots.instance_masks`) and their
        scores ``[B, T, S*I]``, the cosine between each instance slot and its semantic slot;
        ``num_iterations`` of slot attention (default: the training's)."""
        _, grid, student = self._run(self.encoder, self.head, video, encoder_grad=False, num_iterations=num_iterations)
        slots = student.slots
        return slots.instance_masks().flatten(2, 3).unflatten(-1, grid), slots.instance_similarity().flatten(2, 3)

    @staticmethod
    def _extras(output: SemanticInstanceOutput) -> dict[str, torch.Tensor]:
        slots = output.slots
        return {
            SEMANTIC_LOGITS: slots.semantic_logits,
            SEMANTIC_SLOTS: slots.semantic_slots,
            INSTANCE_SLOTS: slots.instance_slots,
            INSTANCE_EMBEDDINGS: output.embeddings,
        }

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Encoder and head, each split into weights (with weight decay) and biases / norm
        parameters (without), as the authors' ``get_params_groups``; the encoder's groups carry
        ``lr_scale = encoder_lr_scale`` and ``encoder: True``."""
        groups = []
        for module, scale in ((self.encoder, self.encoder_lr_scale), (self.head, 1.0)):
            trainable = [p for p in module.parameters() if p.requires_grad]
            tags = {"lr_scale": scale, "encoder": module is self.encoder}
            groups.append({"params": [p for p in trainable if p.ndim > 1], **tags})
            groups.append({"params": [p for p in trainable if p.ndim <= 1], **tags, "weight_decay": 0.0})
        return groups

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """The optimiser step, then the teacher's EMA update (:meth:`update_teacher`). With
        ``encoder_freeze="zero_lr"`` and the encoder still frozen, the encoder's groups step at
        learning rate 0 (their scheduled rate is put back afterwards).

        The update belongs to the step itself, not to ``on_train_batch_end``: Lightning runs the
        callbacks' ``on_train_batch_end`` (where checkpoints are written) before the module's, so a
        checkpoint would hold the teacher one update behind and a resumed run would differ."""
        groups = optimizer.param_groups
        at_zero_lr = self.encoder_freeze == "zero_lr" and self._encoder_frozen()
        frozen = [group for group in groups if group.get("encoder")] if at_zero_lr else []
        scheduled = [group["lr"] for group in frozen]
        for group in frozen:
            group["lr"] = 0.0
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in zip(frozen, scheduled, strict=True):
                group["lr"] = lr
        self.update_teacher()

    def update_teacher(self) -> None:
        """The teacher's EMA update: its head moves towards the student's (its encoder stays the
        frozen copy, as the authors' update skips every ``encoder`` parameter)."""
        self.teacher_head.update(self.head)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        leave_out_frozen_encoder(checkpoint, self.teacher_encoder, "teacher_encoder.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        put_back_frozen_encoder(checkpoint, self.teacher_encoder, "teacher_encoder.")
