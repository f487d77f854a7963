"""Tests of the TFRecord reader, the MOVi converter and the MOVi data module, on fixtures written
in the published TFDS format (tests/movi_fixtures.py)."""

from __future__ import annotations

import importlib.util
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, compose_config
from hydra.utils import instantiate
from movi_fixtures import FixtureVideo, movi_example, random_video, write_movi_tfds
from tfrecord_writer import encode_example, frame_record, write_records

from ocl.contracts.batch import validate_batch
from ocl.data.errors import DataError
from ocl.data.movi import MANIFEST, MoviDataModule, MoviSource
from ocl.data.movi_convert import convert_movi
from ocl.data.tfrecord import Record, crc32c_python, iter_records, parse_example
from ocl.data.transforms import VideoTransform

SIZE, FRAMES = 32, 5
IDENTITY = VideoTransform(size=SIZE, mode="resize")  # stored size: frames and masks untouched


@pytest.fixture(scope="module")
def tfds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[FixtureVideo]]]:
    """The TFDS root (``<root>/movi_c/32x32/1.0.0``) and the videos written, per split."""
    root = tmp_path_factory.mktemp("tfds")
    _, written = write_movi_tfds(root, size=SIZE, frames=FRAMES)
    return root, written


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, tfds: tuple[Path, dict]) -> Path:
    """The fixture converted once (tests that modify it make their own copy)."""
    out = tmp_path_factory.mktemp("movi_c")
    convert_movi(tfds[0], out, "movi_c", SIZE, progress=False)
    return out


def _fresh_copy(converted: Path, tmp_path: Path) -> Path:
    out = tmp_path / "movi_c"
    shutil.copytree(converted, out)
    return out


def _module(root: Path) -> MoviDataModule:
    """The module over ``root`` with 2-frame training clips, stored-size transforms and batches of 2."""
    return MoviDataModule(
        str(root), "movi_c", train_clip_length=2, train_transform=IDENTITY, eval_transform=IDENTITY, batch_size=2
    )


# --------------------------------------------------------------------------- TFRecord framing


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c_python(b"123456789") == 0xE3069283


def test_tfrecord_round_trip_and_offsets(tmp_path: Path) -> None:
    payloads = [b"", b"abc", bytes(range(256)) * 4]
    write_records(tmp_path / "a.tfrecord", payloads)
    records = list(iter_records(tmp_path / "a.tfrecord", verify_data=True))
    assert [record.data for record in records] == payloads
    assert [record.offset for record in records] == [0, 16, 16 + 19]


def test_truncated_record_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "short.tfrecord"
    path.write_bytes(frame_record(b"first") + frame_record(b"second record")[:-3])
    with pytest.raises(DataError, match=r"short\.tfrecord.*truncated record at byte 21"):
        list(iter_records(path))
    path.write_bytes(frame_record(b"first") + b"\x05\x00")
    with pytest.raises(DataError, match=r"short\.tfrecord.*truncated record header at byte 21"):
        list(iter_records(path))


def test_corrupt_length_and_data_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "bad.tfrecord"
    framed = bytearray(frame_record(b"payload"))
    framed[0] ^= 0x01  # the length: its CRC no longer matches
    path.write_bytes(bytes(framed))
    with pytest.raises(DataError, match=r"bad\.tfrecord: corrupt record length at byte 0"):
        list(iter_records(path))
    framed = bytearray(frame_record(b"payload"))
    framed[14] ^= 0xFF  # a data byte
    path.write_bytes(bytes(framed))
    with pytest.raises(DataError, match=r"bad\.tfrecord: corrupt record data at byte 0"):
        list(iter_records(path, verify_data=True))
    assert [record.data for record in iter_records(path, verify_data=False)] != [b"payload"]


# --------------------------------------------------------------------------- tf.train.Example


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads here are < 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_example_decoding_of_packed_features() -> None:
    features = {
        "bytes": [b"a", b"", b"\x00\xff"],
        "floats": np.array([1.5, -2.25, 3e8], np.float32),
        "ints": np.array([0, -7, 2**40, 300], np.int64),
        "nested/key": [3],
    }
    decoded = parse_example(Record(Path("x"), 0, encode_example(features)))
    assert decoded["bytes"] == features["bytes"]
    np.testing.assert_array_equal(decoded["floats"], features["floats"])
    np.testing.assert_array_equal(decoded["ints"], features["ints"])
    assert decoded["floats"].dtype == np.float32 and decoded["ints"].dtype == np.int64
    assert parse_example(Record(Path("x"), 0, encode_example(features)), keys={"nested/key"}).keys() == {"nested/key"}


def test_example_decoding_of_unpacked_lists() -> None:
    minus_two = b"\xfe" + b"\xff" * 8 + b"\x01"  # int64 -2 as a 10-byte varint
    int64_list = b"\x08\x01" + b"\x08" + minus_two
    float_list = b"\x0d" + struct.pack("<f", 0.5) + b"\x0d" + struct.pack("<f", -1.0)
    entries = _field(1, _field(1, b"i") + _field(2, _field(3, int64_list)))
    entries += _field(1, _field(1, b"f") + _field(2, _field(2, float_list)))
    decoded = parse_example(Record(Path("x"), 0, _field(1, entries)))
    np.testing.assert_array_equal(decoded["i"], [1, -2])
    np.testing.assert_array_equal(decoded["f"], [0.5, -1.0])


def test_malformed_example_names_the_record() -> None:
    data = encode_example({"k": [b"value"]})[:-2]
    with pytest.raises(DataError, match=r"shard-7 \(record at byte 40\): not a valid tf.train.Example"):
        parse_example(Record(Path("shard-7"), 40, data))


def test_fixture_records_hold_the_published_features(tfds: tuple[Path, dict]) -> None:
    shard = tfds[0] / "movi_c" / "32x32" / "1.0.0" / "movi_c-train.tfrecord-00000-of-00002"
    features = parse_example(next(iter_records(shard)))
    assert {"video", "segmentations", "metadata/video_name", "depth", "forward_flow", "camera/positions"} <= set(
        features
    )
    assert {"instances/bboxes/ragged_flat_values", "instances/asset_id"} <= set(features)
    assert len(features["video"]) == FRAMES and features["video"][0].startswith(b"\x89PNG")


# --------------------------------------------------------------------------- conversion and reading


def test_converted_splits_hold_exactly_the_written_videos(converted: Path, tfds: tuple[Path, dict]) -> None:
    module = _module(converted)
    module.setup()
    for split, dataset in (("train", module.train_set), ("val", module.val_set), ("test", module.test_set)):
        expected = tfds[1][split]
        assert len(dataset) == len(expected)
        for index, video in enumerate(expected):
            item = dataset[index] if split != "train" else dataset.sample(index, None)
            if split == "train":
                assert item["video"].shape[0] == 2  # first clip of train_clip_length frames
            frames = item["meta"]["frame_indices"].numpy()
            assert item["meta"]["video_id"] == video.video_id
            torch.testing.assert_close(item["video"], torch.from_numpy(video.video[frames]).permute(0, 3, 1, 2) / 255.0)
            assert torch.equal(item["masks"], torch.from_numpy(video.segmentations[frames]).long())
    assert module.val_set[0]["video"].shape == (FRAMES, 3, SIZE, SIZE)  # evaluation: whole videos


def test_train_clips_are_random_and_reproducible(converted: Path, tfds: tuple[Path, dict]) -> None:
    module = _module(converted)
    module.setup("fit")
    dataset = module.train_set
    starts = set()
    for seed in range(12):
        first = dataset.sample(1, np.random.default_rng(seed))
        again = dataset.sample(1, np.random.default_rng(seed))
        assert torch.equal(first["video"], again["video"]) and torch.equal(first["masks"], again["masks"])
        frames = first["meta"]["frame_indices"].numpy()
        assert frames[1] == frames[0] + 1
        expected = tfds[1]["train"][1].video[frames]
        torch.testing.assert_close(first["video"], torch.from_numpy(expected).permute(0, 3, 1, 2) / 255.0)
        starts.add(int(frames[0]))
    assert len(starts) > 1


def test_val_batches_follow_the_batch_contract(converted: Path, tfds: tuple[Path, dict]) -> None:
    module = _module(converted)
    module.setup("validate")
    batch = next(iter(module.val_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape == (2, FRAMES, 3, SIZE, SIZE)
    assert batch["meta"]["video_id"] == [video.video_id for video in tfds[1]["val"]]
    assert int(batch["masks"].max()) == 3


def test_converter_resumes_after_an_interruption(converted: Path, tmp_path: Path, tfds: tuple[Path, dict]) -> None:
    out = _fresh_copy(converted, tmp_path)
    kept, deleted = sorted((out / "train").glob("*.npz"))[:2]
    kept_stat = kept.stat().st_mtime_ns
    (out / "train" / MANIFEST).unlink()
    deleted.unlink()
    with pytest.raises(DataError, match="half-converted"):
        MoviSource(out, "train", "movi_c")
    assert convert_movi(tfds[0], out, "movi_c", SIZE, splits=["train"], progress=False) == {"train": 3}
    assert deleted.is_file() and kept.stat().st_mtime_ns == kept_stat  # only the missing video is written again
    assert [MoviSource(out, "train", "movi_c").video_id(i) for i in range(3)] == [v.video_id for v in tfds[1]["train"]]
    manifest_time = (out / "train" / MANIFEST).stat().st_mtime_ns
    convert_movi(tfds[0], out, "movi_c", SIZE, splits=["train"], progress=False)  # complete: skipped
    assert (out / "train" / MANIFEST).stat().st_mtime_ns == manifest_time


def test_converter_refuses_to_mix_variants(converted: Path, tmp_path: Path, tfds: tuple[Path, dict]) -> None:
    out = _fresh_copy(converted, tmp_path)
    write_movi_tfds(tmp_path / "tfds_e", variant="movi_e", size=SIZE, frames=FRAMES, shards={"val": [1]})
    with pytest.raises(DataError, match="already holds a conversion of .*movi_c.*choose another --out"):
        convert_movi(tmp_path / "tfds_e", out, "movi_e", SIZE, splits=["val"], progress=False)


def test_cli_converts_and_reports_errors(tfds: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("convert_movi", REPO / "scripts" / "convert_movi.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--variant", "movi_c", "--resolution", str(SIZE), "--tfds-dir", str(tfds[0]), "--out", str(tmp_path / "o")]
    assert script.main([*args, "--splits", "val"]) == 0
    assert len(MoviSource(tmp_path / "o", "val", "movi_c")) == 2
    assert script.main([*args[:-3], str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "no TFDS movi_c 32x32 files under" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["movi_c", "movi_d", "movi_e"])
def test_hydra_config_builds_the_data_module(variant: str, converted: Path, tmp_path: Path) -> None:
    cfg = compose_config([f"data={variant}", f"paths.output_dir={tmp_path}", f"paths.data_root={tmp_path}"])
    module = instantiate(cfg.data)
    assert isinstance(module, MoviDataModule) and module.variant == variant
    assert module.root == tmp_path / variant and module.eval_clip_length is None and module.train_clip_length == 4
    assert isinstance(module.train_transform, VideoTransform) and module.train_transform.mode == "resize"
    if variant == "movi_c":
        cfg.data.root = str(converted)
        module = instantiate(cfg.data)
        module.setup("validate")
        assert module.val_set[0]["video"].shape == (FRAMES, 3, 128, 128)


@pytest.mark.parametrize(("experiment", "size"), [("videosaur_movi_c", 224), ("slotcontrast_movi_c", 336)])
def test_recipes_read_the_authors_movi_pipeline(
    experiment: str, size: int, converted: Path, tfds: tuple[Path, dict], tmp_path: Path
) -> None:
    """Evaluation: the stored frames bicubic (no antialiasing) to the model's size and clamped, masks
    nearest-exact; training: 2-frame chunks of the 5-frame videos (starts 0 and 2, never 1 or 3), flipped or not."""
    overrides = [f"experiment={experiment}", f"data.root={converted}", "data.train_clip_length=2"]
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}"])
    module = instantiate(cfg.data)
    module.setup("fit")
    video = tfds[1]["val"][0]
    clip = torch.from_numpy(video.video).permute(3, 0, 1, 2).float() / 255.0  # [3, T, H, W]
    expected = torch.nn.functional.interpolate(clip, size=(size, size), mode="bicubic", align_corners=False)
    masks = torch.from_numpy(video.segmentations)[:, None].float()
    expected_masks = torch.nn.functional.interpolate(masks, size=(size, size), mode="nearest-exact")[:, 0].long()
    item = module.val_set[0]
    assert torch.equal(item["video"], expected.clamp(0, 1).permute(1, 0, 2, 3))
    assert torch.equal(item["masks"], expected_masks)
    starts, flipped = set(), set()
    for seed in range(20):
        sample = module.train_set.sample(1, np.random.default_rng(seed))
        frames = sample["meta"]["frame_indices"].tolist()
        starts.add(frames[0])
        stored = tfds[1]["train"][1].video[frames]
        clip = torch.from_numpy(stored).permute(3, 0, 1, 2).float() / 255.0
        expected = torch.nn.functional.interpolate(clip, size=(size, size), mode="bicubic", align_corners=False)
        expected = expected.clamp(0, 1).permute(1, 0, 2, 3)
        is_flipped = not torch.equal(sample["video"], expected)
        assert torch.equal(sample["video"], expected.flip(-1) if is_flipped else expected)
        flipped.add(is_flipped)
    assert starts == {0, 2} and flipped == {False, True}


# --------------------------------------------------------------------------- bad input


def test_missing_root_says_where_and_how_to_convert(tmp_path: Path) -> None:
    module = _module(tmp_path / "nowhere")
    with pytest.raises(DataError) as error:
        module.setup("validate")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and "gs://kubric-public/tfds/movi_c/128x128" in message
    command = "python scripts/convert_movi.py --variant movi_c --resolution 128 --tfds-dir <dir> --out"
    assert f"{command} {tmp_path / 'nowhere'}" in message


def test_unconverted_split_names_the_command(converted: Path, tmp_path: Path) -> None:
    out = _fresh_copy(converted, tmp_path)
    shutil.rmtree(out / "test")
    with pytest.raises(DataError, match=r"split 'test' not converted.*--splits test"):
        _module(out).setup("test")


def test_half_converted_folders_are_refused(converted: Path, tmp_path: Path) -> None:
    out = _fresh_copy(converted, tmp_path)
    next((out / "val").glob("*.npz")).unlink()
    with pytest.raises(DataError, match=r"half-converted: 1 of 2 videos .* missing.*convert_movi.py"):
        _module(out).setup("validate")
    (out / "train" / MANIFEST).unlink()
    with pytest.raises(DataError, match=rf"{out / 'train'} is half-converted: no index.json"):
        MoviSource(out, "train", "movi_c")


def test_stored_frame_count_mismatches_name_the_file(converted: Path, tmp_path: Path) -> None:
    out = _fresh_copy(converted, tmp_path)
    source = MoviSource(out, "val", "movi_c")
    path = out / "val" / f"{source.video_id(0)}.npz"
    video, segmentations = source.load(0)
    np.savez_compressed(path, video=video, segmentations=segmentations[:-1])
    with pytest.raises(DataError, match=rf"{path}: segmentations are uint8 \(4, 32, 32\), video frames \(5, 32, 32\)"):
        source.read(0, np.arange(2))
    np.savez_compressed(path, video=video[:-1], segmentations=segmentations[:-1])
    with pytest.raises(DataError, match=rf"{path}: video is uint8 \(4, 32, 32, 3\), but index.json says"):
        source.read(0, np.arange(2))
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=rf"{path}: unreadable"):
        source.read(0, np.arange(2))


def test_tfds_frame_count_mismatch_names_the_shard(tmp_path: Path) -> None:
    version_dir, written = write_movi_tfds(tmp_path / "tfds", size=SIZE, frames=FRAMES, shards={"val": [1]})
    shard = version_dir / "movi_c-validation.tfrecord-00000-of-00001"
    write_records(shard, [movi_example(written["val"][0], mask_frames=FRAMES - 1)])
    with pytest.raises(DataError, match=rf"{shard} \(record at byte 0\): video 7 has 5 frames, 4 segmentation"):
        convert_movi(tmp_path / "tfds", tmp_path / "out", "movi_c", SIZE, splits=["val"], progress=False)
    write_records(shard, [movi_example(written["val"][0], num_frames=24)])
    with pytest.raises(DataError, match=r"metadata/num_frames = 24"):
        convert_movi(tmp_path / "tfds", tmp_path / "out", "movi_c", SIZE, splits=["val"], progress=False)


def test_corrupt_and_truncated_shards_name_the_file(tmp_path: Path) -> None:
    version_dir, _ = write_movi_tfds(tmp_path / "tfds", size=SIZE, frames=FRAMES, shards={"val": [2]})
    shard = version_dir / "movi_c-validation.tfrecord-00000-of-00001"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=rf"{shard}: truncated record at byte \d+"):
        convert_movi(tmp_path / "tfds", tmp_path / "out", "movi_c", SIZE, splits=["val"], progress=False)
    assert not (tmp_path / "out" / "val" / MANIFEST).exists()
    shard.write_bytes(data[:20] + bytes(len(data) - 20))  # zeroed: a bad length CRC after the first header
    with pytest.raises(DataError, match=rf"{shard}"):
        convert_movi(tmp_path / "tfds", tmp_path / "out", "movi_c", SIZE, splits=["val"], progress=False)


def test_missing_shards_splits_and_resolution_are_explained(tmp_path: Path) -> None:
    version_dir, _ = write_movi_tfds(tmp_path / "tfds", size=SIZE, frames=FRAMES, shards={"train": [1, 1], "val": [1]})
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"no 'test' split \(it has \['train', 'validation'\]\)"):
        convert_movi(tmp_path / "tfds", out, "movi_c", SIZE, progress=False)
    assert not out.exists()  # every split is checked before anything is written
    with pytest.raises(DataError, match=r"no TFDS movi_c 64x64 files under .*gs://kubric-public/tfds"):
        convert_movi(tmp_path / "tfds", out, "movi_c", 64, splits=["val"], progress=False)
    with pytest.raises(DataError, match=r"describes 'movi_c', not 'movi_d'"):
        convert_movi(version_dir, out, "movi_d", SIZE, splits=["val"], progress=False)
    (version_dir / "movi_c-train.tfrecord-00001-of-00002").unlink()
    with pytest.raises(DataError, match=r"1 of 2 'train' shards missing \(e.g. movi_c-train.tfrecord-00001-of-00002\)"):
        convert_movi(tmp_path / "tfds", out, "movi_c", SIZE, splits=["train"], progress=False)


def test_bad_video_names_and_frame_sizes_are_refused(tmp_path: Path) -> None:
    version_dir, written = write_movi_tfds(tmp_path / "tfds", size=SIZE, frames=FRAMES, shards={"val": [1]})
    shard = version_dir / "movi_c-validation.tfrecord-00000-of-00001"
    write_records(shard, [movi_example(written["val"][0], name=b"../escape")])
    with pytest.raises(DataError, match=r"metadata/video_name .* is not a usable file name"):
        convert_movi(tmp_path / "tfds", tmp_path / "out", "movi_c", SIZE, splits=["val"], progress=False)
    small = random_video(np.random.default_rng(0), "9", FRAMES, SIZE // 2)
    write_records(shard, [movi_example(small)])
    with pytest.raises(DataError, match=r"frames are \(16, 16\) and masks \(16, 16\), expected \(32, 32\)"):
        convert_movi(tmp_path / "tfds", tmp_path / "out", "movi_c", SIZE, splits=["val"], progress=False)


def test_unknown_variant_is_refused(tfds: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown MOVi variant 'movi_x'; known: \['movi_c', 'movi_d', 'movi_e'\]"):
        MoviDataModule(root=str(tmp_path), variant="movi_x")
    with pytest.raises(ValueError, match="unknown MOVi variant 'movi_a'"):
        convert_movi(tfds[0], tmp_path / "out", "movi_a", SIZE, progress=False)
    with pytest.raises(ValueError, match=r"unknown splits \['validation'\]"):
        convert_movi(tfds[0], tmp_path / "out", "movi_c", SIZE, splits=["validation"], progress=False)
