"""Weak point supervision (SLASH): object centres on a labelled subset of the training set.

A data module with ``point_labels`` (``data.point_labels`` in ``configs/experiment/slash_*.yaml``) marks a seeded
``labelled_fraction`` of its training set as labelled, composes each batch of ``batch_fraction``
labelled items followed by others (:class:`~ocl.data.sampling.LabelledMixSampler`) and gives every
training item a ``points`` entry (:mod:`ocl.contracts.batch`): the centres ``(x, y)`` of its objects for
the labelled part of the batch, all NaN for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ocl.contracts.batch import MASKS, POINTS
from ocl.data.errors import DataError

CENTRES = ("mass", "box")
"""Centres computed from an object's mask (:func:`object_centres`)."""
POINT_SOURCES = (*CENTRES, "projected")
"""Where point labels come from: a mask centre, or the dataset's projected object centres
(CLEVR's ``pixel_coords``, :meth:`~ocl.data.clevr.ClevrSource.object_points`)."""


def object_centres(masks: torch.Tensor, max_objects: int, centre: str = "mass") -> torch.Tensor:
    """``masks [T, H, W]`` (0 background, ``1..M`` objects, -1 ignored) -> ``[T, max_objects, 2]``:
    row ``m`` is the centre ``(x, y)`` of object ``m + 1`` in ``[-0.5, 0.5]``, NaN where the object
    has no pixel in that frame.

    ``centre``: ``mass``, the mean of its pixel centres (``(j + 0.5) / W - 0.5``); ``box``, the centre
    of its bounding box in the frame, ``(min + max + 1) / 2 / W - 0.5`` (Kubric's ``instances/bboxes``,
    computed from the segmentation as ``[min / W, (max + 1) / W]``, are SLASH's MOVi labels).
    """
    if centre not in CENTRES:
        raise ValueError(f"unknown centre {centre!r}; choose one of {list(CENTRES)}")
    frames, height, width = masks.shape
    if int(masks.max()) > max_objects:
        raise DataError(
            f"object id {int(masks.max())} is larger than data.point_labels.max_objects={max_objects}; raise it"
        )
    ids = masks.clamp_min(0).flatten(1)  # ignored pixels count as background here
    offsets = (torch.arange(frames) * (max_objects + 1))[:, None]
    flat = (ids + offsets).flatten()
    size = frames * (max_objects + 1)
    counts = torch.bincount(flat, minlength=size)
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width).flatten().repeat(frames)
    columns = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width).flatten().repeat(frames)
    coordinates = []
    for pixels, extent in ((columns, width), (rows, height)):
        if centre == "mass":
            middle = (torch.bincount(flat, weights=pixels, minlength=size) / counts + 0.5) / extent
        else:
            lowest = pixels.new_zeros(size).scatter_reduce(0, flat, pixels, "amin", include_self=False)
            highest = pixels.new_zeros(size).scatter_reduce(0, flat, pixels, "amax", include_self=False)
            middle = (lowest + highest + 1) / 2 / extent
        coordinates.append(middle - 0.5)
    centres = torch.stack(coordinates, dim=-1).masked_fill((counts == 0)[:, None], float("nan"))
    return centres.view(frames, max_objects + 1, 2)[:, 1:].float()


class PointLabels:
    """Which training items carry object centres, and how many per batch.

    Args:
        labelled_fraction: fraction of the training set that is labelled (SLASH: 0.1); the
            labelled items are the first ``round(fraction * size)`` of a seeded permutation.
        batch_fraction: fraction of each training batch drawn from them (SLASH: 0.25); these come
            first in the batch.
        max_objects: size ``M`` of the ``points`` axis (the dataset's largest object id).
        centre: ``mass`` or ``box``, a centre computed from the object's mask after the
            training transform (:func:`object_centres`); ``projected``, the dataset's projected
            object centres (CLEVR: SLASH's labels;
            :meth:`~ocl.data.datamodule.VideoDataModule.projected_points`).
        unlabelled_from_all: the rest of each batch is drawn from the whole training set, labelled
            items included, used there without their points (SLASH's code: a second loader over
            the whole set); False: from the unlabelled items only (ocl).
    """

    def __init__(
        self,
        labelled_fraction: float = 0.1,
        batch_fraction: float = 0.25,
        max_objects: int = 10,
        centre: str = "mass",
        unlabelled_from_all: bool = False,
    ) -> None:
        if not 0.0 < labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
        if not 0.0 <= batch_fraction <= 1.0:
            raise ValueError(f"batch_fraction must be in [0, 1], got {batch_fraction}")
        if centre not in POINT_SOURCES:
            raise ValueError(f"unknown centre {centre!r}; choose one of {list(POINT_SOURCES)}")
        self.labelled_fraction = labelled_fraction
        self.batch_fraction = batch_fraction
        self.max_objects = max_objects
        self.centre = centre
        self.unlabelled_from_all = unlabelled_from_all

    def split(self, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (sorted labelled indices, sorted indices the rest of each batch is drawn from) of a
        dataset of ``size`` items (the latter: every index with ``unlabelled_from_all``)."""
        order = np.random.default_rng([seed, 7]).permutation(size)
        count = max(1, round(self.labelled_fraction * size))
        rest = np.arange(size) if self.unlabelled_from_all else np.sort(order[count:])
        return np.sort(order[:count]), rest

    def per_batch(self, batch_size: int) -> int:
        """Labelled items in a batch of ``batch_size``."""
        return round(self.batch_fraction * batch_size)


class WithPointLabels(Dataset):
    """Adds ``points [T, M, 2]`` to every item of ``dataset``: object centres for the items in the
    labelled part of their batch, all NaN for the others.

    Keys are ``(index, position)`` pairs (:class:`~ocl.data.sampling.LabelledMixSampler` with
    positions): an item is labelled when ``position % batch_size < labelled_per_batch``, the
    places the sampler fills from the labelled items, so an item drawn into the rest of a batch
    is unlabelled whatever its index. ``draws``: ``dataset`` takes the pair itself
    (:class:`~ocl.data.clips.SeededDraws`); otherwise the index only. ``projected``: item index ->
    its objects' projected centres ``[M, 2]``, for ``labels.centre == "projected"``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        labelled_per_batch: int,
        labels: PointLabels,
        draws: bool,
        projected: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        if labels.centre == "projected" and projected is None:
            raise ValueError("point_labels.centre=projected needs the dataset's projected object centres")
        self.dataset = dataset
        self.batch_size = batch_size
        self.labelled_per_batch = labelled_per_batch
        self.labels = labels
        self.draws = draws
        self.projected = projected

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, position = key
        item = self.dataset[key if self.draws else index]
        if MASKS not in item:
            raise DataError(f"point labels need ground-truth masks; item {index} has none")
        num_frames, rows = item[MASKS].shape[0], self.labels.max_objects
        if position % self.batch_size >= self.labelled_per_batch:
            item[POINTS] = torch.full((num_frames, rows, 2), float("nan"))
        elif self.projected is None:
            item[POINTS] = object_centres(item[MASKS], rows, self.labels.centre)
        else:
            points = torch.from_numpy(self.projected(index))
            if points.shape[0] != rows:
                raise ValueError(
                    f"the dataset stores {points.shape[0]} projected centres per item: set max_objects to it"
                )
            item[POINTS] = points[None].repeat(num_frames, 1, 1)
        return item
