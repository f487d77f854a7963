"""The loader speed-ups give the batches the plain path gives: bit for bit, or within the
documented tolerance of reduced JPEG decoding (``ocl/data/transforms.py``, docs/benchmarks.md)."""

from __future__ import annotations

from types import SimpleNamespace

import lightning
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from video_fixtures import write_davis, write_ytvis, write_ytvos_train

from ocl.contracts.batch import MASKS, VIDEO
from ocl.data.clips import ClipDataset
from ocl.data.davis import DavisDataModule
from ocl.data.points import PointLabels
from ocl.data.transforms import REDUCED_DECODING_TOLERANCE, VideoTransform, short_side_shape
from ocl.data.ytvis import YTVISDataModule
from ocl.data.ytvos import YouTubeVOSDataModule

# ---- the transform: every path equals the plain torch calls on float32 NCHW frames ----


def reference_transform(
    transform: VideoTransform, frames: np.ndarray, masks: np.ndarray, rng: np.random.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform as plain torch calls: nearest-exact by ``F.interpolate``, frames converted to
    float32 NCHW before a float resize (uint8 channels-last for antialiased bilinear), clamped
    before the crop; the crop and flip drawn as :meth:`VideoTransform.draw` draws them."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    labels = torch.from_numpy(masks)[:, None].float()
    height, width = frames.shape[1:3]
    placement = transform.draw(height, width, rng)
    if transform.stored_short_side is not None:
        height, width = short_side_shape(height, width, transform.stored_short_side, "floor")
        video = F.interpolate(video.float(), size=(height, width), mode="nearest-exact").to(torch.uint8)
        labels = F.interpolate(labels, size=(height, width), mode="nearest-exact")

    def resize(video: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = F.interpolate(labels, size=size, mode="nearest-exact")
        if transform.interpolation == "bilinear" and transform.antialias:
            uint8 = video.contiguous(memory_format=torch.channels_last)
            return F.interpolate(uint8, size=size, mode="bilinear", antialias=True), labels
        as_float = video.contiguous().float() / 255.0
        mode, antialias = transform.interpolation, transform.antialias
        resized = F.interpolate(as_float, size=size, mode=mode, align_corners=False, antialias=antialias)
        return resized.clamp(0.0, 1.0), labels

    side = transform.size
    if transform.mode == "resize":
        video, labels = resize(video, labels, (side, side))
    elif transform.mode == "short_side_crop":
        video, labels = resize(video, labels, short_side_shape(height, width, side, transform.long_side_rounding))
        rows, columns = slice(placement.top, placement.top + side), slice(placement.left, placement.left + side)
        video, labels = video[..., rows, columns], labels[..., rows, columns]
    elif transform.mode == "center_square":
        square = min(height, width)
        top, left = round((height - square) / 2), round((width - square) / 2)
        window = (slice(top, top + square), slice(left, left + square))
        video, labels = resize(video[..., window[0], window[1]], labels[..., window[0], window[1]], (side, side))
    if placement.flip:
        video, labels = video.flip(-1), labels.flip(-1)
    if video.dtype == torch.uint8:
        video = video.float() / 255.0
    return video.contiguous(), labels[:, 0].long()


TRANSFORMS = {
    "default": {"size": 24, "mode": "short_side_crop", "crop": "random", "horizontal_flip": True},
    "resize": {"size": 20, "mode": "resize"},
    "smtc": {"size": 32, "mode": "resize", "antialias": False},
    "smtc_down": {"size": 12, "mode": "resize", "antialias": False},
    "bilinear_float_crop": {"size": 16, "mode": "short_side_crop", "crop": "random", "antialias": False},
    "bicubic_antialias": {"size": 16, "mode": "short_side_crop", "interpolation": "bicubic"},
    "authors_train": {
        "size": 28,
        "mode": "short_side_crop",
        "crop": "random",
        "horizontal_flip": True,
        "interpolation": "bicubic",
        "antialias": False,
        "long_side_rounding": "floor",
        "stored_short_side": 20,
    },
    "authors_eval": {
        "size": 18,
        "mode": "center_square",
        "interpolation": "bicubic",
        "antialias": False,
        "stored_short_side": 20,
    },
    "stored_only": {"mode": "none", "stored_short_side": 17},
}


@pytest.mark.parametrize("options", TRANSFORMS.values(), ids=TRANSFORMS.keys())
@pytest.mark.parametrize(("height", "width"), [(30, 52), (41, 27)])
def test_transform_equals_plain_torch_bit_for_bit(options, height, width):
    rng = np.random.default_rng(height)
    frames = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    masks = rng.integers(-1, 5, (3, height, width)).astype(np.int16)
    transform = VideoTransform(**options)
    for seed in (None, 0, 1, 2, 3):
        draw = None if seed is None else np.random.default_rng(seed)
        again = None if seed is None else np.random.default_rng(seed)
        video, labels = transform(frames, masks, draw)
        expected_video, expected_labels = reference_transform(transform, frames, masks, again)
        assert video.dtype == torch.float32 and video.is_contiguous()
        assert torch.equal(video, expected_video) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize("options", TRANSFORMS.values(), ids=TRANSFORMS.keys())
def test_keep_uint8_is_the_float_frames_times_255_where_the_resize_keeps_uint8(options):
    frames = np.random.default_rng(0).integers(0, 256, (2, 30, 52, 3), dtype=np.uint8)
    transform = VideoTransform(**options)
    as_float, _ = transform(frames, None, np.random.default_rng(0))
    kept, _ = transform(frames, None, np.random.default_rng(0), keep_uint8=True)
    float_resize = options.get("interpolation") == "bicubic" or options.get("antialias") is False
    assert kept.dtype == (torch.float32 if float_resize else torch.uint8)
    assert torch.equal(kept.float() / 255.0 if kept.dtype == torch.uint8 else kept, as_float)


# ---- reduced JPEG decoding ----


def test_decode_size_keeps_a_margin_over_the_first_resize():
    transform = VideoTransform(224, "short_side_crop", "random", reduced_decoding=True)
    assert transform.decode_size(720, 1280) == (336, 597)  # 224 x 398 x 1.5: PIL keeps 360 x 640 (1/2)
    assert VideoTransform(256, "resize", reduced_decoding=True).decode_size(720, 1280) == (384, 384)
    assert VideoTransform(224, "short_side_crop").decode_size(720, 1280) is None


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "center_square"},
        {"mode": "none"},
        {"antialias": False},
        {"stored_short_side": 320, "interpolation": "bicubic"},
    ],
)
def test_reduced_decoding_refuses_geometries_it_would_change_more(options):
    with pytest.raises(ValueError, match="reduced_decoding needs"):
        VideoTransform(**{"size": 8, **options, "reduced_decoding": True})


def assert_within_tolerance(reduced: torch.Tensor, full: torch.Tensor) -> None:
    difference = (reduced - full).abs()
    assert difference.mean() <= REDUCED_DECODING_TOLERANCE["mean"]
    assert difference.max() <= REDUCED_DECODING_TOLERANCE["max"]


def reduced(transform: VideoTransform) -> VideoTransform:
    return VideoTransform(**{**transform.__dict__, "reduced_decoding": True})


TRAIN = VideoTransform(6, "short_side_crop", "random", horizontal_flip=True)  # 24x32 frames -> decoded at 12x16
EVAL = VideoTransform(8, "resize")  # decoded at 12x16


def module_pair(kind: str, tmp_path, **options) -> tuple[ClipDataset, ClipDataset, ClipDataset, ClipDataset]:
    """Train and val sets read whole and at a reduced scale, from one written fixture."""
    sets = []
    for transforms in ((TRAIN, EVAL), (reduced(TRAIN), reduced(EVAL))):
        kwargs = {"train_transform": transforms[0], "eval_transform": transforms[1], "train_clip_length": 2, **options}
        if kind == "ytvis":
            module = YTVISDataModule(str(tmp_path), num_val_videos=1, **kwargs)
        elif kind == "davis":
            module = DavisDataModule(str(tmp_path), **kwargs)
        else:
            module = YouTubeVOSDataModule(str(tmp_path), num_val_videos=1, frame_stride=4, **kwargs)
        module.setup("fit")
        sets.append((module.train_set, module.val_set))
    (train, val), (reduced_train, reduced_val) = sets
    return train, val, reduced_train, reduced_val


WRITERS = {
    "ytvis": lambda root: write_ytvis(root, 2021),
    "davis": write_davis,
    "ytvos": write_ytvos_train,
}


@pytest.mark.parametrize("kind", WRITERS)
def test_reduced_decoding_gives_the_same_items_within_the_tolerance(kind, tmp_path):
    WRITERS[kind](tmp_path)
    train, val, reduced_train, reduced_val = module_pair(kind, tmp_path)
    compared = 0
    for full_set, reduced_set, draws in ((train, reduced_train, range(4)), (val, reduced_val, [None])):
        for index in range(len(full_set)):
            for seed in draws:
                rng = None if seed is None else np.random.default_rng(seed)
                rng_again = None if seed is None else np.random.default_rng(seed)
                full, fast = full_set.sample(index, rng), reduced_set.sample(index, rng_again)
                assert torch.equal(full["meta"]["frame_indices"], fast["meta"]["frame_indices"])
                assert full[VIDEO].shape == fast[VIDEO].shape
                assert (MASKS in full) == (MASKS in fast) and (
                    MASKS not in full or torch.equal(full[MASKS], fast[MASKS])
                )
                assert_within_tolerance(fast[VIDEO], full[VIDEO])
                compared += 1
    assert compared >= 8
    clip = reduced_train.source.read_clip(0, np.arange(2), decode_size=reduced_train.transform.decode_size)
    assert clip.frames.shape[1:3] == (12, 16) and clip.size == (24, 32)  # decoded at 1/2: the path was taken
    assert not torch.equal(train.sample(0, None)[VIDEO], reduced_train.sample(0, None)[VIDEO])


# ---- training items without labels, uint8 frames to the device, pinned memory ----


@pytest.mark.parametrize("kind", ["ytvis", "davis"])
def test_train_masks_false_reads_no_labels_and_changes_nothing_else(kind, tmp_path):
    fixture = WRITERS[kind](tmp_path)
    with_masks, _, _, _ = module_pair(kind, tmp_path)
    without, _, _, _ = module_pair(kind, tmp_path, train_masks=False)
    for index in range(len(with_masks)):
        for seed in range(3):
            item = with_masks.sample(index, np.random.default_rng(seed))
            bare = without.sample(index, np.random.default_rng(seed))
            assert MASKS in item and MASKS not in bare
            assert torch.equal(item[VIDEO], bare[VIDEO]) and item["meta"]["video_id"] == bare["meta"]["video_id"]
    if kind == "davis":  # the annotations are not even opened
        for sequence in fixture.splits["train"]:
            for path in (tmp_path / "Annotations" / "480p" / sequence.name).iterdir():
                path.write_bytes(b"not a png")
        without.sample(0, np.random.default_rng(0))


def test_point_labels_need_the_training_masks(tmp_path):
    write_davis(tmp_path)
    with pytest.raises(ValueError, match="train_masks=true"):
        DavisDataModule(str(tmp_path), train_masks=False, point_labels=PointLabels(max_objects=4))


@pytest.mark.parametrize(
    ("transform", "moved"), [(TRAIN, torch.uint8), (VideoTransform(6, interpolation="bicubic"), torch.float32)]
)
@pytest.mark.parametrize("num_workers", [0, 1])
def test_uint8_transfer_batches_equal_the_float_batches_after_the_device_hook(tmp_path, transform, moved, num_workers):
    write_ytvis(tmp_path, 2021)
    batches = []
    for uint8_transfer in (False, True):
        module = YTVISDataModule(
            str(tmp_path),
            num_val_videos=1,
            train_transform=transform,
            train_clip_length=2,
            batch_size=3,
            num_workers=num_workers,
            uint8_transfer=uint8_transfer,
        )
        module.setup("fit")
        batches.append(
            [(batch[VIDEO].dtype, module.on_after_batch_transfer(batch, 0)) for batch in module.train_dataloader()]
        )
    plain, moved_batches = batches
    assert [dtype for dtype, _ in plain] == [torch.float32] * len(plain)
    assert [dtype for dtype, _ in moved_batches] == [moved] * len(plain)
    for (_, expected), (_, batch) in zip(plain, moved_batches, strict=True):
        assert batch[VIDEO].dtype == torch.float32 and torch.equal(batch[VIDEO], expected[VIDEO])
        assert torch.equal(batch[MASKS], expected[MASKS])
    module.setup("fit")
    assert module.val_set[0][VIDEO].dtype == torch.float32  # datasets themselves keep the batch contract


def test_pin_memory_follows_the_trainer_device_unless_set(tmp_path):
    write_davis(tmp_path)
    module = DavisDataModule(str(tmp_path))
    assert module.pin_memory is None and not module.pins_memory()  # no trainer
    module.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert module.pins_memory()
    module.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert not module.pins_memory()
    assert DavisDataModule(str(tmp_path), pin_memory=True).pins_memory()


class RecordingModule(lightning.LightningModule):
    """Records the dtype of the frames each training step receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.dtypes: list[torch.dtype] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.dtypes.append(batch[VIDEO].dtype)
        return self.weight * batch[VIDEO].mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_trainer_gets_float_frames_from_uint8_transfer_loaders(tmp_path):
    write_davis(tmp_path)
    module = DavisDataModule(
        str(tmp_path), train_transform=TRAIN, train_clip_length=2, batch_size=2, uint8_transfer=True
    )
    module.setup("fit")
    module.trainer = SimpleNamespace(
        max_steps=1,
        global_step=0,
        world_size=1,
        global_rank=0,
        accumulate_grad_batches=1,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    assert next(iter(module.train_dataloader()))[VIDEO].dtype == torch.uint8
    module.trainer = None
    model = RecordingModule()
    trainer = lightning.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=module)
    assert model.dtypes == [torch.float32, torch.float32]
