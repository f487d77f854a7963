"""Clip sampling, spatial transforms and seeded training draws shared by the real-data modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ocl.data.clips import ClipDataset, SeededDraws, VideoSource
from ocl.data.datamodule import VideoDataModule
from ocl.data.errors import DataError
from ocl.data.movi import MoviDataModule
from ocl.data.sampling import ResumableRandomSampler
from ocl.data.transforms import VideoTransform, short_side_shape


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
    iterator = iter(module.val_dataloader())
    with pytest.raises(DataError, match=r"data\.val_batch_size=1"):
        next(iterator)
    if num_workers:  # stop the worker now: the traceback's cycle would leave it to a garbage collection,
        iterator._shutdown_workers()  # which can close its index queue first and wait 5 s for the worker


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


# ---- the authors' pipeline (VideoSAUR / SlotContrast / SlotCurri recipes) and the options that select it ----


def as_clip(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in [0, 1], the layout the authors' pipeline resizes."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0


def bicubic_clamped(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[3, T, H, W]`` -> ``[T, 3, h, w]``: bicubic without antialiasing, clamped to [0, 1]."""
    return F.interpolate(clip, size=size, mode="bicubic", align_corners=False).clamp(0, 1).permute(1, 0, 2, 3)


def nearest_exact(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, C, H, W]`` resized by torch's nearest-exact."""
    return F.interpolate(tensor, size=size, mode="nearest-exact")


def random_video(height: int, width: int, frames: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        rng.integers(-1, 5, (frames, height, width)).astype(np.int16),
    )


@pytest.mark.parametrize(("height", "width", "size"), [(128, 128, 224), (128, 128, 336), (36, 64, 16)])
def test_bicubic_resize_equals_float_bicubic_clamped(height, width, size):
    frames, masks = random_video(height, width)
    transform = VideoTransform(size=size, mode="resize", interpolation="bicubic", antialias=False)
    video, labels = transform(frames, masks)
    assert torch.equal(video, bicubic_clamped(as_clip(frames), (size, size)))  # bit for bit
    assert video.min() >= 0 and video.max() <= 1
    unclamped = F.interpolate(as_clip(frames), size=(size, size), mode="bicubic", align_corners=False)
    assert unclamped.min() < 0 or unclamped.max() > 1  # the clamp is needed on these frames
    expected = nearest_exact(torch.from_numpy(masks)[:, None].float(), (size, size))[:, 0].long()
    assert torch.equal(labels, expected)


def test_default_resize_is_unchanged_antialiased_uint8_bilinear():
    frames, masks = random_video(36, 64)
    transform = VideoTransform(size=16, mode="resize")
    assert (transform.interpolation, transform.antialias, transform.long_side_rounding) == ("bilinear", True, "round")
    assert transform.stored_short_side is None
    video, _ = transform(frames, masks)
    uint8 = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(uint8, size=(16, 16), mode="bilinear", antialias=True).float() / 255
    assert torch.equal(video, expected)
    float_bilinear = VideoTransform(size=16, mode="resize", antialias=False)(frames, masks)[0]
    reference = F.interpolate(as_clip(frames), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(float_bilinear, reference.clamp(0, 1).permute(1, 0, 2, 3))


@pytest.mark.parametrize(
    ("height", "width", "side", "rounded", "floored"),
    [
        (7, 12, 4, (4, 7), (4, 6)),
        (12, 7, 4, (7, 4), (6, 4)),
        (320, 568, 224, (224, 398), (224, 397)),  # a 720p YT-VIS frame as the authors store it, to 224
        (9, 9, 5, (5, 5), (5, 5)),
    ],
)
def test_long_side_is_rounded_or_floored(height, width, side, rounded, floored):
    assert short_side_shape(height, width, side, "round") == rounded
    assert short_side_shape(height, width, side, "floor") == floored


def test_stored_short_side_is_a_nearest_resize_of_frames_and_masks():
    frames, masks = random_video(30, 50)
    transform = VideoTransform(mode="none", stored_short_side=16)
    assert transform.output_size(30, 50) == (16, 26)  # floor(50 / 30 * 16) = 26
    video, labels = transform(frames, masks)
    expected_video = nearest_exact(as_clip(frames), (16, 26)).permute(1, 0, 2, 3)
    expected_labels = nearest_exact(torch.from_numpy(masks)[:, None].float(), (16, 26))[:, 0].long()
    assert torch.equal(video, expected_video) and torch.equal(labels, expected_labels)


def test_authors_training_crop_is_short_side_bicubic_then_a_random_window():
    frames, masks = random_video(30, 50, frames=3)
    transform = VideoTransform(
        size=12,
        mode="short_side_crop",
        crop="random",
        horizontal_flip=True,
        interpolation="bicubic",
        antialias=False,
        long_side_rounding="floor",
        stored_short_side=20,
    )
    stored = nearest_exact(as_clip(frames), (20, 33))  # floor(50 / 30 * 20) = 33
    resized = bicubic_clamped(stored, (12, 19))  # floor(33 / 20 * 12) = 19
    stored_labels = nearest_exact(torch.from_numpy(masks)[:, None].float(), (20, 33))
    resized_labels = nearest_exact(stored_labels, (12, 19))[:, 0].long()
    windows = set()
    for seed in range(40):
        video, labels = transform(frames, masks, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        top, left, flip = int(rng.integers(1)), int(rng.integers(8)), rng.random() < 0.5
        window = (slice(top, top + 12), slice(left, left + 12))
        expected, expected_labels = resized[..., window[0], window[1]], resized_labels[..., window[0], window[1]]
        if flip:
            expected, expected_labels = expected.flip(-1), expected_labels.flip(-1)
        assert torch.equal(video, expected) and torch.equal(labels, expected_labels)
        windows.add((left, flip))
    assert len(windows) > 8


@pytest.mark.parametrize(("width", "left"), [(15, 2), (13, 2), (12, 1), (10, 0)])
def test_center_square_crops_the_square_first_rounding_half_offsets_to_even(width, left):
    frames, masks = random_video(10, width)
    transform = VideoTransform(size=7, mode="center_square", interpolation="bicubic", antialias=False)
    video, labels = transform(frames, masks, np.random.default_rng(0))  # an rng changes nothing without flips
    square = as_clip(frames)[..., left : left + 10]
    assert torch.equal(video, bicubic_clamped(square, (7, 7)))
    square_labels = torch.from_numpy(masks)[:, None, :, left : left + 10].float()
    assert torch.equal(labels, nearest_exact(square_labels, (7, 7))[:, 0].long())
    assert transform.output_size(10, width) == (7, 7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interpolation": "area"}, "unknown interpolation"),
        ({"long_side_rounding": "ceil"}, "unknown long_side_rounding"),
        ({"mode": "center_square", "crop": "random"}, "centre only"),
        ({"stored_short_side": 0}, "stored_short_side"),
    ],
)
def test_bad_transform_options_fail_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        VideoTransform(**options)


def test_aligned_starts_are_the_chunks_of_the_video():
    dataset = ClipDataset(ArraySource([24, 23, 3]), clip_length=4, aligned_start=True)
    starts = [{int(dataset.clip_frames(i, np.random.default_rng(seed))[0]) for seed in range(200)} for i in range(3)]
    assert starts == [{0, 4, 8, 12, 16, 20}, {0, 4, 8, 12, 16}, {0}]
    assert dataset.clip_frames(2, np.random.default_rng(0)).tolist() == [0, 1, 2, 2]
    strided = ClipDataset(ArraySource([12]), clip_length=2, frame_stride=2, aligned_start=True)  # span 3
    assert {tuple(strided.clip_frames(0, np.random.default_rng(s)).tolist()) for s in range(100)} == {
        (0, 2),
        (3, 5),
        (6, 8),
        (9, 11),
    }


def test_partial_chunks_can_be_dropped():
    dataset = ClipDataset(ArraySource([5, 3, 1]), clip_length=2, chunked=True, drop_partial_chunks=True)
    assert [dataset[i]["meta"]["video_id"] for i in range(len(dataset))] == ["video0@0", "video0@2", "video1@0"]
    assert all(len(dataset[i]["meta"]["frame_indices"]) == 2 for i in range(len(dataset)))
    with pytest.raises(ValueError, match="drop_partial_chunks needs chunked"):
        ClipDataset(ArraySource([5]), clip_length=2, drop_partial_chunks=True)
    with pytest.raises(ValueError, match="eval_drop_partial_chunks needs eval_chunked"):
        MoviDataModule("unused", eval_clip_length=2, eval_drop_partial_chunks=True)
