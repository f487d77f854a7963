"""A trained model rebuilt from its checkpoint, run over a video in chunks that carry the slots over.

A chunk continues from the last slots of the chunk before it (the ``previous_slots`` argument of
the methods' ``forward``, see :class:`~ocl.modules.video.VideoSlotProcessor`), so slot ``k``
follows the same object through a video of any length while only one chunk is in memory, and
the masks equal those of one pass over the whole video.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ocl.build import UsageError, build_model, replayed_overrides
from ocl.contracts.batch import VIDEO
from ocl.contracts.output import ModelOutput
from ocl.methods.base import ObjectCentricMethod
from ocl.utils.rng import capture_rng_state, restore_rng_state, seeded

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository (``configs/`` and the entry points); relative paths in the notebook start here."""
CONFIG_DIR = REPO_ROOT / "configs"


class ChunkingError(UsageError):
    """A video cannot run in chunks with this model; the message says what to set instead."""


def compose_run_config(
    ckpt_path: str | Path, overrides: Sequence[str] = (), config_name: str = "predict"
) -> DictConfig:
    """The config ``python predict.py ckpt_path=<ckpt> <overrides>`` runs, for use outside a Hydra app
    (a notebook): the training overrides stored in the checkpoint, then ``overrides``.

    Raises :class:`~ocl.utils.checkpoints.CheckpointError` (checkpoint missing, unreadable or not
    written by ``train.py``) with a message that names the file.
    """
    path = Path(ckpt_path).expanduser().resolve()
    stored = replayed_overrides(str(path), list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[*stored, *overrides])
    cfg.ckpt_path = str(path)  # set after composing: a path needs no quoting this way
    return cfg


def load_trained_model(cfg: DictConfig, device: str | torch.device = "cpu") -> ObjectCentricMethod:
    """``cfg.model`` with the weights of ``cfg.ckpt_path``, in evaluation mode on ``device``.

    The checkpoint goes through the method's ``on_load_checkpoint`` first, as in Lightning (it
    restores e.g. frozen encoder weights left out of the file); the global random state that
    hook restores for resumed training is put back as it was.
    """
    model = build_model(cfg)
    checkpoint = torch.load(Path(cfg.ckpt_path).expanduser(), map_location="cpu", weights_only=False)
    random_state = capture_rng_state()
    model.on_load_checkpoint(checkpoint)
    restore_rng_state(random_state)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def resolve_device(name: str) -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def carries_slots(model: ObjectCentricMethod) -> bool:
    """Whether ``model.forward`` can continue a video from previous slots (takes ``previous_slots``)."""
    return "previous_slots" in inspect.signature(model.forward).parameters


def check_chunking(model: ObjectCentricMethod, num_frames: int, chunk_size: int) -> None:
    """Raise :class:`ChunkingError` if ``model`` cannot run ``num_frames`` frames in chunks of ``chunk_size``."""
    if chunk_size < 1:
        raise ChunkingError(f"chunk_size must be >= 1 frame, got {chunk_size}")
    if num_frames <= chunk_size:
        return
    whole = f"set chunk_size={num_frames} to run the whole video at once (memory grows with its length)"
    if not carries_slots(model):
        raise ChunkingError(
            f"{type(model).__name__} cannot continue a video from previous slots (its forward takes no "
            f"previous_slots), so its {num_frames} frames cannot run in chunks of {chunk_size}: {whole}"
        )
    if model.uses_cyclic_inference():
        raise ChunkingError(
            "the model uses cyclic inference (model.cyclic_inference=true), which runs backward over the whole "
            f"video and cannot run in chunks: set model.cyclic_inference=false, or {whole}"
        )


class SlotTracker:
    """Runs ``model`` on consecutive chunks of one video; each chunk continues from the previous one's slots.

    Every call runs without gradients under ``seeded(model.eval_seed)``, the seed of the first
    validation batch in ``eval.py``: random initial slots are drawn (in the first chunk) as there.
    A second call needs a model that :func:`carries_slots` (see :func:`check_chunking`).
    """

    def __init__(self, model: ObjectCentricMethod) -> None:
        self.model = model
        self.previous_slots: torch.Tensor | None = None

    def __call__(self, frames: torch.Tensor) -> ModelOutput:
        """``frames [T, 3, H, W]`` in [0, 1], the model's input size -> the output of batch size 1
        (``slots [1, T, K, d]``, ``masks [1, T, K, h, w]``)."""
        batch: dict[str, Any] = {VIDEO: frames.unsqueeze(0).to(self.model.device)}
        extra = {} if self.previous_slots is None else {"previous_slots": self.previous_slots}
        with torch.no_grad(), seeded(self.model.eval_seed):
            output = self.model(batch, **extra)
        self.previous_slots = output.slots[:, -1]
        return output


def predict_masks(model: ObjectCentricMethod, video: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Soft masks of a whole clip: ``video [T, 3, H, W]`` -> ``[T, K, h, w]`` (on the CPU), computed
    ``chunk_size`` frames at a time (None: all at once) with the slots carried over."""
    chunk_size = chunk_size or len(video)
    check_chunking(model, len(video), chunk_size)
    tracker = SlotTracker(model)
    return torch.cat(
        [tracker(video[start : start + chunk_size]).masks[0].cpu() for start in range(0, len(video), chunk_size)]
    )
