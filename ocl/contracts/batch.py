"""The batch contract shared by every data module.

Every data module yields a ``dict`` with these keys, whatever the dataset:

``video``
    float32 ``[B, T, 3, H, W]`` in ``[0, 1]``. Images are videos with ``T = 1``.
    Normalisation belongs to the encoder, not to the data.
``masks`` (only when labels exist)
    int64 ``[B, T, H, W]``: ``0`` = background, ``1..M`` = instances, the same id for one
    object in every frame of a video; :data:`IGNORE_ID` marks pixels that no metric scores
    (e.g. DAVIS "void").
``meta``
    ``{"video_id": list[str] (len B), "frame_indices": int64 [B, T]}``.

Optional extras, under these names so that losses and metrics find them:

``points`` (training only, with point labels, :mod:`ocl.data.points`)
    float32 ``[B, T, M, 2]``: centre ``(x, y)`` of object ``m + 1`` in normalised coordinates
    ``[-0.5, 0.5]`` (SLASH's order); NaN where the object is absent or the sample is unlabelled.

Training batches read from a frozen-feature cache (``data.feature_cache``,
:mod:`ocl.data.feature_cache`) carry the frozen encoder's output instead of ``video``:

``features``
    float16 or float32 ``[B, T, N, D]``: the encoder's block tokens of each frame (``N = h * w``
    patches, row-major), as :class:`~ocl.modules.vit.ViTEncoder` returns them.
``feature_keys`` (only when the cache stores them: methods that read attention keys)
    ``[B, T, N, D]``: the same block's attention keys.
"""

from __future__ import annotations

from typing import Any

import torch

VIDEO = "video"
MASKS = "masks"
META = "meta"
POINTS = "points"
FEATURES = "features"
FEATURE_KEYS = "feature_keys"
IGNORE_ID = -1
"""Label value of pixels that are neither background nor an object and are never scored."""


def validate_batch(batch: dict[str, Any]) -> None:
    """Raise ``ValueError`` with a readable message if ``batch`` breaks the contract."""
    if VIDEO not in batch:
        raise ValueError(f"batch has no '{VIDEO}' key; keys are {sorted(batch)}")
    video = batch[VIDEO]
    if video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"'{VIDEO}' must be [B, T, 3, H, W], got {tuple(video.shape)}")
    if not torch.is_floating_point(video):
        raise ValueError(f"'{VIDEO}' must be float in [0, 1], got dtype {video.dtype}")
    if MASKS in batch:
        masks = batch[MASKS]
        b, t, _, h, w = video.shape
        if tuple(masks.shape) != (b, t, h, w):
            raise ValueError(f"'{MASKS}' must be [B, T, H, W] = {(b, t, h, w)}, got {tuple(masks.shape)}")
        if masks.dtype != torch.int64:
            raise ValueError(f"'{MASKS}' must be int64, got {masks.dtype}")


def num_items(batch: dict[str, Any]) -> int:
    """Items in ``batch``: the first dimension of its ``video``, or of its cached ``features``."""
    return (batch[VIDEO] if VIDEO in batch else batch[FEATURES]).shape[0]
