"""A training sampler whose position is a function of the optimiser step (exact resumption).

Lightning restarts the data iterator when a run resumes mid-epoch; a plain shuffled loader
would then replay the epoch's first batches. This sampler is one long stream of indices
(the concatenation of seeded permutations of the dataset) that starts at the sample the
resumed run would have read next, and shards the stream across DDP ranks itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler):
    """Indices ``stream[start + rank :: world_size][:num_samples]`` of a seeded shuffled stream.

    ``stream`` concatenates permutations of ``range(dataset_size)``; permutation ``c`` comes
    from a generator seeded with ``seed * 1_000_003 + c``, so the stream depends on the seed only.

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
        if dataset_size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.dataset_size = dataset_size
        self.num_samples = max(0, num_samples)
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.with_positions = with_positions
        self.consumed = consumed

    def _permutation(self, cycle: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        position = self.start + self.rank
        cycle, permutation = -1, torch.empty(0, dtype=torch.long)
        for _ in range(self.num_samples):
            if position // self.dataset_size != cycle:
                cycle = position // self.dataset_size
                permutation = self._permutation(cycle)
            index = int(permutation[position % self.dataset_size])
            yield (index, position) if self.with_positions else index
            position += self.world_size

    def __len__(self) -> int:
        return self.consumed + self.num_samples
