"""Video files read with decord (and PyAV): frames, random access, clips, errors, the data module."""

from __future__ import annotations

import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from video_fixtures import HEIGHT, WIDTH, block_frames, write_mp4

from ocl.contracts.batch import MASKS, META, VIDEO, validate_batch
from ocl.data.clips import ClipDataset
from ocl.data.errors import DataError
from ocl.data.transforms import VideoTransform
from ocl.data.video_files import (
    VideoFilesDataModule,
    VideoFileSource,
    find_video_files,
    read_clip,
    read_clip_pyav,
)


def decode_all_pyav(path: Path) -> np.ndarray:
    """Every frame, decoded sequentially from the start: uint8 ``[T, H, W, 3]``."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture
def lossless_mp4(tmp_path: Path) -> tuple[Path, np.ndarray]:
    frames = block_frames(0, 8)
    return write_mp4(tmp_path / "clip.mp4", frames), frames


@pytest.fixture
def camera_mp4(tmp_path: Path) -> Path:
    """24 frames, 4:2:0, B-frames and a keyframe every 5 frames: random access must seek."""
    return write_mp4(tmp_path / "camera.mp4", block_frames(1, 24), lossless=False, keyframe_interval=5)


# ----------------------------------------------------------------------------- decoding


def test_read_clip_returns_the_written_frames(lossless_mp4: tuple[Path, np.ndarray]) -> None:
    path, frames = lossless_mp4
    decoded = read_clip(path, np.arange(8))
    assert decoded.shape == (8, HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
    # Lossless YUV 4:4:4; only the RGB <-> YUV conversions round.
    assert np.abs(decoded.astype(int) - frames).max() <= 3
    assert VideoFileSource([path]).num_frames(0) == 8


def test_random_access_equals_sequential_decoding(camera_mp4: Path) -> None:
    sequential = decode_all_pyav(camera_mp4)
    assert len(sequential) == 24
    indices = [17, 3, 3, 23, 0, 11, 12, 4]  # unordered, repeated, across keyframes
    np.testing.assert_array_equal(read_clip(camera_mp4, indices), sequential[indices])
    np.testing.assert_array_equal(read_clip(camera_mp4, range(24)), sequential)


def test_pyav_and_decord_agree(camera_mp4: Path) -> None:
    indices = [9, 2, 2, 20, 21, 0, 14]
    np.testing.assert_array_equal(read_clip_pyav(camera_mp4, indices), read_clip(camera_mp4, indices))


def test_out_of_range_frames(lossless_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = lossless_mp4
    for read in (read_clip, read_clip_pyav):
        with pytest.raises(IndexError, match="8 frames"):
            read(path, [0, 8])


# ----------------------------------------------------------------------------- sources and clips


def test_source_stride_max_frames_and_ids(tmp_path: Path, camera_mp4: Path) -> None:
    (tmp_path / "sub").mkdir()
    other = write_mp4(tmp_path / "sub" / "b.mp4", block_frames(2, 8))
    source = VideoFileSource([camera_mp4, other], frame_stride=5)
    assert [source.num_frames(i) for i in range(2)] == [5, 2]  # frames 0, 5, ..., 20 and 0, 5
    assert [source.video_id(i) for i in range(2)] == ["camera", "sub/b"]
    frames, masks = source.read(0, np.array([4, 1, 1]))
    assert masks is None
    np.testing.assert_array_equal(frames, read_clip(camera_mp4, [20, 5, 5]))
    capped = VideoFileSource([camera_mp4], max_frames=3, frame_stride=2)
    assert capped.num_frames(0) == 3
    with pytest.raises(IndexError):
        capped.read(0, np.array([3]))
    with pytest.raises(ValueError, match="frame_stride"):
        VideoFileSource([camera_mp4], frame_stride=0)


def test_clip_dataset_samples_random_clips(camera_mp4: Path) -> None:
    dataset = ClipDataset(VideoFileSource([camera_mp4]), clip_length=4, frame_stride=2)
    item = dataset.sample(0, np.random.default_rng(3))
    start = int(item[META]["frame_indices"][0])
    np.testing.assert_array_equal(item[META]["frame_indices"].numpy(), start + 2 * np.arange(4))
    assert MASKS not in item and item[META]["video_id"] == "camera"
    expected = torch.from_numpy(read_clip(camera_mp4, start + 2 * np.arange(4))).permute(0, 3, 1, 2) / 255.0
    torch.testing.assert_close(item[VIDEO], expected)
    whole = ClipDataset(VideoFileSource([camera_mp4]))[0]
    assert whole[VIDEO].shape == (24, 3, HEIGHT, WIDTH)


def test_source_pickles_after_reading(camera_mp4: Path) -> None:
    source = VideoFileSource([camera_mp4])
    first, _ = source.read(0, np.array([7]))
    copy = pickle.loads(pickle.dumps(source))  # open readers are dropped, then reopened
    np.testing.assert_array_equal(copy.read(0, np.array([7]))[0], first)


# ----------------------------------------------------------------------------- errors


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    data = write_mp4(tmp_path / "good.mp4", block_frames(4, 16)).read_bytes()
    faststart = write_mp4(tmp_path / "good_faststart.mp4", block_frames(4, 16), faststart=True).read_bytes()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    truncated = tmp_path / "truncated.mp4"  # index (moov) at the end: cut off
    truncated.write_bytes(data[: len(data) // 2])
    truncated_data = tmp_path / "truncated_faststart.mp4"  # index first, frames cut off
    truncated_data.write_bytes(faststart[: len(faststart) // 2])
    return {"text": text, "truncated": truncated, "truncated data": truncated_data, "missing": tmp_path / "gone.mp4"}


@pytest.mark.parametrize("kind", ["text", "truncated", "truncated data", "missing"])
def test_bad_files_raise_data_error_naming_them(tmp_path: Path, kind: str) -> None:
    path = _corrupt_files(tmp_path)[kind]
    with pytest.raises(DataError, match=path.name):
        VideoFileSource([path])
    with pytest.raises(DataError, match=path.name):
        read_clip(path, [0])
    with pytest.raises(DataError, match=path.name):
        read_clip_pyav(path, [0])


def test_find_video_files(tmp_path: Path, lossless_mp4: tuple[Path, np.ndarray]) -> None:
    path, frames = lossless_mp4
    second = write_mp4(tmp_path / "a.MOV", frames)
    (tmp_path / "notes.txt").write_text("not a video")
    assert find_video_files(str(tmp_path)) == [second, path]  # sorted; only video suffixes
    assert find_video_files([str(tmp_path / "*.mp4"), str(second)]) == [path, second]
    with pytest.raises(DataError, match="gone.mp4"):
        find_video_files([str(path), str(tmp_path / "gone.mp4")])
    with pytest.raises(DataError, match="no file matches"):
        find_video_files(str(tmp_path / "*.avi"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video file"):
        find_video_files(tmp_path / "empty")


# ----------------------------------------------------------------------------- data module


def test_data_module_batches(tmp_path: Path, camera_mp4: Path) -> None:
    module = VideoFilesDataModule(
        paths=str(tmp_path),
        eval_transform=VideoTransform(size=32, mode="resize"),
        train_transform=VideoTransform(size=32, mode="short_side_crop", crop="random"),
        batch_size=2,
    )
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    validate_batch(batch)
    assert batch[VIDEO].shape == (1, 24, 3, 32, 32) and MASKS not in batch
    assert batch[META]["video_id"] == ["camera"]
    train_batch = next(iter(module.train_dataloader()))
    validate_batch(train_batch)
    assert train_batch[VIDEO].shape == (1, 4, 3, 32, 32)  # without a trainer: one pass over one video


def test_data_module_with_workers(camera_mp4: Path) -> None:
    """Each worker process opens its own readers."""
    module = VideoFilesDataModule(paths=[str(camera_mp4)], num_workers=1, max_frames=6)
    module.setup("validate")
    batch = next(iter(module.val_dataloader()))
    expected = torch.from_numpy(read_clip(camera_mp4, range(6))).permute(0, 3, 1, 2) / 255.0
    torch.testing.assert_close(batch[VIDEO][0], expected)


def test_whole_videos_of_different_lengths_need_batch_size_one(tmp_path: Path, camera_mp4: Path) -> None:
    write_mp4(tmp_path / "short.mp4", block_frames(5, 8))
    module = VideoFilesDataModule(paths=str(tmp_path), val_batch_size=2)
    with pytest.raises(ValueError, match="val_batch_size=1"):
        module.setup("validate")
    same_length = VideoFilesDataModule(paths=str(tmp_path), val_batch_size=2, eval_clip_length=8)
    same_length.setup("validate")
    assert next(iter(same_length.val_dataloader()))[VIDEO].shape[:2] == (2, 8)


def test_config_composes(tmp_path: Path, camera_mp4: Path) -> None:
    cfg = compose_config([f"paths.output_dir={tmp_path}", "data=video_files", f"data.paths=[{camera_mp4}]"])
    module = instantiate(cfg.data)
    assert isinstance(module, VideoFilesDataModule) and module.files == [camera_mp4]
    assert module.eval_transform.size == 224  # the CNN default model has no encoder.image_size
