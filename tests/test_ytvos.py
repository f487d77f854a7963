"""YouTube-VOS training frames: clips are the written frames, gaps and hold-out as documented; bad folders fail clearly."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config
from hydra.utils import instantiate
from PIL import Image
from video_fixtures import YTVOSFixture, write_jpeg, write_ytvos_train

from ocl.cli import train
from ocl.contracts.batch import MASKS, validate_batch
from ocl.data.clips import VideoSource
from ocl.data.errors import DataError
from ocl.data.transforms import VideoTransform
from ocl.data.ytvos import SMTCClips, YouTubeVOSDataModule, smtc_clip_fits

RAW = VideoTransform(mode="none")
LONG, SHORT, EXACT, LAST = "0a1b2c3d4e", "1b2c3d4e5f", "2c3d4e5f6a", "3d4e5f6a7b"
"""Fixture videos by id order: 14, 5, 13 and 13 stored frames."""


@pytest.fixture
def ytvos(tmp_path) -> YTVOSFixture:
    return write_ytvos_train(tmp_path / "ytvos" / "train")


def make_module(fixture: YTVOSFixture, **kwargs) -> YouTubeVOSDataModule:
    options = {
        "num_val_videos": 1,
        "train_clip_length": 4,
        "frame_stride": 4,
        "train_transform": RAW,
        "eval_transform": RAW,
        "batch_size": 2,
        "val_batch_size": 1,
        **kwargs,
    }
    return YouTubeVOSDataModule(str(fixture.root), **options)


def video_ids(dataset) -> list[str]:
    return [dataset.source.video_id(i) for i in range(len(dataset))]


def test_training_clips_are_4_frames_4_apart_and_equal_the_written_frames(ytvos):
    module = make_module(ytvos)
    module.setup("fit")
    assert video_ids(module.train_set) == [LONG, EXACT]  # sorted by id; SHORT is left out
    starts = set()
    for index, name in enumerate([LONG, EXACT]):
        for seed in range(6):
            item = module.train_set.sample(index, np.random.default_rng(seed))
            frame_indices = item["meta"]["frame_indices"].numpy()
            assert item["meta"]["video_id"] == name and MASKS not in item
            assert np.array_equal(np.diff(frame_indices), [4, 4, 4]) and frame_indices[-1] < len(ytvos.frames[name])
            expected, _ = RAW(ytvos.frames[name][frame_indices], None)
            torch.testing.assert_close(item["video"], expected, rtol=0, atol=0)
            starts.add((name, int(frame_indices[0])))
    assert {start for name, start in starts if name == EXACT} == {0}  # 13 frames: the only clip is 0, 4, 8, 12
    assert {start for name, start in starts if name == LONG} == {0, 1}  # 14 frames: two clips, both drawn


def test_validation_is_the_last_videos_whole_and_without_masks(ytvos):
    module = make_module(ytvos, num_val_videos=2)
    module.setup("fit")
    assert video_ids(module.train_set) == [LONG]
    assert video_ids(module.val_set) == [EXACT, LAST]
    batches = list(module.val_dataloader())
    for batch, name in zip(batches, [EXACT, LAST], strict=True):
        validate_batch(batch)
        assert MASKS not in batch and batch["meta"]["video_id"] == [name]
        assert torch.equal(batch["meta"]["frame_indices"][0], torch.arange(13))
        expected, _ = RAW(ytvos.frames[name], None)
        torch.testing.assert_close(batch["video"][0], expected, rtol=0, atol=0)


class LengthsOnly(VideoSource):
    """Videos that only have lengths (clip draws read nothing else)."""

    def __init__(self, *lengths: int) -> None:
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def video_id(self, index: int) -> str:
        return str(index)

    def num_frames(self, index: int) -> int:
        return self.lengths[index]

    def read(self, index, frame_indices):
        raise AssertionError("not read")


@pytest.mark.parametrize(
    ("length", "clips"),
    [
        (13, {(0, 3, 6, 9)}),  # 13 <= 4g + 1: gap 3, centre 6 only
        (14, {(0, 3, 6, 9), (1, 4, 7, 10)}),  # the last 3 frames are never drawn
        (18, {(0, 4, 8, 12), (1, 5, 9, 13)}),  # gap 4, centres 8 and 9: frames 14-17 never drawn
    ],
)
def test_smtc_draw_centres_clips_and_shrinks_the_gap_of_short_videos(length, clips):
    """SMTC's src/data.py: centre c uniform in [2g, n - 2g - 1], frames c - 2g, c - g, c, c + g;
    videos of at most 4g + 1 frames are drawn with g - 1."""
    dataset = SMTCClips(LengthsOnly(length), clip_length=4, frame_stride=4)
    draws = {tuple(dataset.clip_frames(0, np.random.default_rng(seed)).tolist()) for seed in range(40)}
    assert draws == clips
    assert [smtc_clip_fits(n, 4, 4) for n in (12, 13)] == [False, True]  # under 13 frames: no centre at all


def test_smtc_draw_leaves_out_what_it_cannot_draw_from(ytvos, caplog):
    with caplog.at_level(logging.WARNING, logger="ocl.data.ytvos"):
        module = make_module(ytvos, clip_draw="smtc")
        module.setup("fit")
    assert isinstance(module.train_set, SMTCClips) and video_ids(module.train_set) == [LONG, EXACT]
    assert "shorter than the 13 frames" in caplog.text and SHORT in caplog.text
    item = module.train_set.sample(0, np.random.default_rng(0))
    assert np.array_equal(np.diff(item["meta"]["frame_indices"].numpy()), [3, 3, 3])  # LONG: 14 frames, gap 3
    assert module.val_set.clip_length is None  # validation: whole videos, as with the uniform draw
    with pytest.raises(ValueError, match="unknown clip_draw"):
        make_module(ytvos, clip_draw="random")


def test_training_on_every_video_keeps_the_validation_videos_in_train(ytvos):
    module = make_module(ytvos, num_val_videos=2, val_held_out=False)
    module.setup("fit")
    assert video_ids(module.train_set) == [LONG, EXACT, LAST]  # every video long enough (SHORT is not)
    assert video_ids(module.val_set) == [EXACT, LAST]


def test_short_training_videos_are_left_out_and_counted(ytvos, caplog):
    with caplog.at_level(logging.WARNING, logger="ocl.data.ytvos"):
        make_module(ytvos).setup("fit")
    assert "left 1 of 3 training videos out, shorter than the 13 frames" in caplog.text and SHORT in caplog.text
    caplog.clear()
    consecutive = make_module(ytvos, frame_stride=1)  # span 4: every video is long enough
    with caplog.at_level(logging.WARNING, logger="ocl.data.ytvos"):
        consecutive.setup("fit")
    assert video_ids(consecutive.train_set) == [LONG, SHORT, EXACT] and not caplog.text
    with pytest.raises(DataError, match="no training video .* has the 31 frames .*\\(the longest has 14\\)"):
        make_module(ytvos, frame_stride=10).setup("fit")


def test_there_is_no_test_split(ytvos):
    module = make_module(ytvos)
    module.setup()
    assert module.test_set is None and module.val_set is not None
    with pytest.raises(DataError, match="no test split.*eval.split=val.*data=davis2017"):
        module.setup("test")


@pytest.mark.parametrize("num_val_videos", [4, 9])
def test_validation_cannot_take_every_video(ytvos, num_val_videos):
    with pytest.raises(DataError, match=f"num_val_videos={num_val_videos} must be between 1 and 3"):
        make_module(ytvos, num_val_videos=num_val_videos).setup("fit")
    with pytest.raises(ValueError, match="num_val_videos must be >= 1"):
        make_module(ytvos, num_val_videos=0)


def test_config_is_smtcs_recipe_under_the_data_root(ytvos, tmp_path):
    cfg = compose_config(
        [
            "data=ytvos",
            f"paths.data_root={ytvos.root.parents[1]}",
            "data.num_val_videos=1",
            "data.num_workers=0",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert cfg.data.root == str(ytvos.root)  # ${paths.data_root}/ytvos/train
    assert (cfg.data.train_clip_length, cfg.data.frame_stride, cfg.data.val_batch_size) == (4, 4, 1)
    assert (cfg.data.clip_draw, cfg.data.val_held_out) == ("smtc", False)  # SMTC trains on every video
    module = instantiate(cfg.data)
    assert isinstance(module, YouTubeVOSDataModule) and module.train_transform.mode == "resize"
    module.setup("fit")
    assert video_ids(module.train_set) == [LONG, EXACT, LAST]
    item = module.train_set.sample(0, np.random.default_rng(0))
    assert item["video"].shape == (4, 3, 256, 256)  # 24 x 32 frames stretched to 256 x 256
    assert np.array_equal(np.diff(item["meta"]["frame_indices"].numpy()), [3, 3, 3])  # 14 frames: SMTC's gap 3
    batch = next(iter(module.val_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape == (1, 13, 3, 256, 256) and MASKS not in batch


def test_the_frame_size_follows_a_vit_encoder(ytvos, tmp_path):
    overrides = ["data=ytvos", f"data.root={ytvos.root}", f"paths.output_dir={tmp_path}"]
    cfg = compose_config(["model=videosaur", "model.encoder.image_size=112", *overrides])
    assert cfg.data.train_transform.size == cfg.data.eval_transform.size == 112


def test_training_runs_and_validates_without_labels(ytvos, tmp_path):
    """A tiny SAVi trains on the frames; validation logs its loss and writes mask overlays but no segmentation metric."""
    model_tiny = [o for o in TINY if not o.startswith("data.")]
    overrides = [
        "data=ytvos",
        f"data.root={ytvos.root}",
        "data.num_val_videos=1",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.train_transform.size=32",
        "data.eval_transform.size=32",
        *model_tiny,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    metrics = train(compose_config(overrides), overrides)
    assert math.isfinite(metrics["val/loss"])
    assert not [name for name in metrics if "ari" in name or "mbo" in name or "miou" in name]
    assert list((tmp_path / "run" / "visualisations").glob("val_step*.gif"))


# ---- bad input: a DataError naming the file or folder, at setup or at the first item that reads it ----


def test_missing_root_says_where_and_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match="YouTube-VOS not found") as info:
        YouTubeVOSDataModule(str(tmp_path / "nowhere")).setup("fit")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "train.zip" in message
    assert "https://youtube-vos.org/dataset/vos/" in message


def test_a_root_above_the_train_folder_is_named_in_the_error(ytvos):
    with pytest.raises(DataError, match="JPEGImages does not exist") as info:
        YouTubeVOSDataModule(str(ytvos.root.parent)).setup("fit")
    assert f"Did you mean data.root={ytvos.root}?" in str(info.value)
    with pytest.raises(DataError, match=f"Did you mean data.root={ytvos.root}\\?"):
        YouTubeVOSDataModule(str(ytvos.root / "JPEGImages")).setup("fit")


def test_corrupt_jpeg_is_named(ytvos):
    path = ytvos.jpeg(LONG, 3)
    path.write_bytes(path.read_bytes()[:200])
    module = make_module(ytvos, frame_stride=1)
    module.setup("fit")
    with pytest.raises(DataError, match="cannot read image") as info:
        module.train_set.source.read(0, np.arange(14))
    assert str(path) in str(info.value)


def test_video_folder_without_frames(ytvos):
    empty = ytvos.root / "JPEGImages" / "4e5f6a7b8c"
    empty.mkdir()
    with pytest.raises(DataError, match="has no JPEG frames") as info:
        make_module(ytvos).setup("fit")
    assert str(empty) in str(info.value)


def test_no_video_folders(tmp_path):
    (tmp_path / "train" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DataError, match="has no video folders"):
        YouTubeVOSDataModule(str(tmp_path / "train")).setup("fit")


def test_frame_of_another_size_in_a_clip(ytvos):
    path = ytvos.jpeg(EXACT, 8)
    write_jpeg(path, np.zeros((20, 32, 3), np.uint8))
    module = make_module(ytvos)
    module.setup("fit")
    with pytest.raises(DataError, match="is 20x32 .* is 24x32") as info:
        module.train_set.sample(1, np.random.default_rng(0))
    assert str(path) in str(info.value)


def test_files_beside_video_folders_and_frames_are_ignored(ytvos):
    (ytvos.root / "JPEGImages" / "list.txt").write_text("not a video")
    Image.new("RGB", (32, 24)).save(ytvos.root / "JPEGImages" / LONG / "thumbnail.png")
    module = make_module(ytvos)
    module.setup("fit")
    assert video_ids(module.train_set) == [LONG, EXACT] and module.train_set.source.num_frames(0) == 14
