"""Clip sampling, spatial transforms and seeded training draws shared by the real-data modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ocl.data.clips import ClipDataset, SeededDraws, VideoSource
from ocl.data.datamodule import VideoDataModule
from ocl.data.errors import DataError
from ocl.data.sampling import ResumableRandomSampler
from ocl.data.transforms import VideoTransform


class ArraySource(VideoSource):
    """Videos held in memory: frame ``t`` of video ``i`` has red = 10 * i + t, masks a split at a column."""

    def __init__(self, lengths: list[int], height: int = 12, width: int = 20) -> None:
        self.lengths, self.height, self.width = lengths, height, width

    def __len__(self) -> int:
        return len(self.lengths)

    def video_id(self, index: int) -> str:
        return f"video{index}"

    def num_frames(self, index: int) -> int:
        return self.lengths[index]

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = np.zeros((len(frame_indices), self.height, self.width, 3), np.uint8)
        frames[..., 0] = (10 * index + frame_indices)[:, None, None]
        frames[..., 1] = np.arange(self.width, dtype=np.uint8) * 10  # column code
        masks = np.zeros((len(frame_indices), self.height, self.width), np.int64)
        masks[:, :, self.width // 2 :] = 1
        masks[:, 0, 0] = -1
        return frames, masks


def test_whole_videos_and_first_clips_are_deterministic():
    dataset = ClipDataset(ArraySource([5, 3]), clip_length=None)
    item = dataset[0]
    assert item["video"].shape == (5, 3, 12, 20)
    assert item["meta"]["frame_indices"].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(item["video"][:, 0, 0, 0] * 255, torch.arange(5.0))
    assert item["masks"].dtype == torch.int64 and item["masks"][0, 0, 0] == -1
    clips = ClipDataset(ArraySource([5, 3]), clip_length=2, frame_stride=2)
    assert clips[0]["meta"]["frame_indices"].tolist() == [0, 2]


def test_random_clip_starts_cover_the_video_and_short_videos_repeat_their_last_frame():
    dataset = ClipDataset(ArraySource([6, 2]), clip_length=3)
    starts = {int(dataset.clip_frames(0, np.random.default_rng(seed))[0]) for seed in range(60)}
    assert starts == {0, 1, 2, 3}
    assert dataset.clip_frames(1, np.random.default_rng(0)).tolist() == [0, 1, 1]


def test_resize_keeps_ids_and_short_side_crop_takes_the_centre():
    frames, masks = ArraySource([1]).read(0, np.array([0]))
    video, labels = VideoTransform(size=8, mode="resize")(frames, masks)
    assert video.shape == (1, 3, 8, 8) and labels.shape == (1, 8, 8)
    assert set(labels.unique().tolist()) <= {-1, 0, 1}
    video, labels = VideoTransform(size=6, mode="short_side_crop")(frames, masks)
    # 12x20 -> short side 6: 6x10, centre crop removes 2 columns each side
    assert video.shape == (1, 3, 6, 6)
    assert labels[0, 0].tolist() == [0, 0, 0, 1, 1, 1]


def test_random_crops_and_flips_move_frames_and_masks_together():
    frames, masks = ArraySource([1], height=8, width=24).read(0, np.array([0, 0]))
    transform = VideoTransform(size=8, mode="short_side_crop", crop="random", horizontal_flip=True)
    offsets = set()
    for seed in range(30):
        video, labels = transform(frames, masks, np.random.default_rng(seed))
        column_code = (video[0, 1, 4] * 255).round() / 10  # original column of each output column
        offsets.add((int(column_code[0]), int(column_code[-1])))
        expected = (column_code >= 12).long()
        assert labels[0, 4].tolist() == expected.tolist()
        torch.testing.assert_close(video[0], video[1])
    assert len(offsets) > 5 and any(first > last for first, last in offsets)  # shifted and flipped


def test_seeded_draws_depend_only_on_the_stream_position():
    dataset = SeededDraws(ClipDataset(ArraySource([9, 9, 9]), clip_length=2), seed=3)
    stream = list(ResumableRandomSampler(3, 12, seed=3, with_positions=True))
    resumed = list(ResumableRandomSampler(3, 6, seed=3, start=6, with_positions=True))
    assert stream[6:] == resumed
    for key in resumed:
        torch.testing.assert_close(dataset[key]["video"], SeededDraws(dataset.dataset, seed=3)[key]["video"])
    frames = {tuple(dataset[key]["meta"]["frame_indices"].tolist()) for key in stream}
    assert len(frames) > 1
    with pytest.raises(ValueError, match="unknown transform mode"):
        VideoTransform(mode="stretch")


def test_chunked_evaluation_scores_every_chunk_of_every_video_separately():
    dataset = ClipDataset(ArraySource([5, 3]), clip_length=2, chunked=True)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["meta"]["video_id"] for item in items] == ["video0@0", "video0@2", "video0@4", "video1@0", "video1@2"]
    assert [item["meta"]["frame_indices"].tolist() for item in items] == [[0, 1], [2, 3], [4], [0, 1], [2]]
    torch.testing.assert_close(items[1]["video"][:, 0, 0, 0] * 255, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="clip_length"):
        ClipDataset(ArraySource([5]), clip_length=None, chunked=True)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_whole_videos_of_different_lengths_in_one_batch_are_a_clear_error(num_workers):
    module = VideoDataModule(batch_size=2, num_workers=num_workers)
    module.val_set = ClipDataset(ArraySource([5, 3]))
    with pytest.raises(DataError, match=r"data\.val_batch_size=1"):
        next(iter(module.val_dataloader()))


@pytest.mark.parametrize(("height", "width", "size"), [(36, 64, 16), (10, 14, 23)])
def test_resize_matches_float_bilinear_and_nearest_exact_labels(height, width, size):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    masks = rng.integers(-1, 5, (2, height, width)).astype(np.int16)
    video, labels = VideoTransform(size=size, mode="resize")(frames, masks)
    as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    reference = torch.nn.functional.interpolate(as_float, size=(size, size), mode="bilinear", antialias=True)
    assert (video - reference).abs().max() <= 1 / 255 + 1e-6  # uint8 rounding
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(masks)[:, None].float(), size=(size, size), mode="nearest-exact"
    )[:, 0]
    assert labels.dtype == torch.int64 and torch.equal(labels, expected.long())
