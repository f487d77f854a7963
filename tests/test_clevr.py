"""CLEVR with masks (CLEVR6) and CLEVRTex, on fixtures written in the published formats.

CLEVR: one GZIP TFRecord file of ``tf.train.Example`` s with the features of DeepMind's
``clevr_with_masks.py`` (``image`` [240, 320, 3] and ``mask`` [11, 240, 320, 1] as bytes lists of
one value per byte, ``visibility`` [11] floats, and the per-entity features not read). CLEVRTex:
``clevrtex_full/<bucket>/CLEVRTEX_full_<n>.png`` (RGBA), ``..._flat.png`` (palette mask of
object ids) and ``....json``, as the authors' ``clevrtex_eval.py`` reads them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clevr_fixtures import ENTITIES, HEIGHT, WIDTH, box, pixel_coords, write_clevr_tfrecord
from conftest import REPO, compose_config
from hydra.utils import instantiate
from PIL import Image
from tfrecord_writer import encode_example, frame_record, write_records

from ocl.contracts.batch import validate_batch
from ocl.data.clevr import MANIFEST, ClevrDataModule, ClevrSource
from ocl.data.clevr_convert import convert_clevr
from ocl.data.clevrtex import ClevrTexDataModule, ClevrTexSource
from ocl.data.errors import DataError
from ocl.data.tfrecord import Record, iter_records, parse_byte_arrays

OBJECTS = [3, 7, 6, 4, 5]
"""Objects in each CLEVR fixture record; with train_size=2, val_size=1: records 0-1 train, 2 val, 3-4 test."""
SPLIT_SIZES = {"train_size": 2, "val_size": 1}
CLEVR_KEPT = {"train": ["000000"], "val": ["000002"], "test": ["000003", "000004"]}
"""The CLEVR6 items per split: record 1 (7 objects) is filtered out."""


@pytest.fixture(scope="module")
def clevr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[np.ndarray, np.ndarray]]]:
    """``clevr_with_masks_train.tfrecords`` (GZIP) of 5 records and their (image, ids)."""
    path = tmp_path_factory.mktemp("download") / "clevr_with_masks_train.tfrecords"
    return path, write_clevr_tfrecord(path, OBJECTS, whole_buffer_index=3)


@pytest.fixture(scope="module")
def clevr6(tmp_path_factory: pytest.TempPathFactory, clevr: tuple[Path, list]) -> Path:
    """The fixture converted once with --max-objects 6 (tests that change it copy it)."""
    out = tmp_path_factory.mktemp("converted") / "clevr6"
    assert convert_clevr(clevr[0], out, 6, **SPLIT_SIZES, progress=False) == {"train": 1, "val": 1, "test": 2}
    return out


def _copy(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


def nearest_128(array: np.ndarray) -> np.ndarray:
    """``[192, 192, ...]`` -> ``[128, 128, ...]``: the source pixel containing each output pixel's centre."""
    index = np.floor((np.arange(128) + 0.5) * 192 / 128).astype(int)
    return array[index][:, index]


# --------------------------------------------------------------------------- TFRecord: GZIP and raw arrays


def test_gzip_tfrecords_are_detected_and_offsets_are_uncompressed(tmp_path: Path) -> None:
    payloads = [b"", b"abc", bytes(range(256))]
    write_records(tmp_path / "a.gz", payloads, compression="gzip")
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    for compression in ("auto", "gzip"):
        records = list(iter_records(tmp_path / "a.gz", verify_data=True, compression=compression))
        assert [r.data for r in records] == payloads and [r.offset for r in records] == [0, 16, 35]
    assert records[1].where == f"{tmp_path / 'a.gz'} (record at uncompressed byte 16)"
    # An uncompressed record of length 0x8b1f starts with the GZIP magic bytes: still read as uncompressed.
    write_records(tmp_path / "b.tfrecord", [b"x" * 0x8B1F])
    assert (tmp_path / "b.tfrecord").read_bytes()[:2] == b"\x1f\x8b"
    assert [len(r.data) for r in iter_records(tmp_path / "b.tfrecord")] == [0x8B1F]
    with pytest.raises(DataError, match=r"b.tfrecord: corrupt or truncated GZIP data"):
        list(iter_records(tmp_path / "b.tfrecord", compression="gzip"))  # told wrongly: not GZIP
    with pytest.raises(ValueError, match="unknown compression"):
        list(iter_records(tmp_path / "a.gz", compression="zlib"))


def test_broken_gzip_files_name_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()  # incompressible
    data = gzip.compress(frame_record(b"first") + frame_record(noise))
    path = tmp_path / "cut.tfrecords"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{path}: corrupt or truncated GZIP data after uncompressed byte 21"):
        list(iter_records(path))
    path.write_bytes(gzip.compress(frame_record(b"first") + frame_record(b"second")[:-3]))
    with pytest.raises(DataError, match=rf"{path}: truncated record at uncompressed byte 21"):
        list(iter_records(path))


def test_raw_arrays_are_read_in_both_bytes_list_layouts() -> None:
    array = np.arange(600, dtype=np.int64).astype(np.uint8).reshape(10, 20, 3)
    per_byte = Record(Path("x"), 0, encode_example({"a": array.view("S1"), "f": np.ones(2, np.float32)}))
    whole = Record(Path("x"), 0, encode_example({"a": [array.tobytes()]}))
    chunks = Record(Path("x"), 0, encode_example({"a": [array.tobytes()[:7], array.tobytes()[7:]]}))
    for record in (per_byte, whole, chunks):
        decoded = parse_byte_arrays(record, ("a", "absent"))
        assert decoded.keys() == {"a"} and decoded["a"].dtype == np.uint8
        np.testing.assert_array_equal(decoded["a"].reshape(10, 20, 3), array)
    assert len(per_byte.data) > 3 * array.size  # tag, length 1, byte: one bytes value per byte
    with pytest.raises(DataError, match=r"x \(record at byte 0\): not a valid tf.train.Example.*bytes list"):
        parse_byte_arrays(per_byte, ("f",))


# --------------------------------------------------------------------------- CLEVR6: conversion and reading


@pytest.mark.slow
def test_clevr6_holds_the_scenes_with_at_most_6_objects_cropped_exactly(clevr6: Path, clevr: tuple) -> None:
    manifest = json.loads((clevr6 / MANIFEST).read_text())
    assert manifest["records"] == 5 and manifest["max_objects"] == 6
    assert {s: [item["num_objects"] for item in items] for s, items in manifest["splits"].items()} == {
        "train": [3],
        "val": [6],
        "test": [4, 5],
    }
    for split, ids in CLEVR_KEPT.items():
        source = ClevrSource(clevr6, split)
        assert [source.video_id(i) for i in range(len(source))] == ids and source.num_frames(0) == 1
        for index, item_id in enumerate(ids):
            image, expected_ids = clevr[1][int(item_id)]
            frames, labels = source.read(index, np.zeros(1, int))
            assert frames.shape == (1, 192, 192, 3) and labels.shape == (1, 192, 192) and labels.dtype == np.int64
            np.testing.assert_array_equal(frames[0], image[29:221, 64:256])
            np.testing.assert_array_equal(labels[0], expected_ids[29:221, 64:256])
            assert labels[0, 0, 0] == 9 and labels[0, -1, -1] == 9  # rows 29..220, columns 64..255
            whole_image, whole_ids = ClevrSource(clevr6, split, crop=False).read(index, np.zeros(1, int))
            np.testing.assert_array_equal(whole_image[0], image)
            np.testing.assert_array_equal(whole_ids[0], expected_ids)


def test_clevr10_keeps_every_scene(clevr: tuple, tmp_path: Path) -> None:
    counts = convert_clevr(clevr[0], tmp_path / "clevr10", 10, **SPLIT_SIZES, progress=False)
    assert counts == {"train": 2, "val": 1, "test": 2}
    source = ClevrSource(tmp_path / "clevr10", "train", max_objects=10)
    np.testing.assert_array_equal(source.read(1, np.zeros(1, int))[1][0], clevr[1][1][1][29:221, 64:256])
    with pytest.raises(DataError, match=r"at most 10 objects, not 6; .*--max-objects 6"):
        ClevrSource(tmp_path / "clevr10", "train", max_objects=6)


def test_clevr_config_yields_128_pixel_images_with_nearest_ids(clevr6: Path, clevr: tuple, tmp_path: Path) -> None:
    paths = [f"paths.output_dir={tmp_path}", f"paths.data_root={clevr6.parent}"]
    cfg = compose_config(["data=clevr6", *paths, "data.num_workers=0"])
    module = instantiate(cfg.data)
    assert isinstance(module, ClevrDataModule) and module.root == clevr6 and module.max_objects == 6
    assert module.train_clip_length == 1 and module.eval_clip_length == 1
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape == (1, 1, 3, 128, 128) and batch["meta"]["video_id"] == ["000002"]
    ids = clevr[1][2][1]
    np.testing.assert_array_equal(batch["masks"][0, 0].numpy(), nearest_128(ids[29:221, 64:256]))
    train = next(iter(module.train_dataloader()))
    assert train["video"].shape == (1, 1, 3, 128, 128) and train["meta"]["video_id"] == ["000000"]


def test_clevr_keeps_the_projected_object_centres_for_slash_labels(clevr6: Path, clevr: tuple, tmp_path: Path) -> None:
    top, left = box(2)
    for crop, origin, size in ((False, (0, 0), (WIDTH, HEIGHT)), (True, (64, 29), (192, 192))):
        points = ClevrSource(clevr6, "train", crop=crop).object_points(0)  # record 0: entities 1-3
        assert points.shape == (ENTITIES - 1, 2) and np.isnan(points[3:8]).all()
        expected = ((left + 20 - origin[0]) / size[0] - 0.5, (top + 15 - origin[1]) / size[1] - 0.5)
        np.testing.assert_allclose(points[1], expected, rtol=1e-6)
        np.testing.assert_allclose(points[:3], (pixel_coords()[1:4, :2] - origin) / size - 0.5, rtol=1e-6)
    paths = [f"paths.output_dir={tmp_path}", f"paths.data_root={clevr6.parent}", "data.num_workers=0"]
    labels = (
        "+data.point_labels={_target_:ocl.data.points.PointLabels,batch_fraction:1.0,max_objects:10,centre:projected}"
    )
    cfg = compose_config(["data=clevr6", *paths, "data.crop=false", "data.batch_size=1", labels])
    module = instantiate(cfg.data)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    torch.testing.assert_close(
        batch["points"][0, 0],
        torch.from_numpy(ClevrSource(clevr6, "train", crop=False).object_points(0)),
        equal_nan=True,
    )
    np.savez_compressed(clevr6.parent / "old.npz", image=clevr[1][0][0], ids=clevr[1][0][1])
    old = _copy(clevr6, tmp_path)
    (clevr6.parent / "old.npz").replace(old / "train" / "000000.npz")
    with pytest.raises(DataError, match="converted without the objects' pixel_coords.*convert again"):
        ClevrSource(old, "train").object_points(0)


def test_converter_resumes_and_refuses_other_settings(clevr6: Path, clevr: tuple, tmp_path: Path) -> None:
    out = _copy(clevr6, tmp_path)
    kept, deleted = out / "test" / "000003.npz", out / "test" / "000004.npz"
    kept_time = kept.stat().st_mtime_ns
    (out / MANIFEST).unlink()
    deleted.unlink()
    with pytest.raises(DataError, match=rf"{out} is half-converted: no index.json.*convert_clevr.py --tfrecord"):
        ClevrSource(out, "val")
    assert convert_clevr(clevr[0], out, 6, **SPLIT_SIZES, progress=False) == {"train": 1, "val": 1, "test": 2}
    assert deleted.is_file() and kept.stat().st_mtime_ns == kept_time  # only the missing image is written again
    with pytest.raises(DataError, match="already holds a conversion with .*choose another --out"):
        convert_clevr(clevr[0], out, 10, **SPLIT_SIZES, progress=False)
    deleted.unlink()
    with pytest.raises(DataError, match=r"half-converted: 1 of 2 test images .* missing \(e.g. test/000004.npz\)"):
        ClevrSource(out, "test")
    ClevrSource(out, "val")  # other splits are complete


def test_cli_converts_and_reports_errors(clevr: tuple, tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("convert_clevr", REPO / "scripts" / "convert_clevr.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--out", str(tmp_path / "o"), "--train-size", "2", "--val-size", "1", "--no-progress"]
    assert script.main(["--tfrecord", str(clevr[0]), *args]) == 0
    assert "test: 2 images" in capsys.readouterr().out
    assert script.main(["--tfrecord", str(tmp_path / "none.tfrecords"), *args]) == 1
    error = capsys.readouterr().err
    assert str(tmp_path / "none.tfrecords") in error and "gs://multi-object-datasets/clevr_with_masks/" in error


def test_clevr_bad_input_names_the_path(clevr6: Path, clevr: tuple, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        ClevrDataModule(str(tmp_path / "nowhere")).setup("validate")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and "clevr_with_masks_train.tfrecords" in message
    assert f"--out {tmp_path / 'nowhere'} --max-objects 6" in message
    out = _copy(clevr6, tmp_path)
    (out / "val" / "000002.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=rf"{out / 'val' / '000002.npz'}: unreadable"):
        ClevrSource(out, "val").read(0, np.zeros(1, int))
    short = tmp_path / "short.tfrecords"
    visibility = (np.arange(ENTITIES) <= 2).astype(np.float32)
    write_records(short, [encode_example({"image": np.zeros(5, np.uint8).view("S1"), "visibility": visibility})])
    with pytest.raises(DataError, match=rf"{short} \(record at byte 0\): no 'image' or 'mask' feature"):
        convert_clevr(short, tmp_path / "x", progress=False)
    path, _ = clevr
    with pytest.raises(DataError, match=r"only 5 records, but train and val take the first 85000"):
        convert_clevr(path, tmp_path / "y", progress=False)


# --------------------------------------------------------------------------- CLEVRTex

CLEVRTEX_IMAGES = 10
"""Split by number: 0 test, 1 val, 2-9 train (int(0.1 * 10) = 1, int(0.2 * 10) = 2)."""
PALETTE = [0, 0, 0, 255, 0, 0, 0, 128, 0, 0, 0, 255, 255, 255, 0] + [128] * (3 * 251)


def write_clevrtex(root: Path, count: int = CLEVRTEX_IMAGES, seed: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``root/clevrtex_full/<n // 4>/CLEVRTEX_full_<n>{.png,_flat.png,.json}``; returns RGBA and ids per number."""
    rng = np.random.default_rng(seed)
    written = {}
    for number in range(count):
        folder = root / "clevrtex_full" / str(number // 4)
        folder.mkdir(parents=True, exist_ok=True)
        rgba = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
        rgba[..., 3] = 255  # rendered opaque
        ids = np.zeros((HEIGHT, WIDTH), np.uint8)
        for k in range(1, 3 + number % 8):
            ids[10 + 20 * k : 40 + 20 * k, 15 + 28 * k : 50 + 28 * k] = k
        ids[24, 64], ids[23, 64], ids[215, 255], ids[216, 255] = (
            9,
            10,
            9,
            10,
        )  # first / last pixels in, and out of, the crop
        stem = folder / f"CLEVRTEX_full_{number:06d}"
        Image.fromarray(rgba).save(f"{stem}.png")
        mask = Image.frombytes("P", (WIDTH, HEIGHT), ids.tobytes())
        mask.putpalette(PALETTE)
        mask.save(f"{stem}_flat.png")
        Path(f"{stem}.json").write_text(json.dumps({"image_index": number, "objects": [{}] * int(ids.max())}))
        written[number] = (rgba, ids)
    return written


@pytest.fixture(scope="module")
def clevrtex(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, tuple[np.ndarray, np.ndarray]]]:
    root = tmp_path_factory.mktemp("clevrtex")
    return root, write_clevrtex(root)


def test_clevrtex_splits_by_number_and_crops_like_the_authors_loader(clevrtex: tuple) -> None:
    root, written = clevrtex
    expected = {"test": [0], "val": [1], "train": list(range(2, CLEVRTEX_IMAGES))}
    for split, numbers in expected.items():
        source = ClevrTexSource(root, split)
        assert [source.video_id(i) for i in range(len(source))] == [f"CLEVRTEX_full_{n:06d}" for n in numbers]
    source = ClevrTexSource(root / "clevrtex_full", "train")  # the variant folder itself works too
    for index, number in enumerate(expected["train"]):
        rgba, ids = written[number]
        frames, labels = source.read(index, np.zeros(1, int))
        assert frames.shape == (1, 192, 192, 3) and labels.dtype == np.int64
        np.testing.assert_array_equal(frames[0], rgba[24:216, 64:256, :3])  # alpha dropped
        np.testing.assert_array_equal(labels[0], ids[24:216, 64:256])
        assert labels[0, 0, 0] == 9 and labels[0, -1, -1] == 9
    whole = ClevrTexSource(root, "test", crop=False).read(0, np.zeros(1, int))
    np.testing.assert_array_equal(whole[0][0], written[0][0][..., :3])


def test_clevrtex_config_matches_the_authors_resize(clevrtex: tuple, tmp_path: Path) -> None:
    root, written = clevrtex
    cfg = compose_config(["data=clevrtex", f"paths.output_dir={tmp_path}", f"paths.data_root={tmp_path}"])
    assert cfg.data.root == str(tmp_path / "clevrtex")
    cfg.data.root = str(root)
    module = instantiate(cfg.data)
    assert isinstance(module, ClevrTexDataModule) and module.variant == "full" and module.train_clip_length == 1
    module.setup("validate")
    item = module.val_set[0]
    assert item["video"].shape == (1, 3, 128, 128) and item["meta"]["video_id"] == "CLEVRTEX_full_000001"
    rgba, ids = written[1]
    box = (64, 24, 256, 216)  # clevrtex_eval.py: PIL crop, then resize BILINEAR (image) / NEAREST (mask)
    image = Image.fromarray(rgba).crop(box).resize((128, 128), Image.BILINEAR)
    mask = Image.frombytes("P", (WIDTH, HEIGHT), ids.tobytes()).crop(box).resize((128, 128), Image.NEAREST)
    np.testing.assert_array_equal(item["masks"][0].numpy(), np.asarray(mask))
    np.testing.assert_array_equal(item["masks"][0].numpy(), nearest_128(ids[24:216, 64:256]))
    pixels = (item["video"][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels, np.asarray(image)[..., :3])  # antialiased bilinear = PIL's BILINEAR


def test_clevrtex_bad_input_names_the_path(clevrtex: tuple, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        ClevrTexDataModule(str(tmp_path / "nowhere")).setup("validate")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "clevrtex_full") in message and "robots.ox.ac.uk/~vgg/data/clevrtex" in message
    root = _copy(clevrtex[0], tmp_path)
    mask = root / "clevrtex_full" / "1" / "CLEVRTEX_full_000005_flat.png"
    mask.unlink()
    with pytest.raises(DataError, match=rf"{mask} \(the mask of CLEVRTEX_full_000005.png\) is missing"):
        ClevrTexSource(root, "train")
    (root / "clevrtex_full" / "1" / "CLEVRTEX_full_000005.png").unlink()
    with pytest.raises(DataError, match=r"1 of images 0..9 are missing \(e.g. CLEVRTEX_full_000005.png\)"):
        ClevrTexSource(root, "train")
    shutil.rmtree(root / "clevrtex_full")
    write_clevrtex(root, count=3)
    bad = root / "clevrtex_full" / "0" / "CLEVRTEX_full_000002_flat.png"
    Image.new("RGB", (WIDTH, HEIGHT)).save(bad)
    with pytest.raises(DataError, match=rf"{bad} is a mode 'RGB' image"):
        ClevrTexSource(root, "train").read(2, np.zeros(1, int))
    Image.new("P", (WIDTH, HEIGHT - 1)).save(bad)
    with pytest.raises(DataError, match=rf"{bad} is 239x320 \(HxW\) but its image CLEVRTEX_full_000002.png is 240x320"):
        ClevrTexSource(root, "train").read(2, np.zeros(1, int))
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"cannot read {bad}"):
        ClevrTexSource(root, "train").read(2, np.zeros(1, int))
