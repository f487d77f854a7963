"""DAVIS-2017: what the data module yields is what the fixture wrote; bad folders fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_config
from hydra.utils import instantiate
from PIL import Image
from video_fixtures import (
    DavisFixture,
    assert_train_samples_match,
    assert_whole_video_batches_match,
    write_davis,
    write_davis_unsupervised,
    write_palette_png,
)

from ocl.contracts.batch import IGNORE_ID, validate_batch
from ocl.data.davis import DavisDataModule, DavisSource
from ocl.data.errors import DataError
from ocl.data.transforms import VideoTransform


@pytest.fixture
def davis(tmp_path) -> DavisFixture:
    return write_davis(tmp_path / "DAVIS")


def make_module(fixture: DavisFixture, **kwargs) -> DavisDataModule:
    options = {"train_clip_length": 2, "batch_size": 2, "val_batch_size": 1, **kwargs}
    return DavisDataModule(str(fixture.root), **options)


def load_everything(module: DavisDataModule) -> None:
    """Open every split and read every item."""
    module.setup()
    for dataset in (module.train_set, module.val_set, module.test_set):
        for index in range(len(dataset)):
            dataset[index]


@pytest.mark.parametrize(
    "train_transform,eval_transform",
    [
        (VideoTransform(mode="none"), VideoTransform(mode="none")),
        (VideoTransform(16, "short_side_crop", "random", True), VideoTransform(16, "short_side_crop", "center")),
        (VideoTransform(20, "resize", "center", True), VideoTransform(20, "resize", "center")),
    ],
    ids=["raw", "short_side_crop", "resize"],
)
def test_every_split_equals_the_transform_of_the_written_arrays(davis, train_transform, eval_transform):
    module = make_module(davis, train_transform=train_transform, eval_transform=eval_transform)
    module.setup()
    assert_train_samples_match(module.train_set, davis.splits["train"], train_transform)
    assert_whole_video_batches_match(module.val_dataloader(), davis.splits["val"], eval_transform)
    assert_whole_video_batches_match(module.test_dataloader(), davis.splits["val"], eval_transform)  # test = val


def test_ids_and_void(davis):
    source = DavisSource(davis.root, "val")
    assert [source.video_id(i) for i in range(len(source))] == ["camel", "dogs"]
    frames, masks = source.read(0, np.arange(3))
    assert frames.dtype == np.uint8 and frames.shape == (3, 24, 32, 3)
    assert set(np.unique(masks).tolist()) == {IGNORE_ID, 0, 1}  # 255 void -> IGNORE_ID
    assert all((masks[t, 2 + t, 3:15] == IGNORE_ID).all() for t in range(3))  # the void line above the object
    _, masks = source.read(1, np.array([1, 0]))  # any order
    assert 2 in masks[0] and 2 not in masks[1]
    assert np.array_equal(masks, davis.splits["val"][1].masks[[1, 0]])


def test_config_composes_and_yields_224_crops(davis, tmp_path):
    cfg = compose_config(
        ["data=davis2017", f"data.root={davis.root}", "data.num_workers=0", f"paths.output_dir={tmp_path}"]
    )
    assert cfg.data.eval_clip_length is None and cfg.data.val_batch_size == 1
    module = instantiate(cfg.data)
    assert isinstance(module, DavisDataModule) and module.resolution == "480p"
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape == (1, 3, 3, 224, 224)
    train = module.train_set.sample(1, np.random.default_rng(0))
    assert train["video"].shape == (4, 3, 224, 224) and "masks" not in train  # the config's data.train_masks: false


def test_bad_arguments_fail_at_construction(davis):
    with pytest.raises(ValueError, match="unknown DAVIS resolution"):
        DavisDataModule(str(davis.root), resolution="720p")
    with pytest.raises(ValueError, match="unknown DAVIS split"):
        DavisSource(davis.root, "test")
    with pytest.raises(ValueError, match="unknown DAVIS annotations"):
        DavisDataModule(str(davis.root), annotations="Annotations_unsupervised")


def test_unsupervised_annotations_are_read_from_their_own_folder(davis):
    expected = write_davis_unsupervised(davis)
    module = make_module(davis, annotations="unsupervised", eval_transform=VideoTransform(mode="none"))
    module.setup()
    for name in ("camel", "dogs"):
        batch = next(batch for batch in module.val_dataloader() if batch["meta"]["video_id"] == [name])
        assert np.array_equal(batch["masks"][0].numpy(), expected[name])
    assert 2 in expected["camel"] and IGNORE_ID in expected["camel"]  # the relabelled object and the void
    semi = make_module(davis, eval_transform=VideoTransform(mode="none"))  # the default: Annotations/
    semi.setup()
    assert np.array_equal(next(iter(semi.val_dataloader()))["masks"][0].numpy(), davis.splits["val"][0].masks)


def test_missing_unsupervised_annotations_name_the_download_and_the_folder(davis):
    with pytest.raises(DataError, match="unsupervised annotations not found") as info:
        make_module(davis, annotations="unsupervised").setup()
    message = str(info.value)
    assert str(davis.root / "Annotations_unsupervised" / "480p") in message
    assert "DAVIS-2017-Unsupervised-trainval-480p.zip" in message and "davischallenge.org" in message


@pytest.mark.parametrize(
    ("config", "overrides", "annotations"),
    [
        ("train", [], "semi_supervised"),
        ("eval", ["eval=label_propagation"], "semi_supervised"),
        ("eval", ["eval=object_discovery"], "unsupervised"),
        ("eval", ["eval=object_discovery", "data.annotations=semi_supervised"], "semi_supervised"),
    ],
)
def test_object_discovery_reads_the_unsupervised_annotations(davis, tmp_path, config, overrides, annotations):
    common = ["data=davis2017", f"data.root={davis.root}", f"paths.output_dir={tmp_path}"]
    assert compose_config([*common, *overrides], name=config).data.annotations == annotations


def test_full_resolution_reads_its_own_folders(davis):
    for kind in ("JPEGImages", "Annotations"):
        (davis.root / kind / "480p").rename(davis.root / kind / "Full-Resolution")
    module = make_module(davis, resolution="Full-Resolution")
    module.setup()
    assert len(module.train_set) == 2
    with pytest.raises(DataError, match="JPEGImages/480p/bear does not exist"):
        make_module(davis).setup()


# ---- bad input: a DataError naming the file, at setup or at the first item that reads it ----


def test_missing_root_says_where_and_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match="DAVIS-2017-trainval-480p.zip") as info:
        DavisDataModule(str(tmp_path / "nowhere")).setup()
    assert str(tmp_path / "nowhere") in str(info.value) and "davischallenge.org" in str(info.value)


def test_missing_image_set(davis):
    path = davis.root / "ImageSets" / "2017" / "val.txt"
    path.unlink()
    with pytest.raises(DataError, match="cannot read the DAVIS sequence list") as info:
        make_module(davis).setup()
    assert str(path) in str(info.value)


def test_listed_sequence_without_frames(davis):
    (davis.root / "ImageSets" / "2017" / "train.txt").write_text("bear\nboat\nhorse\n")
    with pytest.raises(DataError, match="JPEGImages/480p/horse does not exist"):
        make_module(davis).setup()


def test_missing_png(davis):
    davis.png("boat", 2).unlink()
    with pytest.raises(DataError, match="is missing .*1 of the 4 frames of boat have no annotation") as info:
        make_module(davis).setup()
    assert str(davis.png("boat", 2)) in str(info.value)


def test_more_pngs_than_frames(davis):
    davis.jpeg("dogs", 1).unlink()
    with pytest.raises(DataError, match="has 2 annotations for 1 frames") as info:
        make_module(davis).setup()
    assert str(davis.jpeg("dogs", 1)) in str(info.value)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_corrupt_file(davis, kind):
    path = davis.jpeg("camel", 1) if kind == "jpeg" else davis.png("camel", 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read") as info:
        load_everything(make_module(davis))
    assert str(path) in str(info.value)


def test_png_size_differs_from_frame(davis):
    write_palette_png(davis.png("bear", 0), np.zeros((24, 31), np.uint8))
    with pytest.raises(DataError, match="is 24x31 .* is 24x32") as info:
        load_everything(make_module(davis))
    assert str(davis.png("bear", 0)) in str(info.value)


def test_png_that_is_not_a_palette_image(davis):
    Image.new("RGB", (32, 24)).save(davis.png("dogs", 0))
    with pytest.raises(DataError, match="mode 'RGB' image; DAVIS annotations are palette"):
        load_everything(make_module(davis))


def test_davis_adds_j_and_f_to_the_metrics():
    from ocl.metrics.jandf import JAndF

    default = compose_config(["paths.output_dir=/unused"]).metrics
    metrics = instantiate(compose_config(["data=davis2017", "paths.output_dir=/unused"]).metrics)
    assert list(metrics) == [*default, "j_and_f"] and isinstance(metrics["j_and_f"], JAndF)
    smtc = compose_config(["experiment=smtc_synthetic", "data=davis2017", "paths.output_dir=/unused"]).metrics
    assert list(smtc) == [*default, "j_and_f", "semantic_stability", "semantic_video_fg_ari"]
