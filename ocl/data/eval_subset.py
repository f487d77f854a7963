"""The evaluation items that VideoSAUR's, SlotContrast's and SlotCurri's validation loader scores.

Their validation reads the split from WebDataset shards (``save_*.py --maxcount``: consecutive
videos per shard, in split order) with ``dataset.num_val_workers`` loader workers. Worker ``k``
reads shards ``k, k + W, k + 2W, ...``, pads its video stream with placeholder videos (dropped
before the metrics) up to ``ceil(val_size / shards) * ceil(shards / W)`` videos, turns the
videos into items (whole videos, or chunks) and batches its own items (the last batch partial);
the loader takes batches from the workers in turn and ends the epoch after
``ceil(W * padded / batch_size)`` batches (``with_epoch``), starting over from the first batch
if the workers run dry first. That count is computed from ``val_size`` (a config value, 200 on
YT-VIS), not from the number of items: on YT-VIS it scores the first 210 of the 300 held-out
videos (SlotContrast, SlotCurri: one worker, batches of 1) or 224 of the 6-frame chunks, the
first chunks of each worker's stream (VideoSAUR: eight workers, batches of 16). On MOVi it scores
every video.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

PLACEHOLDER = -1
"""Item index of a placeholder video's items (counted in batches, never scored)."""


@dataclass(frozen=True)
class WebDatasetEvalSubset:
    """The authors' validation loader, as far as it decides which items are scored.

    Args:
        val_size: their ``dataset.val_size`` (the loader's epoch length is computed from it).
        shard_size: videos per shard (``--maxcount`` of their conversion script).
        num_workers: their ``dataset.num_val_workers``.
        batch_size: their ``dataset.val_batch_size``.
    """

    val_size: int
    shard_size: int
    num_workers: int
    batch_size: int

    def __post_init__(self) -> None:
        for name in ("val_size", "shard_size", "num_workers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def select(self, item_videos: Sequence[int], num_videos: int) -> list[int]:
        """Indices of the scored items, in the order the loader yields them (repeats possible).

        Args:
            item_videos: the video (index in split order) of each item, items of a video
                consecutive and in video order, as :class:`~ocl.data.clips.ClipDataset` lists them.
            num_videos: videos in the split (some may have no item, e.g. shorter than a chunk).
        """
        items_of = [[] for _ in range(num_videos)]
        for item, video in enumerate(item_videos):
            items_of[video].append(item)
        num_shards = math.ceil(num_videos / self.shard_size)
        padded = math.ceil(self.val_size / num_shards) * math.ceil(num_shards / self.num_workers)
        batches = [self._worker_batches(items_of, worker, num_shards, padded) for worker in range(self.num_workers)]
        wanted = math.ceil(self.num_workers * padded / self.batch_size)
        in_turn = [batch for round_ in zip_longest(*batches) for batch in round_ if batch is not None]
        taken = [] if not in_turn else [in_turn[i % len(in_turn)] for i in range(wanted)]  # restarts when dry
        return [item for batch in taken for item in batch if item != PLACEHOLDER]

    def _worker_batches(self, items_of: list[list[int]], worker: int, num_shards: int, padded: int) -> list[list[int]]:
        """The batches of item indices that ``worker`` yields (placeholders as :data:`PLACEHOLDER`)."""
        videos = [
            video
            for shard in range(worker, num_shards, self.num_workers)
            for video in range(shard * self.shard_size, min((shard + 1) * self.shard_size, len(items_of)))
        ]
        items = [item for video in videos for item in items_of[video]]
        if videos and len(videos) < padded:  # a placeholder has the shape of the worker's first video
            items += [PLACEHOLDER] * (len(items_of[videos[0]]) * (padded - len(videos)))
        return [items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size)]
