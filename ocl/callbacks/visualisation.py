"""Mask overlays of the first validation videos, written as animated GIFs and logged to W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ocl.contracts.batch import VIDEO


def slot_palette(num_slots: int) -> torch.Tensor:
    """``[K, 3]`` distinct colours in [0, 1] (evenly spaced hues)."""
    hues = torch.arange(num_slots, dtype=torch.float32) / max(num_slots, 1)
    k = (torch.tensor([5.0, 3.0, 1.0]) + hues[:, None] * 6.0) % 6.0
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0) * 0.85


def slot_boundaries(slot_ids: torch.Tensor) -> torch.Tensor:
    """bool ``[..., H, W]``: pixels whose slot differs from the slot of the pixel to their right or below.

    Args:
        slot_ids: integer ``[..., H, W]``.
    """
    edges = torch.zeros_like(slot_ids, dtype=torch.bool)
    edges[..., :, :-1] |= slot_ids[..., :, 1:] != slot_ids[..., :, :-1]
    edges[..., :-1, :] |= slot_ids[..., 1:, :] != slot_ids[..., :-1, :]
    return edges


def colour_slots(
    frames: torch.Tensor, slot_ids: torch.Tensor, num_slots: int, alpha: float = 0.5, boundaries: bool = True
) -> torch.Tensor:
    """Show the frames under their slots' colours: ``(1 - alpha) * frame + alpha * slot_palette(num_slots)[id]``,
    and, with ``boundaries``, each slot's outline (:func:`slot_boundaries`) in its colour, opaque.

    Args:
        frames: float ``[..., 3, H, W]`` in [0, 1].
        slot_ids: int64 ``[..., H, W]`` in ``0..num_slots-1``.
    Returns:
        float ``[..., 3, H, W]``.
    """
    colours = slot_palette(num_slots).to(frames.device)[slot_ids].movedim(-1, -3)  # [..., 3, H, W]
    blended = (1 - alpha) * frames + alpha * colours
    if not boundaries:
        return blended
    return torch.where(slot_boundaries(slot_ids).unsqueeze(-3), colours, blended)


def render_overlay(
    video: torch.Tensor, masks: torch.Tensor, alpha: float = 0.5, max_slot_panels: int | None = None
) -> torch.Tensor:
    """Panels per frame: input | argmax overlay (the frame under the slot colours, outlines drawn;
    :func:`colour_slots`) | each slot's soft mask times the frame.

    Args:
        video: ``[B, T, 3, H, W]`` in [0, 1].
        masks: ``[B, T, K, h, w]`` soft masks.
        alpha: overlay opacity.
        max_slot_panels: show at most this many slot panels: the slots with the largest total mask
            over the shown videos, largest first (SMTC has 64 instance masks); None: all, in order.
            The overlay always colours every slot.
    Returns:
        uint8 ``[T, B * H, (P + 2) * W, 3]`` (``P`` slot panels): one image per frame, videos stacked vertically.
    """
    batch, frames, _, height, width = video.shape
    num_slots = masks.shape[2]
    soft = F.interpolate(masks.flatten(0, 1).float(), size=(height, width), mode="bilinear", align_corners=False)
    soft = soft.unflatten(0, (batch, frames))  # [B, T, K, H, W]
    overlay = colour_slots(video, soft.argmax(dim=2), num_slots, alpha)
    shown = soft
    if max_slot_panels is not None and max_slot_panels < num_slots:
        largest = soft.sum(dim=(0, 1, 3, 4)).topk(max_slot_panels).indices
        shown = soft[:, :, largest]
    per_slot = shown.unsqueeze(3) * video.unsqueeze(2)  # [B, T, P, 3, H, W]
    panels = torch.cat([video.unsqueeze(2), overlay.unsqueeze(2), per_slot], dim=2)  # [B, T, P+2, 3, H, W]
    grid = panels.permute(1, 0, 4, 2, 5, 3).reshape(frames, batch * height, (shown.shape[2] + 2) * width, 3)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8)


def write_gif(frames: torch.Tensor, path: Path, fps: float = 4.0, scale: int = 2) -> Path:
    """Write uint8 ``[T, H, W, 3]`` frames as a looping GIF (nearest-neighbour upscaled)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = frames.cpu().numpy()
    if scale > 1:
        array = np.repeat(np.repeat(array, scale, axis=1), scale, axis=2)
    images = [Image.fromarray(frame) for frame in array]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


class MaskOverlayVideo(pl.Callback):
    """After each validation, render the first ``num_videos`` validation videos with their masks.

    The GIF goes to ``<output_dir>/visualisations/<stage>_step<global_step>.gif`` and, when the
    trainer logs to W&B, to the run as ``<stage>/mask_overlay``. At most ``max_slot_panels`` slot
    panels are drawn (the largest slots; see :func:`render_overlay`).
    """

    def __init__(self, output_dir: str, num_videos: int = 2, fps: float = 4.0, max_slot_panels: int = 16) -> None:
        self.output_dir = Path(output_dir)
        self.num_videos = num_videos
        self.fps = fps
        self.max_slot_panels = max_slot_panels
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _capture(self, trainer: pl.Trainer, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        if batch_idx == 0 and not trainer.sanity_checking and isinstance(outputs, dict) and "output" in outputs:
            n = self.num_videos
            self._pending = (batch[VIDEO][:n].detach().cpu(), outputs["output"].masks[:n].detach().float().cpu())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._capture(trainer, outputs, batch, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._capture(trainer, outputs, batch, batch_idx)

    def _flush(self, trainer: pl.Trainer, stage: str) -> None:
        if self._pending is None or not trainer.is_global_zero:
            self._pending = None
            return
        video, masks = self._pending
        self._pending = None
        path = write_gif(
            render_overlay(video, masks, max_slot_panels=self.max_slot_panels),
            self.output_dir / "visualisations" / f"{stage}_step{trainer.global_step:06d}.gif",
            self.fps,
        )
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                # Through the logger, as Lightning logs the metrics: under ``trainer/global_step``,
                # not W&B's own step (which counts log calls, so ``step=global_step`` would lie
                # behind it and W&B would drop the video).
                import wandb

                logger.log_metrics({f"{stage}/mask_overlay": wandb.Video(str(path), format="gif")}, trainer.global_step)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._flush(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._flush(trainer, "test")
