"""Lightning data modules.

:class:`VideoDataModule` owns everything about loaders (batching, reproducible shuffling,
workers); a dataset's module only builds its datasets. Every loader yields batches in the
contract of :mod:`ocl.contracts.batch`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from ocl.contracts.batch import META, VIDEO
from ocl.data.clips import ClipDataset, SeededDraws, VideoSource
from ocl.data.errors import DataError
from ocl.data.eval_subset import WebDatasetEvalSubset
from ocl.data.feature_cache import CachedClips, FeatureCache, data_fingerprint
from ocl.data.points import PointLabels, WithPointLabels
from ocl.data.sampling import (
    LabelledMixSampler,
    ResumableRandomSampler,
    RoundRobinBatchSampler,
    check_every_rank_gets_a_batch,
)
from ocl.data.synthetic import SyntheticSource, SyntheticVideoDataset, get_level
from ocl.data.transforms import VideoTransform, to_unit_float

NOT_RESUMABLE_WARNING = (
    "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable"
)
"""Start of Lightning's warning on a mid-epoch resume with a loader that keeps no state."""


def silence_not_resumable_warning() -> None:
    """Silence :data:`NOT_RESUMABLE_WARNING`: false for the training loaders of
    :meth:`VideoDataModule.train_dataloader`, which start at the resumed step's position."""
    warnings.filterwarnings("ignore", message=re.escape(NOT_RESUMABLE_WARNING), category=PossibleUserWarning)


def _stack_in_numpy(batch: list[torch.Tensor], *, collate_fn_map: dict | None = None) -> torch.Tensor:
    """Stack CPU tensors of a numpy dtype: ``[B, ...]``."""
    return torch.from_numpy(np.stack([tensor.numpy() for tensor in batch]))


def _check_same_shapes(batch: list[Any]) -> None:
    """Raise DataError if the items' videos differ in shape (whole videos of different lengths)."""
    shapes = {tuple(item[VIDEO].shape) for item in batch if isinstance(item, dict) and VIDEO in item}
    if len(shapes) > 1:
        ids = [item[META]["video_id"] for item in batch]
        raise DataError(
            f"videos {ids} have different shapes {sorted(shapes)} and cannot share a batch; "
            "evaluate whole videos one at a time with data.val_batch_size=1"
        )


def collate_videos(batch: list[Any]) -> Any:
    """``default_collate`` with a clear error for items of different shapes (used in workers)."""
    _check_same_shapes(batch)
    return default_collate(batch)


def collate_single_threaded(batch: list[Any]) -> Any:
    """:func:`collate_videos`, except that tensors are stacked by numpy, on one thread.

    In the main process (``num_workers=0``) torch copies large tensors with all its intra-op
    threads; on a busy CPU their hand-offs stall: stacking 16 videos of ``[6, 3, 64, 64]``
    took 125 ms with torch's two threads and 12 ms with numpy on a loaded 2-core machine.
    """
    _check_same_shapes(batch)
    return collate(batch, collate_fn_map={**default_collate_fn_map, torch.Tensor: _stack_in_numpy})


class VideoDataModule(lightning.LightningDataModule):
    """Base of the data modules: turns ``train_set`` / ``val_set`` / ``test_set`` into loaders.

    Subclasses set the datasets in ``__init__``, or in ``setup`` when building them is expensive.

    Args:
        batch_size: training batch size.
        val_batch_size: validation batch size; ``None`` uses ``batch_size``.
        num_workers: loader worker processes (kept alive between epochs when > 0).
        seed: seed of the training order (see :class:`~ocl.data.sampling.ResumableRandomSampler`).
        pin_memory: pin batches in page-locked memory (faster copies to a GPU); None: when the
            trainer runs on a CUDA device.
        point_labels: weak point supervision of training items (SLASH; :mod:`ocl.data.points`),
            or None.
        feature_cache: folder of a frozen-feature cache of the training split
            (``scripts/cache_features.py``, :mod:`ocl.data.feature_cache`): training items carry
            the cached encoder features instead of frames; None (the recipes): frames.
        uint8_transfer: training clips (of a :class:`~ocl.data.clips.ClipDataset`) keep uint8
            frames from the worker processes to the device, where :meth:`on_after_batch_transfer`
            divides them by 255 (the same float32 values as the transform's own conversion, a
            quarter of the bytes to move); only where the transform leaves frames uint8
            (antialiased bilinear or no resize; float resizes, e.g. bicubic, stay float32). Loader
            batches then hold uint8 ``video`` until that hook: code that iterates
            :meth:`train_dataloader` outside a trainer calls it too.
    """

    def __init__(
        self,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
        point_labels: PointLabels | None = None,
        feature_cache: str | None = None,
        uint8_transfer: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if val_batch_size is not None and val_batch_size < 1:
            raise ValueError(f"val_batch_size must be >= 1 or None, got {val_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        if feature_cache is not None and point_labels is not None:
            raise ValueError("data.feature_cache and data.point_labels cannot be combined: cached items carry no masks")
        self.point_labels = point_labels
        self.feature_cache = feature_cache
        self.uint8_transfer = uint8_transfer
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _dataset(self, dataset: Dataset | None, name: str) -> Dataset:
        """``dataset``, or a clear error if ``setup`` has not created it."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {name} dataset: call setup() first")
        return dataset

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int | None,
        sampler: Sampler[int] | None = None,
        batch_sampler: Sampler[list[int]] | None = None,
    ) -> DataLoader:
        """A loader over ``dataset`` with this module's worker settings (``batch_size=None`` with
        a ``batch_sampler``).

        Workers run torch on one thread and collate into shared memory, so they keep
        :func:`collate_videos`; the main process collates with :func:`collate_single_threaded`.
        """
        return DataLoader(
            dataset,
            batch_size=1 if batch_sampler is not None else batch_size,
            sampler=sampler,
            batch_sampler=batch_sampler,
            collate_fn=collate_videos if self.num_workers > 0 else collate_single_threaded,
            num_workers=self.num_workers,
            pin_memory=self.pins_memory(),
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds; keeps the global RNG untouched
        )

    def pins_memory(self) -> bool:
        """Whether loaders pin their batches: ``pin_memory``, or (None) whether the trainer's device is CUDA."""
        if self.pin_memory is not None:
            return self.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Frames that stayed uint8 (``uint8_transfer``) become float32 in [0, 1], on the device."""
        if isinstance(batch, dict) and VIDEO in batch and batch[VIDEO].dtype == torch.uint8:
            batch[VIDEO] = to_unit_float(batch[VIDEO])
        return batch

    def dataset_identity(self) -> dict[str, Any]:
        """What identifies this module's dataset in a feature cache's fingerprint (subclasses add
        their root or generator settings)."""
        return {"data_module": type(self).__name__}

    def split_clips(self, split: str) -> ClipDataset:
        """``split`` as a :class:`~ocl.data.clips.ClipDataset` with the transform it is read with
        (what a feature cache of that split encodes)."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve a split as clips for a feature cache")

    def cache_fingerprint(self, split: str, clips: ClipDataset) -> dict[str, Any]:
        """The data fields of a feature cache's fingerprint for ``split`` read as ``clips``."""
        return data_fingerprint(self.dataset_identity(), split, clips)

    def _cached_train_set(self, clips: ClipDataset) -> CachedClips:
        """The training clips read from ``feature_cache``, checked against this module's training
        split and, inside a ``trainer.fit``, against the method's frozen encoder (FeatureCacheError)."""
        cache = FeatureCache(self.feature_cache)
        cache.check(self.cache_fingerprint("train", clips))
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is not None:
            cache.check_model(model.frozen_feature_fingerprint(), type(model).__name__)
        return CachedClips(clips, cache)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches for the whole run, starting where a resumed run left off.

        The order is one seeded stream (:class:`~ocl.data.sampling.ResumableRandomSampler`)
        covering ``trainer.max_steps`` optimiser steps; it starts after the samples consumed by
        the ``trainer.global_step`` steps already taken (non-zero when resuming) and is sharded
        across DDP ranks. Without a trainer (e.g. in a notebook) it covers one pass over the data.
        A dataset with random draws (a :class:`~ocl.data.clips.ClipDataset`: clip start, crop)
        seeds them with the sample's stream position, so they resume exactly too. With
        ``point_labels`` the batches mix labelled and unlabelled items instead
        (:class:`~ocl.data.sampling.LabelledMixSampler`, resumable and sharded the same way).
        """
        dataset = self._dataset(self.train_set, "train")
        draws = isinstance(dataset, (ClipDataset, CachedClips))
        if draws:
            dataset = SeededDraws(
                dataset, self.seed, keep_uint8=self.uint8_transfer and isinstance(dataset, ClipDataset)
            )
        trainer = self.trainer
        if trainer is None:
            steps, rank, world_size, accumulate = None, 0, 1, 1
        else:
            if trainer.max_steps is None or trainer.max_steps < 0:
                raise ValueError("ocl trains for a number of optimiser steps: set trainer.max_steps (> 0)")
            steps, rank, world_size = (trainer.global_step, trainer.max_steps), trainer.global_rank, trainer.world_size
            accumulate = trainer.accumulate_grad_batches
            if self.val_set is not None:  # fail now rather than at the first validation
                check_every_rank_gets_a_batch(len(self.val_set), self.val_batch_size, world_size)
            silence_not_resumable_warning()  # the samplers below start where the resumed run left off
        if self.point_labels is not None:
            return self._point_labelled_loader(dataset, draws, steps, rank, world_size, accumulate)
        if steps is None:
            sampler = ResumableRandomSampler(len(dataset), len(dataset), self.seed, with_positions=draws)
        else:
            per_step = self.batch_size * accumulate * world_size
            start = steps[0] * per_step
            remaining = (steps[1] * per_step - start) // world_size
            sampler = ResumableRandomSampler(
                len(dataset),
                remaining,
                self.seed,
                start,
                rank,
                world_size,
                with_positions=draws,
                consumed=start // world_size,
            )
        return self._loader(dataset, self.batch_size, sampler)

    def _point_labelled_loader(
        self,
        dataset: Dataset,
        draws: bool,
        steps: tuple[int, int] | None,
        rank: int,
        world_size: int,
        accumulate: int,
    ) -> DataLoader:
        """Training loader whose items carry ``points`` and whose batches mix labelled and
        unlabelled items as ``point_labels`` says; ``steps = (taken, max)`` optimiser steps
        (None: one pass over the data)."""
        labels = self.point_labels
        labelled, rest = labels.split(len(dataset), self.seed)
        labelled_per_batch = labels.per_batch(self.batch_size)
        if steps is None:
            start_batch, num_batches = 0, -(-len(dataset) // self.batch_size)
        else:
            start_batch, num_batches = steps[0] * accumulate, (steps[1] - steps[0]) * accumulate
        sampler = LabelledMixSampler(
            labelled,
            rest,
            self.batch_size,
            labelled_per_batch,
            num_batches,
            self.seed,
            start_batch,
            rank,
            world_size,
            with_positions=True,  # WithPointLabels labels an item by its place in the batch
        )
        projected = self.projected_points() if labels.centre == "projected" else None
        dataset = WithPointLabels(dataset, self.batch_size, labelled_per_batch, labels, draws, projected)
        return self._loader(dataset, self.batch_size, sampler)

    def projected_points(self) -> Callable[[int], np.ndarray]:
        """Training item index -> its objects' projected centres ``[M, 2]`` (``point_labels.centre:
        projected``); only datasets that store them (CLEVR) have them."""
        raise ValueError(f"{type(self).__name__} stores no projected object centres: use point_labels.centre=box")

    def _evaluation_loader(self, dataset: Dataset) -> DataLoader:
        """Batches of ``val_batch_size`` in dataset order; under DDP every rank gets whole
        one-process batches in turn (:class:`~ocl.data.sampling.RoundRobinBatchSampler`), so the
        metrics equal one process's."""
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batches = RoundRobinBatchSampler(len(dataset), self.val_batch_size, rank, world_size)
        return self._loader(dataset, None, batch_sampler=batches)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order (see :meth:`_evaluation_loader`)."""
        return self._evaluation_loader(self._dataset(self.val_set, "val"))

    def test_dataloader(self) -> DataLoader:
        """Test batches in dataset order (``python eval.py ... eval.split=test``)."""
        return self._evaluation_loader(self._dataset(self.test_set, "test"))


class SyntheticDataModule(VideoDataModule):
    """The embedded procedural videos (:mod:`ocl.data.synthetic`): no files, no downloads.

    Training and validation videos come from disjoint seed streams of the same ``seed``.
    Validation clips are longer than training clips by default, to test temporal consistency
    beyond the training horizon. ``train_frames = val_frames = 1`` gives an image dataset.

    Args:
        level: difficulty, a name in :data:`ocl.data.synthetic.LEVELS`.
        resolution: side of the square frames, in pixels.
        train_frames: frames per training video.
        val_frames: frames per validation video.
        train_size: number of training videos (one epoch).
        val_size: number of validation videos.
        test_size: number of test videos (``val_frames`` long, a third disjoint seed stream).
        cache: keep generated videos in memory (per worker process; ~4 bytes per pixel and
            frame, e.g. 98 KB per 6-frame 64 x 64 video).
        batch_size, val_batch_size, num_workers, seed, pin_memory, point_labels, feature_cache:
            see :class:`VideoDataModule`; ``seed`` also seeds the data.
    """

    def __init__(
        self,
        level: str = "easy",
        resolution: int = 64,
        train_frames: int = 6,
        val_frames: int = 12,
        train_size: int = 5000,
        val_size: int = 64,
        test_size: int = 64,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache: bool = True,
        pin_memory: bool | None = None,
        point_labels: PointLabels | None = None,
        feature_cache: str | None = None,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, seed, pin_memory, point_labels, feature_cache)
        # Videos are generated lazily, on first access, so the datasets are cheap to build here,
        # and bad arguments fail when the configuration is instantiated.
        dataset = partial(SyntheticVideoDataset, level=get_level(level), resolution=resolution, seed=seed, cache=cache)
        self.videos = {
            "train": dataset("train", train_size, num_frames=train_frames),
            "val": dataset("val", val_size, num_frames=val_frames),
            "test": dataset("test", test_size, num_frames=val_frames),
        }
        self.train_set, self.val_set, self.test_set = self.videos["train"], self.videos["val"], self.videos["test"]

    def dataset_identity(self) -> dict[str, Any]:
        level = self.videos["train"].level
        resolution = self.videos["train"].resolution
        return {
            **super().dataset_identity(),
            "level": dataclasses.asdict(level),
            "resolution": resolution,
            "seed": self.seed,
        }

    def split_clips(self, split: str) -> ClipDataset:
        """Whole generated videos, as they are (:class:`~ocl.data.synthetic.SyntheticSource`)."""
        return ClipDataset(SyntheticSource(self.videos[split]))

    def setup(self, stage: str | None = None) -> None:
        """With ``feature_cache``, training reads the cache (checked here) instead of the videos."""
        if self.feature_cache is not None and stage in ("fit", None) and not isinstance(self.train_set, CachedClips):
            self.train_set = self._cached_train_set(self.split_clips("train"))


class StoredVideoDataModule(VideoDataModule, ABC):
    """Base of the modules of datasets read from disk: one :class:`~ocl.data.clips.VideoSource` per split.

    Training items are random ``train_clip_length``-frame clips with ``train_transform``;
    validation and test items are whole videos (``eval_clip_length=None``, the protocol of
    ``docs/protocol.md``) with ``eval_transform``. Sources are opened in :meth:`setup`, so a
    missing or incomplete dataset fails before the first step with a message naming the path.

    Args:
        root: the dataset's folder.
        train_clip_length: frames per training clip.
        eval_clip_length: frames per evaluation item; ``None`` = whole videos.
        eval_chunked: with ``eval_clip_length``, evaluate every consecutive chunk of that many
            frames of each video as its own sample (VideoSAUR's 6-frame YT-VIS protocol)
            instead of only the first clip.
        train_transform, eval_transform: :class:`~ocl.data.transforms.VideoTransform`.
        frame_stride: step between clip frames.
        train_random_start: training clips start at random frames; False: at frame 0 (with
            ``train_clip_length=1`` the dataset's first frames as images, SLASH's MOVi setting).
        train_aligned_start: random training starts are multiples of the clip span: one of each
            video's consecutive non-overlapping chunks (VideoSAUR / SlotContrast / SlotCurri);
            False: any start (see :class:`~ocl.data.clips.ClipDataset`).
        eval_drop_partial_chunks: with ``eval_chunked``, leave out the last chunk of a video when
            it is shorter than ``eval_clip_length`` (VideoSAUR's chunked YT-VIS evaluation).
        eval_subset: score only the items the authors' WebDataset validation loader scores
            (:class:`~ocl.data.eval_subset.WebDatasetEvalSubset`; their YT-VIS configs score a
            part of the held-out videos); None: every item.
        train_masks: training items carry the labels (``masks``); False: the training split reads
            none (a training step reads no labels: losses and metrics never see them; point labels
            need them).
        batch_size, val_batch_size, num_workers, seed, pin_memory, point_labels, feature_cache,
            uint8_transfer: see :class:`VideoDataModule`.
    """

    def __init__(
        self,
        root: str,
        train_clip_length: int = 4,
        eval_clip_length: int | None = None,
        train_transform: VideoTransform | None = None,
        eval_transform: VideoTransform | None = None,
        frame_stride: int = 1,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
        eval_chunked: bool = False,
        train_random_start: bool = True,
        point_labels: PointLabels | None = None,
        train_aligned_start: bool = False,
        eval_drop_partial_chunks: bool = False,
        eval_subset: WebDatasetEvalSubset | None = None,
        feature_cache: str | None = None,
        train_masks: bool = True,
        uint8_transfer: bool = False,
    ) -> None:
        super().__init__(
            batch_size, val_batch_size, num_workers, seed, pin_memory, point_labels, feature_cache, uint8_transfer
        )
        if point_labels is not None and not train_masks:
            raise ValueError("data.point_labels are computed from the training masks: set data.train_masks=true")
        self.train_masks = train_masks
        self.root = Path(root).expanduser()
        self.train_clip_length = train_clip_length
        if eval_chunked and eval_clip_length is None:
            raise ValueError("eval_chunked needs an eval_clip_length (the chunk size)")
        if eval_drop_partial_chunks and not eval_chunked:
            raise ValueError("eval_drop_partial_chunks needs eval_chunked=true")
        self.eval_clip_length = eval_clip_length
        self.eval_chunked = eval_chunked
        self.eval_drop_partial_chunks = eval_drop_partial_chunks
        self.eval_subset = eval_subset
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.frame_stride = frame_stride
        self.train_random_start = train_random_start
        self.train_aligned_start = train_aligned_start

    @abstractmethod
    def open_source(self, split: str) -> VideoSource:
        """The videos of ``split`` (``train``, ``val`` or ``test``); raise DataError if unreadable."""

    def splits_for(self, stage: str | None) -> tuple[str, ...]:
        """Splits a Lightning ``stage`` needs."""
        return {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))

    def dataset_identity(self) -> dict[str, Any]:
        return {**super().dataset_identity(), "root": str(self.root.resolve())}

    def split_clips(self, split: str) -> ClipDataset:
        """Training: random ``train_clip_length``-frame clips with ``train_transform``; evaluation:
        ``eval_clip_length`` items (chunks) with ``eval_transform``, every video (no ``eval_subset``)."""
        if split == "train":
            return ClipDataset(
                self.open_source(split),
                self.train_clip_length,
                self.train_transform,
                self.frame_stride,
                random_start=self.train_random_start,
                aligned_start=self.train_aligned_start,
                labels=self.train_masks,
            )
        return ClipDataset(
            self.open_source(split),
            self.eval_clip_length,
            self.eval_transform,
            chunked=self.eval_chunked,
            drop_partial_chunks=self.eval_drop_partial_chunks,
        )

    def setup(self, stage: str | None = None) -> None:
        """Open the splits ``stage`` needs; with ``feature_cache``, training reads the cache
        (checked here) instead of the frames."""
        for split in self.splits_for(stage):
            if getattr(self, f"{split}_set") is not None:
                continue
            dataset = self.split_clips(split)
            if split == "train" and self.feature_cache is not None:
                dataset = self._cached_train_set(dataset)
            elif split != "train" and self.eval_subset is not None:
                dataset = Subset(dataset, self.eval_subset.select(dataset.item_videos(), len(dataset.source)))
            setattr(self, f"{split}_set", dataset)
