"""A training sampler whose position is a function of the optimiser step (exact resumption).

Lightning restarts the data iterator when a run resumes mid-epoch; a plain shuffled loader
would then replay the epoch's first batches. This sampler is one long stream of indices
(the concatenation of seeded permutations of the dataset) that starts at the sample the
resumed run would have read next, and shards the stream across DDP ranks itself.
Evaluation loaders deal whole one-process batches to the ranks (:class:`RoundRobinBatchSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ShuffledStream:
    """Element ``position`` of an endless stream of seeded permutations of ``range(size)``.

    Permutation ``c`` (positions ``c * size .. (c + 1) * size - 1``) comes from a generator
    seeded with ``seed * 1_000_003 + c``; the last permutation used is cached, so reading
    positions in increasing order costs one permutation per pass.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size = size
        self.seed = seed
        self._cycle = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def __getitem__(self, position: int) -> int:
        cycle = position // self.size
        if cycle != self._cycle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
            self._cycle, self._permutation = cycle, torch.randperm(self.size, generator=generator)
        return int(self._permutation[position % self.size])


class ResumableRandomSampler(Sampler):
    """Indices ``stream[start + rank :: world_size][:num_samples]`` of a seeded shuffled stream.

    ``stream`` is a :class:`ShuffledStream` of ``range(dataset_size)``: it depends on the seed only.

    Args:
        dataset_size: number of items in the dataset.
        num_samples: indices this rank yields (the loader's length is derived from it).
        seed: seed of the stream.
        start: position in the global stream (all ranks together) to start from.
        rank: this process's rank; ``world_size``: number of ranks.
        consumed: indices this rank already read earlier in the run (before ``start``). They
            are not yielded again but count in ``len()``: Lightning restores the batch index of
            a resumed epoch and ends the epoch at ``len(loader)`` batches, so the loader must
            report the length of the whole run, or a resumed run would start a new epoch early
            and read the first batches again.
        with_positions: yield ``(index, position)`` pairs, ``position`` being the index's place
            in the global stream, so a dataset can seed its random draws (clip start, crop) with
            it (see :class:`ocl.data.clips.SeededDraws`).
    """

    def __init__(
        self,
        dataset_size: int,
        num_samples: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        with_positions: bool = False,
        consumed: int = 0,
    ) -> None:
        self.stream = ShuffledStream(dataset_size, seed)
        self.dataset_size = dataset_size
        self.num_samples = max(0, num_samples)
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.with_positions = with_positions
        self.consumed = consumed

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        for step in range(self.num_samples):
            position = self.start + self.rank + step * self.world_size
            index = self.stream[position]
            yield (index, position) if self.with_positions else index

    def __len__(self) -> int:
        return self.consumed + self.num_samples


class LabelledMixSampler(Sampler):
    """Resumable batches of which a fixed number come from a labelled subset (weak supervision).

    Batch ``g`` of the global run (all ranks: rank ``r``'s ``b``-th batch is ``g = b * world_size
    + r``) holds positions ``g * n_l .. (g + 1) * n_l - 1`` of a :class:`ShuffledStream` over the
    labelled indices, then positions ``g * n_u ..`` of one over the others
    (``n_l = labelled_per_batch``, ``n_u = batch_size - n_l``). Like
    :class:`ResumableRandomSampler` it starts at any batch, so resumed runs continue exactly.

    Args:
        labelled: dataset indices that carry labels; ``unlabelled``: those the rest of each batch
            is drawn from (the others, or every index: :class:`~ocl.data.points.PointLabels`).
        batch_size: items per batch; ``labelled_per_batch``: how many of them are labelled.
        num_batches: batches this rank yields; ``start_batch``: the first global batch *per rank*
            (batches already read by each rank earlier in the run, counted in ``len()``).
        seed, rank, world_size, with_positions: as in :class:`ResumableRandomSampler`; positions
            are ``g * batch_size + j`` (unique per sample of the run).
    """

    def __init__(
        self,
        labelled: np.ndarray,
        unlabelled: np.ndarray,
        batch_size: int,
        labelled_per_batch: int,
        num_batches: int,
        seed: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        with_positions: bool = False,
    ) -> None:
        if not 0 <= labelled_per_batch <= batch_size:
            raise ValueError(f"labelled_per_batch must be in [0, {batch_size}], got {labelled_per_batch}")
        if labelled_per_batch and not len(labelled):
            raise ValueError("no labelled samples to put in the batches: raise the labelled fraction")
        if labelled_per_batch < batch_size and not len(unlabelled):
            raise ValueError("every sample is labelled: lower the labelled fraction or label whole batches")
        self.subsets = [
            (np.asarray(labelled), labelled_per_batch, ShuffledStream(max(1, len(labelled)), seed * 2 + 1)),
            (
                np.asarray(unlabelled),
                batch_size - labelled_per_batch,
                ShuffledStream(max(1, len(unlabelled)), seed * 2),
            ),
        ]
        self.batch_size = batch_size
        self.num_batches = max(0, num_batches)
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size
        self.with_positions = with_positions

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        for local in range(self.start_batch, self.start_batch + self.num_batches):
            batch = local * self.world_size + self.rank
            items = [
                int(indices[stream[batch * count + j]]) for indices, count, stream in self.subsets for j in range(count)
            ]
            for j, index in enumerate(items):
                yield (index, batch * self.batch_size + j) if self.with_positions else index

    def __len__(self) -> int:
        return (self.start_batch + self.num_batches) * self.batch_size


class ShardingError(ValueError):
    """The evaluation data cannot be dealt to the DDP ranks; the message names the setting to
    change (entry points print it alone)."""


def check_every_rank_gets_a_batch(dataset_size: int, batch_size: int, world_size: int) -> None:
    """Raise :class:`ShardingError` if ``dataset_size`` items in batches of ``batch_size`` leave a
    DDP rank without an evaluation batch (its metrics and logged values could not join the
    other ranks' reductions)."""
    num_batches = -(-dataset_size // batch_size)
    if world_size > 1 and num_batches < world_size:
        raise ShardingError(
            f"{dataset_size} evaluation samples in batches of {batch_size} (data.val_batch_size) fill "
            f"{num_batches} batch(es), fewer than the {world_size} DDP ranks: set data.val_batch_size to at most "
            f"{max(1, dataset_size // world_size)} (or use fewer devices) so that every rank gets a batch"
        )


def global_batch_index(local_index: int, rank: int, world_size: int) -> int:
    """The one-process index of rank ``rank``'s ``local_index``-th batch under :class:`RoundRobinBatchSampler`."""
    return local_index * world_size + rank


class RoundRobinBatchSampler(Sampler):
    """Evaluation batches of one process, dealt to DDP ranks in turn.

    Batch ``g`` holds indices ``g * batch_size .. min((g + 1) * batch_size, dataset_size) - 1``
    (dataset order, the last batch may be short), exactly as one process batches them; rank
    ``r`` yields batches ``r, r + world_size, r + 2 * world_size, ...``. Nothing is padded or
    repeated (unlike ``DistributedSampler``), and every batch is the one-process batch, so
    per-batch results (a loss pooling its batch, the evaluation seed of batch ``g``: see
    :func:`global_batch_index`) and summed metric states equal one process's.

    Raises:
        ShardingError: see :func:`check_every_rank_gets_a_batch`.
    """

    def __init__(self, dataset_size: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        check_every_rank_gets_a_batch(dataset_size, batch_size, world_size)
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_batches = -(-dataset_size // batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for local in range(len(self)):
            start = global_batch_index(local, self.rank, self.world_size) * self.batch_size
            yield list(range(start, min(start + self.batch_size, self.dataset_size)))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_batches, self.world_size))
