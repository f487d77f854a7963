"""The items the authors' WebDataset validation loader scores (ocl/data/eval_subset.py)."""

from __future__ import annotations

import pytest

from ocl.data.eval_subset import WebDatasetEvalSubset


def test_one_worker_with_batches_of_one_scores_the_first_videos():
    # SlotContrast / SlotCurri on YT-VIS: 300 videos in shards of 10, val_size 200 -> 7 * 30 = 210 batches.
    selected = WebDatasetEvalSubset(val_size=200, shard_size=10, num_workers=1, batch_size=1).select(range(300), 300)
    assert selected == list(range(210))


@pytest.mark.parametrize(("num_workers", "batch_size"), [(8, 16), (2, 16), (1, 4)])
def test_movi_validation_scores_every_video_once(num_workers, batch_size):
    # 250 videos in shards of 32; the last worker pads its stream with placeholders, which are never scored.
    subset = WebDatasetEvalSubset(val_size=250, shard_size=32, num_workers=num_workers, batch_size=batch_size)
    assert sorted(subset.select(range(250), 250)) == list(range(250))


def test_workers_read_every_num_workers_th_shard_and_batches_come_in_turn():
    # Items (chunks) per video: v0 -> 0, 1, 2; v1 -> 3; v2 -> 4, 5; v3 -> 6. One video per shard, two
    # workers (shards 0, 2 and 1, 3), batches of 2; val_size 1 -> 2 videos per worker -> 2 batches.
    subset = WebDatasetEvalSubset(val_size=1, shard_size=1, num_workers=2, batch_size=2)
    assert subset.select([0, 0, 0, 1, 2, 2, 3], 4) == [0, 1, 3, 6]  # worker 0's first batch, then worker 1's
    # val_size 8 -> 4 videos per worker (placeholders after the real ones) -> 4 batches: item 5 is never scored.
    assert WebDatasetEvalSubset(8, 1, 2, 2).select([0, 0, 0, 1, 2, 2, 3], 4) == [0, 1, 3, 6, 2, 4]


def test_the_loader_starts_over_when_its_workers_run_dry():
    # Videos 1 and 2 have no item (shorter than a chunk): one batch per pass, three batches wanted.
    assert WebDatasetEvalSubset(val_size=3, shard_size=3, num_workers=1, batch_size=1).select([0], 3) == [0, 0, 0]


def test_placeholders_count_in_batches_but_are_not_scored():
    # Items per video: v0 -> 0, 1; v1 -> 2; v2 -> 3, 4. Workers read videos 0, 2 and 1; val_size 3 -> 2 videos
    # per worker, so worker 1 adds a placeholder video (one item, like its first video). 4 batches of 1:
    # worker 0's [0], worker 1's [2], worker 0's [1], worker 1's placeholder: items 3 and 4 are never scored.
    subset = WebDatasetEvalSubset(val_size=3, shard_size=1, num_workers=2, batch_size=1)
    assert subset.select([0, 0, 1, 2, 2], 3) == [0, 2, 1]


@pytest.mark.parametrize("field", ["val_size", "shard_size", "num_workers", "batch_size"])
def test_sizes_must_be_positive(field):
    values = {"val_size": 1, "shard_size": 1, "num_workers": 1, "batch_size": 1, field: 0}
    with pytest.raises(ValueError, match=field):
        WebDatasetEvalSubset(**values)
