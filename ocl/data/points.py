"""Weak point supervision (SLASH): object centres from ground-truth masks on a labelled subset.

A data module with ``point_labels`` (``data.point_labels`` in ``configs/experiment/slash_*.yaml``) marks a seeded
``labelled_fraction`` of its training set as labelled, gives every training item a ``points``
entry (:mod:`ocl.data.batch`; all NaN for unlabelled items) and composes each batch of
``batch_fraction`` labelled items (:class:`~ocl.data.sampling.LabelledMixSampler`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ocl.data.batch import MASKS, POINTS
from ocl.data.errors import DataError


def object_centres(masks: torch.Tensor, max_objects: int) -> torch.Tensor:
    """``masks [T, H, W]`` (0 background, ``1..M`` objects, -1 ignored) -> ``[T, max_objects, 2]``:
    row ``m`` is the mean ``(y, x)`` of object ``m + 1``'s pixel centres in ``[-0.5, 0.5]``
    (``(i + 0.5) / H - 0.5``), NaN where the object has no pixel in that frame."""
    frames, height, width = masks.shape
    if int(masks.max()) > max_objects:
        raise DataError(
            f"object id {int(masks.max())} is larger than data.point_labels.max_objects={max_objects}; raise it"
        )
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height - 0.5
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5
    ids = masks.clamp_min(0).flatten(1)  # ignored pixels count as background here
    offsets = (torch.arange(frames) * (max_objects + 1))[:, None]
    flat = (ids + offsets).flatten()
    size = frames * (max_objects + 1)
    counts = torch.bincount(flat, minlength=size).double()
    y_sum = torch.bincount(flat, weights=ys[:, None].expand(height, width).flatten().repeat(frames), minlength=size)
    x_sum = torch.bincount(flat, weights=xs[None, :].expand(height, width).flatten().repeat(frames), minlength=size)
    centres = torch.stack([y_sum, x_sum], dim=-1) / counts[:, None]  # NaN where the count is 0
    return centres.view(frames, max_objects + 1, 2)[:, 1:].float()


class PointLabels:
    """Which training items carry object centres, and how many per batch.

    Args:
        labelled_fraction: fraction of the training set that is labelled (SLASH: 0.1); the
            labelled items are the first ``round(fraction * size)`` of a seeded permutation.
        batch_fraction: fraction of each training batch drawn from them (SLASH: 0.25).
        max_objects: size ``M`` of the ``points`` axis (the dataset's largest object id).
    """

    def __init__(self, labelled_fraction: float = 0.1, batch_fraction: float = 0.25, max_objects: int = 10) -> None:
        if not 0.0 < labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
        if not 0.0 <= batch_fraction <= 1.0:
            raise ValueError(f"batch_fraction must be in [0, 1], got {batch_fraction}")
        self.labelled_fraction = labelled_fraction
        self.batch_fraction = batch_fraction
        self.max_objects = max_objects

    def split(self, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (sorted labelled indices, sorted unlabelled indices) of a dataset of ``size`` items."""
        order = np.random.default_rng([seed, 7]).permutation(size)
        count = max(1, round(self.labelled_fraction * size))
        return np.sort(order[:count]), np.sort(order[count:])

    def per_batch(self, batch_size: int) -> int:
        """Labelled items in a batch of ``batch_size``."""
        return round(self.batch_fraction * batch_size)


class WithPointLabels(Dataset):
    """Adds ``points [T, M, 2]`` to every item of ``dataset``: object centres for the indices in
    ``labelled``, all NaN for the others. Keys may be indices or ``(index, position)`` pairs
    (:class:`~ocl.data.clips.SeededDraws`)."""

    def __init__(self, dataset: Dataset, labelled: np.ndarray, max_objects: int) -> None:
        self.dataset = dataset
        self.labelled = set(labelled.tolist())
        self.max_objects = max_objects

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        item = self.dataset[key]
        index = key[0] if isinstance(key, tuple) else key
        if MASKS not in item:
            raise DataError(f"point labels need ground-truth masks; item {index} has none")
        if index in self.labelled:
            item[POINTS] = object_centres(item[MASKS], self.max_objects)
        else:
            item[POINTS] = torch.full((item[MASKS].shape[0], self.max_objects, 2), float("nan"))
        return item
