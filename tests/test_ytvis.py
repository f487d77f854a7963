"""YouTube-VIS 2019/2021: what the data module yields is what the fixture wrote; bad folders fail clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from hydra.utils import instantiate
from video_fixtures import (
    YTVISFixture,
    assert_train_samples_match,
    assert_whole_video_batches_match,
    box,
    compressed_rle,
    uncompressed_rle,
    write_ytvis,
)

from ocl.contracts.batch import IGNORE_ID, validate_batch
from ocl.data.errors import DataError
from ocl.data.transforms import VideoTransform
from ocl.data.ytvis import YTVISDataModule, compressed_rle_counts, decode_segmentation

NUM_VAL = 2
"""Validation videos of the fixture: the last two of its four."""


@pytest.fixture(params=[2019, 2021])
def ytvis(request, tmp_path) -> YTVISFixture:
    return write_ytvis(tmp_path / f"ytvis{request.param}", request.param)


def make_module(fixture: YTVISFixture, **kwargs) -> YTVISDataModule:
    options = {"num_val_videos": NUM_VAL, "train_clip_length": 2, "batch_size": 2, "val_batch_size": 1, **kwargs}
    return YTVISDataModule(str(fixture.root), fixture.version, **options)


def load_everything(module: YTVISDataModule) -> None:
    """Open the train and val splits and read every item of both."""
    module.setup()
    for dataset in (module.train_set, module.val_set):
        for index in range(len(dataset)):
            dataset[index]


def test_raw_frames_and_ids_equal_what_was_written(ytvis):
    module = make_module(ytvis)
    module.setup("fit")
    raw = VideoTransform(mode="none")
    assert_train_samples_match(module.train_set, ytvis.videos[:-NUM_VAL], raw)
    assert_whole_video_batches_match(module.val_dataloader(), ytvis.videos[-NUM_VAL:], raw)
    item = module.val_set[0]
    assert torch.equal(item["video"], torch.from_numpy(ytvis.videos[2].frames).permute(0, 3, 1, 2).float() / 255)


@pytest.mark.parametrize("mode,size", [("short_side_crop", 16), ("resize", 20)])
def test_both_protocols_equal_the_transform_of_the_written_arrays(ytvis, mode, size):
    train_transform = VideoTransform(size=size, mode=mode, crop="random", horizontal_flip=True)
    eval_transform = VideoTransform(size=size, mode=mode, crop="center")
    module = make_module(ytvis, train_transform=train_transform, eval_transform=eval_transform)
    module.setup("fit")
    assert_train_samples_match(module.train_set, ytvis.videos[:-NUM_VAL], train_transform)
    assert_whole_video_batches_match(module.val_dataloader(), ytvis.videos[-NUM_VAL:], eval_transform)
    assert module.val_set[0]["video"].shape == (5, 3, size, size)


def test_ids_follow_annotation_order_and_overlaps_are_ignored(ytvis):
    module = make_module(ytvis, num_val_videos=3)
    module.setup("fit")
    _, masks = module.train_set.source.read(0, np.arange(4))  # v0: compressed RLE object 1, uncompressed RLE
    masks = torch.from_numpy(masks)  # object 2, null in frame 2
    overlap = (masks == IGNORE_ID).nonzero()
    assert len(overlap) > 0 and set(masks.unique().tolist()) == {IGNORE_ID, 0, 1, 2}
    assert 2 not in masks[2] and IGNORE_ID not in masks[2]  # absent in frame 2: no id, no overlap
    val = [module.val_set[i]["masks"] for i in range(3)]
    assert set(val[0].unique().tolist()) == {0, 1, 2}  # v1: polygon object 1, mixed object 2 (interleaved in JSON)
    assert 2 not in val[0][0]
    assert val[1].unique().tolist() == [0]  # v2: no annotations at all
    assert set(val[2].unique().tolist()) == {0, 1}


def test_splits_are_the_last_videos_of_the_json(ytvis):
    names = [video.name for video in ytvis.videos]
    for num_val in (1, 3):
        module = make_module(ytvis, num_val_videos=num_val)
        module.setup()
        assert [module.train_set.source.video_id(i) for i in range(len(module.train_set))] == names[:-num_val]
        assert [module.val_set.source.video_id(i) for i in range(len(module.val_set))] == names[-num_val:]
        assert module.test_set is None


def test_there_is_no_test_split(ytvis):
    with pytest.raises(DataError, match="no test split with public labels"):
        make_module(ytvis).setup("test")


@pytest.mark.parametrize("num_val", [4, 10])
def test_too_many_validation_videos(ytvis, num_val):
    with pytest.raises(DataError, match=f"num_val_videos={num_val} .* has 4 videos"):
        make_module(ytvis, num_val_videos=num_val).setup()


def test_bad_arguments_fail_at_construction(ytvis):
    with pytest.raises(ValueError, match="unknown YouTube-VIS version"):
        YTVISDataModule(str(ytvis.root), version=2020)
    with pytest.raises(ValueError, match="num_val_videos"):
        YTVISDataModule(str(ytvis.root), version=ytvis.version, num_val_videos=0)


def test_annotation_file_option(ytvis):
    moved = ytvis.root / "annotations" / "elsewhere.json"
    moved.parent.mkdir()
    ytvis.json_path.rename(moved)
    module = make_module(ytvis, annotation_file="annotations/elsewhere.json")
    module.setup()
    assert len(module.train_set) == 2


def test_config_composes_and_yields_the_vit16_protocol(ytvis, tmp_path):
    cfg = compose_config(
        [
            f"data=ytvis{ytvis.version}",
            f"data.root={ytvis.root}",
            f"data.num_val_videos={NUM_VAL}",
            "data.num_workers=0",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert cfg.data.eval_clip_length is None and cfg.data.val_batch_size == 1
    module = instantiate(cfg.data)
    assert isinstance(module, YTVISDataModule) and module.version == ytvis.version
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape == (1, 5, 3, 224, 224)
    assert module.train_set.sample(0, np.random.default_rng(0))["video"].shape == (4, 3, 224, 224)


# ---- bad input: a DataError naming the file, at setup or at the first item that reads it ----


def test_missing_root_says_where_and_how_to_get_the_data(tmp_path):
    module = YTVISDataModule(str(tmp_path / "nowhere"), version=2021)
    with pytest.raises(DataError, match="youtube-vos.org") as info:
        module.setup()
    assert str(tmp_path / "nowhere") in str(info.value)


def test_missing_json(ytvis):
    ytvis.json_path.unlink()
    with pytest.raises(DataError, match="annotation file .* does not exist") as info:
        make_module(ytvis).setup()
    assert str(ytvis.json_path) in str(info.value)


def test_corrupt_json(ytvis):
    ytvis.json_path.write_text('{"videos": [')
    with pytest.raises(DataError, match="not a readable JSON"):
        make_module(ytvis).setup()


def test_annotation_with_unknown_video_id(ytvis):
    ytvis.edit_json(lambda data: data["annotations"][1].update(video_id=99))
    with pytest.raises(DataError, match=r"annotations\[1\] refers to video_id 99"):
        make_module(ytvis).setup()


def test_length_disagrees_with_file_names(ytvis):
    ytvis.edit_json(lambda data: data["videos"][1].update(length=4))
    with pytest.raises(DataError, match=r"videos\[1\] has length 4 but 3 file_names"):
        make_module(ytvis).setup()


def test_missing_jpeg(ytvis):
    ytvis.jpeg(3, 1).unlink()
    with pytest.raises(DataError, match="found 2 JPEGs") as info:
        make_module(ytvis).setup()
    assert str(ytvis.jpeg(3, 1)) in str(info.value)


def test_missing_video_folder(ytvis):
    for t in range(3):
        ytvis.jpeg(1, t).unlink()
    ytvis.jpeg(1, 0).parent.rmdir()
    with pytest.raises(DataError, match="1b2c3d4e5f.*missing"):
        make_module(ytvis).setup()


def test_mask_count_disagrees_with_frames(ytvis):
    ytvis.edit_json(lambda data: data["annotations"][4]["segmentations"].pop())
    with pytest.raises(DataError, match="has 2 segmentations but video 3d4e5f6a7b .* has 3 frames"):
        make_module(ytvis).setup()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg(ytvis, damage):
    path = ytvis.jpeg(0, 1)
    data = path.read_bytes()
    path.write_bytes(b"not a jpeg" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read image") as info:
        load_everything(make_module(ytvis))
    assert str(path) in str(info.value)


def test_jpeg_size_differs_from_json(ytvis):
    ytvis.edit_json(lambda data: data["videos"][3].update(height=20))
    with pytest.raises(DataError, match="is 24x32 .* says video 3d4e5f6a7b is 20x32") as info:
        load_everything(make_module(ytvis))
    assert str(ytvis.jpeg(3, 0)) in str(info.value)


@pytest.mark.parametrize("annotation", [0, 2])  # compressed, uncompressed RLE
def test_mask_size_differs_from_frame(ytvis, annotation):
    ytvis.edit_json(lambda data: data["annotations"][annotation]["segmentations"][1].update(size=[24, 31]))
    with pytest.raises(
        DataError, match=r"frame 1 .*mask size \[24, 31\] differs from the frame size \[24, 32\]"
    ) as info:
        load_everything(make_module(ytvis))
    assert str(ytvis.json_path) in str(info.value) and "0a1b2c3d4e" in str(info.value)


def test_malformed_segmentation(ytvis):
    ytvis.edit_json(lambda data: data["annotations"][1]["segmentations"].__setitem__(0, 7))
    with pytest.raises(DataError, match="expected an RLE dict, a polygon list or null, got int"):
        load_everything(make_module(ytvis))


# ---- RLE counts: they must add up to exactly H*W, or pycocotools fills the rest from uninitialised memory ----

WHERE = "train.json: video 0a1b2c3d4e, object 1, frame 0"
"""What a caller names the segmentation by; every error below must repeat it."""


def irregular_masks() -> list[np.ndarray]:
    """24x32 masks whose RLEs have runs of one to several hundred pixels: noise, a box, empty, full."""
    rng = np.random.default_rng(3)
    return [rng.random((24, 32)) < p for p in (0.1, 0.5, 0.9)] + [
        box(24, 32, 2, 3, 20, 30),
        np.zeros((24, 32), bool),
        np.ones((24, 32), bool),
    ]


@pytest.mark.parametrize("encode", [compressed_rle, uncompressed_rle])
def test_valid_rle_decodes_to_the_encoded_mask(encode):
    for mask in irregular_masks():
        decoded = decode_segmentation(encode(mask), 24, 32, WHERE)
        assert decoded.dtype == bool and np.array_equal(decoded, mask)


def test_compressed_counts_decode_to_the_run_lengths_pycocotools_encoded():
    """The checker's own decoding of compressed strings agrees with pycocotools' encoder, also for
    run lengths of several characters and negative differences (a 720x1280 frame)."""
    rng = np.random.default_rng(4)
    large = box(720, 1280, 100, 200, 600, 1100) ^ (rng.random((720, 1280)) < 0.001)
    for mask in [*irregular_masks(), large]:
        assert compressed_rle_counts(compressed_rle(mask)["counts"], WHERE).tolist() == uncompressed_rle(mask)["counts"]


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([198, 8, 16], r"uncompressed RLE counts \(3 runs\) add up to 222 pixels, but the mask is 24x32 = 768 pixels"),
        ([700, 8, 92], r"uncompressed RLE counts \(3 runs\) add up to 800 pixels, but the mask is 24x32 = 768 pixels"),
        ([], r"uncompressed RLE counts \(0 runs\) add up to 0 pixels"),
        ([800, -32], r"uncompressed RLE counts have a negative run length -32 at index 1"),
        ([760.5, 7.5], r"RLE counts must be a flat list of integers"),
        ("018", r"compressed RLE counts \(3 runs\) add up to 9 pixels, but the mask is 24x32 = 768 pixels"),
        ("S38`00", r"compressed RLE counts \(4 runs\) add up to 131 pixels, but the mask is 24x32 = 768 pixels"),
        ("S", r"compressed RLE counts \(1 characters\) end in the middle of a run length; the string is truncated"),
        ("S3 8", r"compressed RLE counts have an invalid character b' ' at position 2"),
        ("S" * 7 + "0", r"compressed RLE counts have a run length of 8 characters"),
        (None, r"RLE 'counts' must be a list of run lengths or a compressed string, got NoneType"),
    ],
)
def test_rle_counts_that_do_not_cover_the_frame_exactly_fail_naming_the_segmentation(counts, message):
    with pytest.raises(DataError, match=message) as info:
        decode_segmentation({"size": [24, 32], "counts": counts}, 24, 32, WHERE)
    assert str(info.value).startswith(f"{WHERE}: ")


@pytest.mark.parametrize(
    ("annotation", "cut", "message"),
    [  # frame 1 of v0: compressed 'S38`000000000000000000]=' (object 1), 21 uncompressed runs (object 2)
        (0, slice(0, 6), r"object 1, frame 1 .*the compressed RLE counts \(4 runs\) add up to 131 pixels"),
        (2, slice(0, -1), r"object 2, frame 1 .*the uncompressed RLE counts \(20 runs\) add up to 471 pixels"),
    ],
)
def test_rle_counts_cut_short_in_the_json_fail_when_the_frame_is_read(ytvis, annotation, cut, message):
    """A truncated compressed string (object 1 of v0) or a shortened run list (object 2) names the JSON,
    the video, the object and the frame, instead of yielding a mask from uninitialised memory."""

    def edit(data):
        rle = data["annotations"][annotation]["segmentations"][1]
        rle["counts"] = rle["counts"][cut]

    ytvis.edit_json(edit)
    module = make_module(ytvis)
    module.setup()
    with pytest.raises(DataError, match=message) as info:
        module.train_set.source.read(0, np.arange(4))
    assert str(ytvis.json_path) in str(info.value) and "0a1b2c3d4e" in str(info.value)


def test_train_loader_without_trainer_yields_valid_batches(ytvis):
    module = make_module(ytvis, train_transform=VideoTransform(16, "short_side_crop", "random"))
    module.setup("fit")
    batches = list(module.train_dataloader())
    assert len(batches) == 1
    validate_batch(batches[0])
    assert batches[0]["video"].shape == (2, 2, 3, 16, 16)
    assert sorted(batches[0]["meta"]["video_id"]) == [video.name for video in ytvis.videos[:-NUM_VAL]]


def authors_evaluation_view(frames: np.ndarray, masks: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' YT-VIS evaluation input, by torch ops: frames and masks stored at short side
    320 (nearest-exact, long side floored), the centred square (half offsets to even), frames
    bicubic to ``size`` and clamped, masks nearest-exact to ``size``."""
    height, width = frames.shape[1:3]
    stored = (math.floor(height / width * 320), 320) if width < height else (320, math.floor(width / height * 320))
    side = min(stored)
    top, left = round((stored[0] - side) / 2.0), round((stored[1] - side) / 2.0)
    window = (slice(top, top + side), slice(left, left + side))
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0
    clip = F.interpolate(clip, size=stored, mode="nearest-exact")
    clip = F.interpolate(clip[..., window[0], window[1]], size=(size, size), mode="bicubic", align_corners=False)
    labels = F.interpolate(torch.from_numpy(masks)[:, None].float(), size=stored, mode="nearest-exact")
    labels = F.interpolate(labels[..., window[0], window[1]], size=(size, size), mode="nearest-exact")
    return clip.clamp(0, 1).permute(1, 0, 2, 3), labels[:, 0].long()


@pytest.mark.parametrize(
    ("experiment", "chunk"),
    [("videosaur_ytvis", 2), ("slotcontrast_ytvis", None)],  # VideoSAUR's 6-frame chunks, shortened to fit the fixture
)
def test_recipes_evaluate_the_authors_view_and_train_on_their_chunks(experiment, chunk, tmp_path):
    ytvis = write_ytvis(tmp_path / "ytvis2021", 2021)  # the recipes' version
    overrides = [f"data.eval_clip_length={chunk}"] if chunk else []
    cfg = compose_config(
        [
            f"experiment={experiment}",
            f"data.root={ytvis.root}",
            f"data.num_val_videos={NUM_VAL}",
            "data.num_workers=0",
            "data.train_clip_length=2",  # the fixture's training videos have 4 and 3 frames
            *overrides,
            f"paths.output_dir={tmp_path}",
        ]
    )
    subset, with_subset = instantiate(cfg.data.eval_subset), instantiate(cfg.data)
    cfg.data.eval_subset = None  # every item first
    module = instantiate(cfg.data)
    module.setup("fit")
    size = cfg.model.encoder.image_size
    videos = ytvis.videos[-NUM_VAL:]  # 5 and 3 frames
    if chunk:  # whole 2-frame chunks only: frames 0-1 and 2-3 of the first video, 0-1 of the second
        expected_items = [(videos[0], [0, 1]), (videos[0], [2, 3]), (videos[1], [0, 1])]
    else:
        expected_items = [(video, list(range(len(video.frames)))) for video in videos]
    assert len(module.val_set) == len(expected_items)
    for index, (video, frames) in enumerate(expected_items):
        item = module.val_set[index]
        assert item["meta"]["frame_indices"].tolist() == frames
        expected_video, expected_masks = authors_evaluation_view(video.frames[frames], video.masks[frames], size)
        assert torch.equal(item["video"], expected_video) and torch.equal(item["masks"], expected_masks)
    train_transform = instantiate(cfg.data.train_transform)
    assert train_transform.horizontal_flip == (experiment == "videosaur_ytvis")
    assert_train_samples_match(module.train_set, ytvis.videos[:-NUM_VAL], train_transform)
    starts = {int(module.train_set.clip_frames(0, np.random.default_rng(seed))[0]) for seed in range(30)}
    assert starts == {0, 2}  # the 4-frame video's two chunks, never frame 1
    with_subset.setup("validate")
    assert with_subset.val_set.indices == subset.select(module.val_set.item_videos(), NUM_VAL)
