"""A trained model rebuilt from its checkpoint, run over a video in chunks that carry the slots over.

A chunk continues from the last slots of the chunk before it (the ``previous_slots`` argument of
the methods' ``forward``, see :class:`~ocl.modules.video.VideoSlotProcessor`), so slot ``k``
follows the same object through a video of any length while only one chunk is in memory, and
the masks equal those of one pass over the whole video.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ocl.build import UsageError, build_model, replayed_overrides
from ocl.contracts.batch import VIDEO
from ocl.contracts.output import ModelOutput
from ocl.methods.base import ObjectCentricMethod
from ocl.utils.checkpoints import is_weights_mismatch, read_checkpoint, weights_mismatch
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

    Raises:
        CheckpointError: the checkpoint is missing or unreadable
            (:func:`~ocl.utils.checkpoints.read_checkpoint`), or its weights do not fit ``cfg.model``
            (e.g. a checkpoint of another experiment); the message is one line that names the file.
    """
    checkpoint = read_checkpoint(cfg.ckpt_path)
    model = build_model(cfg)
    random_state = capture_rng_state()
    model.on_load_checkpoint(checkpoint)
    restore_rng_state(random_state)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        if not is_weights_mismatch(error):
            raise
        raise weights_mismatch(cfg.ckpt_path, checkpoint, cfg.get("name"), error) from None
    return model.to(device).eval()


def resolve_device(name: str) -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU; any other name as torch reads it.

    Raises:
        UsageError: ``name`` is no device torch knows, or a CUDA device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise UsageError(f"unknown device {name!r} ({error}): use device=auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device={name}: no CUDA device is available on this machine; use device=cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"device={name}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1}); "
                "use one of them, device=cpu or auto"
            )
    return device


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


def predict_output(model: ObjectCentricMethod, video: torch.Tensor, chunk_size: int | None = None) -> ModelOutput:
    """The output of batch size one for a whole clip ``video [T, 3, H, W]``, on the CPU, computed
    ``chunk_size`` frames at a time (None: all at once) with the slots carried over: each chunk's
    tensors (``[1, T_chunk, ...]``, the contract's per-frame layout, extras included) joined over frames."""
    chunk_size = chunk_size or len(video)
    check_chunking(model, len(video), chunk_size)
    tracker = SlotTracker(model)
    chunks = [tracker(video[start : start + chunk_size]) for start in range(0, len(video), chunk_size)]

    def joined(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if tensors[0] is None else torch.cat([tensor.cpu() for tensor in tensors], dim=1)

    values: dict[str, Any] = {
        f.name: joined([getattr(chunk, f.name) for chunk in chunks]) for f in fields(ModelOutput) if f.name != "extras"
    }
    values["extras"] = {key: joined([chunk.extras[key] for chunk in chunks]) for key in chunks[0].extras}
    return ModelOutput(**values)


def predict_masks(model: ObjectCentricMethod, video: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Soft masks ``[T, K, h, w]`` (on the CPU) of a whole clip ``video [T, 3, H, W]``
    (:func:`predict_output`)."""
    return predict_output(model, video, chunk_size).masks[0]
