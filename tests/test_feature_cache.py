"""The frozen-feature cache (ocl/data/feature_cache.py, scripts/cache_features.py): cached training
gives the uncached losses, draws the recipe's clips, and refuses a cache of another experiment."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from conftest import REPO, compose_config, run_cli
from hydra.utils import instantiate
from movi_fixtures import write_movi_tfds

from ocl.build import build_datamodule, build_model
from ocl.cli import train
from ocl.contracts.batch import FEATURE_KEYS, FEATURES, VIDEO
from ocl.data.clips import ClipDataset, VideoSource
from ocl.data.datamodule import collate_videos
from ocl.data.feature_cache import (
    FEATURES_FILE,
    KEYS_FILE,
    MANIFEST,
    CachedClips,
    FeatureCache,
    FeatureCacheError,
    FeatureCacheWriter,
    cached_placements,
)
from ocl.data.movi_convert import convert_movi
from ocl.data.transforms import Placement, VideoTransform
from scripts import bench_experiments

SYNTHETIC = [
    "model/encoder=vit_synthetic",
    "data.train_size=6",
    "data.val_size=2",
    "data.batch_size=2",
    "data.resolution=32",
    "data.train_frames=3",
    "data.val_frames=3",
    "model.processor.initialiser.num_slots=3",
    "model.processor.initialiser.dim=16",
    "model.decoder.hidden_dims=[16]",
    "model.scheduler.warmup_steps=2",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=null",
    "logger=csv",
]
"""The ``*_synthetic`` feature experiments at a few tokens, on the tiny random ViT (3 blocks, 4x4 patches of 8 px)."""

MOVI_TINY = ["model/encoder=vit_synthetic", "model.encoder.image_size=32", "data.train_clip_length=2", *SYNTHETIC[7:]]
"""A MOVi recipe's data pipeline (bicubic resize, flips, aligned chunks) with the tiny random ViT."""


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("cache_features", REPO / "scripts" / "cache_features.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def write_cache(overrides: list[str], directory: Path, *cache: str) -> Path:
    """Run scripts/cache_features.py's writer in process (its Hydra config, ``overrides``)."""
    options = [f"cache.dir={directory}", "cache.device=cpu", *cache]
    cfg = compose_config([*overrides, *options, f"paths.output_dir={directory}_run"], name="cache_features")
    load_script().write_cache(cfg)
    return directory


@pytest.fixture(scope="module")
def movi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted MOVi-C fixture: 3 training videos of 4 frames at 32 x 32."""
    tfds = tmp_path_factory.mktemp("tfds")
    write_movi_tfds(tfds, size=32, frames=4)
    out = tmp_path_factory.mktemp("movi_c")
    convert_movi(tfds, out, "movi_c", 32, progress=False)
    return out


def losses(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # the same initial-slot noise for both paths
    with torch.no_grad():
        _, terms = model.compute_losses(model(batch), batch)
    return terms


@pytest.mark.parametrize("encoder", ["vit_synthetic", "patch_synthetic"])
@pytest.mark.parametrize("experiment", ["videosaur_synthetic", "slotcontrast_synthetic", "slotcurri_synthetic"])
def test_cached_losses_equal_the_uncached_losses(tmp_path: Path, experiment: str, encoder: str) -> None:
    """fp32, no augmentation (the synthetic videos), a float32 cache: every loss term within 1e-5
    relative, and the encoder is not called; a float16 cache (the default) within 1e-3. Both CPU
    stand-ins: the tiny ViT and the patch encoder (the experiments' own). The cache holds keys
    where the model reads them: VideoSAUR's similarity target, the SlotContrast experiments' MSE target."""
    overrides = [f"experiment={experiment}", f"model/encoder={encoder}", *SYNTHETIC[1:]]
    caches = {
        dtype: write_cache(overrides, tmp_path / dtype, f"cache.dtype={dtype}") for dtype in ("float32", "float16")
    }
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}"])
    datamodule = build_datamodule(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).eval()
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    clips = datamodule.split_clips("train")
    draws = [np.random.default_rng([0, position]) for position in range(2)]
    uncached = losses(model, collate_videos([clips.sample(index, rng) for index, rng in zip([3, 5], draws)]))
    assert calls
    calls.clear()
    for dtype, tolerance in (("float32", 1e-5), ("float16", 1e-3)):
        cached_clips = CachedClips(clips, FeatureCache(caches[dtype]))
        draws = [np.random.default_rng([0, position]) for position in range(2)]
        batch = collate_videos([cached_clips.sample(index, rng) for index, rng in zip([3, 5], draws)])
        assert VIDEO not in batch and FEATURE_KEYS in batch  # each of the three reads keys
        assert batch[FEATURES].dtype == getattr(torch, dtype)
        cached = losses(model, batch)
        assert not calls
        assert cached.keys() == uncached.keys()
        for name, value in uncached.items():
            torch.testing.assert_close(cached[name], value, rtol=tolerance, atol=0.0, msg=f"{name} ({dtype})")


def test_training_from_the_cache_draws_the_recipes_clips_and_flips(tmp_path: Path, movi_root: Path) -> None:
    """MOVi recipe (resize + flips, aligned chunks): with the same draw generator, a cached clip is
    the encoder's output on the recipe's clip: same frames, same flip."""
    overrides = ["experiment=videosaur_movi_c", *MOVI_TINY, f"data.root={movi_root}"]
    cache = FeatureCache(write_cache(overrides, tmp_path / "cache", "cache.dtype=float32"))
    assert cache.flips and cache.crops == 1 and cache.has_keys
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}"])
    datamodule = build_datamodule(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    clips = datamodule.split_clips("train")
    cached_clips = CachedClips(clips, cache)
    flips = set()
    for position in range(12):
        index = position % len(clips)
        recipe = clips.sample(index, np.random.default_rng([7, position]))
        item = cached_clips.sample(index, np.random.default_rng([7, position]))
        assert torch.equal(item["meta"]["frame_indices"], recipe["meta"]["frame_indices"])
        encoded = model.encode(recipe[VIDEO][None])
        torch.testing.assert_close(item[FEATURES], encoded.features, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(item[FEATURE_KEYS], encoded.keys, rtol=1e-5, atol=1e-6)
        frames, _ = clips.source.read(index, recipe["meta"]["frame_indices"].numpy())
        unflipped, _ = clips.transform.apply(frames, None, Placement())
        flips.add(not torch.equal(recipe[VIDEO], unflipped))
    assert flips == {False, True}


class WideVideos(VideoSource):
    """Two random videos of 24 x 40 frames (a random crop has 16 columns of play at size 24)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 256, (length, 24, 40, 3), dtype=np.uint8) for length in (3, 5)]

    def __len__(self) -> int:
        return len(self.frames)

    def video_id(self, index: int) -> str:
        return f"wide{index}"

    def num_frames(self, index: int) -> int:
        return len(self.frames[index])

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, None]:
        return self.frames[index][frame_indices], None


def patches(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in encoder: frames ``[n, 3, 24, 24]`` -> their 8 x 8 patches ``[n, 9, 192]`` (and negated keys)."""
    tokens = torch.nn.functional.unfold(frames, kernel_size=8, stride=8).transpose(1, 2)
    return tokens, -tokens


def test_random_crops_are_cached_at_bin_centres_with_both_flips(tmp_path: Path) -> None:
    transform = VideoTransform(size=24, mode="short_side_crop", crop="random", horizontal_flip=True)
    clips = ClipDataset(WideVideos(), clip_length=2, transform=transform)
    fingerprint = {field: {} for field in ("resolution", "encoder", "dataset", "transform")}
    fingerprint["resolution"] = {"image_size": [24, 24]}
    writer = FeatureCacheWriter(tmp_path, clips, {**fingerprint, "split": "train"}, True, 4, "float32", 9, 192)
    for video in range(len(writer)):
        writer.write(video, patches)
    writer.finish()
    cache = FeatureCache(tmp_path)
    placements = cached_placements(transform, 24, 40, 4)
    assert [(p.left, p.flip) for p in placements] == [(left, flip) for left in (2, 6, 10, 14) for flip in (False, True)]
    for video in range(2):
        frames, _ = clips.source.read(video, np.arange(clips.source.num_frames(video)))
        for variant, placement in enumerate(placements):
            expected = patches(transform.apply(frames, None, placement)[0])
            item = cache.read(video, np.arange(len(frames)), variant)
            assert torch.equal(item[FEATURES], expected[0]) and torch.equal(item[FEATURE_KEYS], expected[1])
    drawn = {CachedClips(clips, cache).placement(np.random.default_rng(seed)) for seed in range(200)}
    assert drawn == set(range(8))


VIDEOSAUR = ["experiment=videosaur_synthetic", *SYNTHETIC]
SLOTCONTRAST = ["experiment=slotcontrast_synthetic", *SYNTHETIC]


WEIGHTS = "model.encoder.weights=<file>"
"""Replaced by :func:`vit_weights`: both experiments load the same ViT (random weights depend on the model)."""


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``model.encoder.weights=<a file of the synthetic ViT's weights>``."""
    encoder = compose_config([*VIDEOSAUR, "paths.output_dir=/unused"]).model.encoder
    torch.manual_seed(0)
    vit = timm.create_model(
        encoder.model_name,
        img_size=encoder.image_size,
        depth=encoder.depth,
        num_heads=encoder.num_heads,
        embed_dim=encoder.embed_dim,
        patch_size=encoder.patch_size,
    )
    path = tmp_path_factory.mktemp("weights") / "vit.pth"
    torch.save(vit.state_dict(), path)
    return f"model.encoder.weights={path}"


@pytest.fixture(scope="module")
def videosaur_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cache(VIDEOSAUR, tmp_path_factory.mktemp("cache") / "train")


def refusal(cache: Path, overrides: list[str], output_dir: Path) -> str:
    """The FeatureCacheError of training ``overrides`` from ``cache`` (in process, through ``trainer.fit``)."""
    cfg = compose_config([*overrides, f"data.feature_cache={cache}", f"paths.output_dir={output_dir}"])
    with pytest.raises(FeatureCacheError) as error:
        train(cfg)
    return str(error.value)


@pytest.mark.parametrize(
    ("written", "options", "trained", "message"),
    [
        (VIDEOSAUR, [], [*VIDEOSAUR, "seed=1"], "encoder differs (encoder.weights_sha256"),  # another random ViT
        (
            VIDEOSAUR,
            [],
            [*VIDEOSAUR, "model.encoder.image_size=16"],
            "resolution, encoder differ (resolution.image_size",
        ),
        (
            VIDEOSAUR,
            [],
            [*VIDEOSAUR, "data.train_size=5"],
            "dataset differs (dataset.num_videos: cache 6, experiment 5",
        ),
        (VIDEOSAUR, ["cache.split=val"], VIDEOSAUR, "dataset, split differ"),
        (  # the recipes' SlotContrast reads no keys
            [*SLOTCONTRAST, WEIGHTS, "model.reconstruction_target=features"],
            [],
            [*VIDEOSAUR, WEIGHTS],
            "contents differ (no attention keys",
        ),
    ],
)
def test_a_cache_of_another_experiment_is_refused_naming_the_field(
    tmp_path: Path, vit_weights: str, written: list[str], options: list[str], trained: list[str], message: str
) -> None:
    written, trained = ([o.replace(WEIGHTS, vit_weights) for o in overrides] for overrides in (written, trained))
    cache = write_cache(written, tmp_path / "cache", *options)
    assert message in refusal(cache, trained, tmp_path / "run")


def test_a_cache_of_another_transform_is_refused(tmp_path: Path, movi_root: Path) -> None:
    recipe = ["experiment=videosaur_movi_c", *MOVI_TINY, f"data.root={movi_root}"]
    cache = write_cache(recipe, tmp_path / "cache")
    message = refusal(cache, [*recipe, "data.train_transform.horizontal_flip=false"], tmp_path / "run")
    assert "transform differs (transform.horizontal_flip: cache True, experiment False)" in message


def test_a_missing_or_incomplete_cache_is_refused(tmp_path: Path, videosaur_cache: Path) -> None:
    module = instantiate(
        compose_config(
            [
                "experiment=videosaur_synthetic",
                *SYNTHETIC,
                f"data.feature_cache={tmp_path / 'none'}",
                f"paths.output_dir={tmp_path}",
            ]
        ).data
    )
    with pytest.raises(FeatureCacheError, match="not found: .*none does not exist; write it with"):
        module.setup("fit")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / FEATURES_FILE).write_bytes((videosaur_cache / FEATURES_FILE).read_bytes()[:-100])
    with pytest.raises(FeatureCacheError, match=f"incomplete \\(no {MANIFEST}\\)"):
        FeatureCache(incomplete)
    for name in (MANIFEST, "index.npz", "keys.npy"):
        (incomplete / name).write_bytes((videosaur_cache / name).read_bytes())
    with pytest.raises(FeatureCacheError, match=f"unreadable {FEATURES_FILE}"):
        FeatureCache(incomplete)
    with pytest.raises(FeatureCacheError, match="SAVi reads no frozen encoder features"):
        FeatureCache(videosaur_cache).check_model(None, "SAVi")
    manifest = json.loads((videosaur_cache / MANIFEST).read_text())
    (incomplete / MANIFEST).write_text(json.dumps({**manifest, "version": 0}))
    with pytest.raises(FeatureCacheError, match="format version 0"):
        FeatureCache(incomplete)


def write_wide_cache(directory: Path, keys: bool, dtype: str, **options: Any) -> FeatureCacheWriter:
    """A cache of :class:`WideVideos` (random crops and flips) with the stand-in encoder :func:`patches`."""
    transform = VideoTransform(size=24, mode="short_side_crop", crop="random", horizontal_flip=True)
    clips = ClipDataset(WideVideos(), clip_length=2, transform=transform)
    fingerprint = {field: {} for field in ("encoder", "dataset", "transform")}
    fingerprint = {**fingerprint, "resolution": {"image_size": [24, 24]}, "split": "train"}
    writer = FeatureCacheWriter(directory, clips, fingerprint, keys, 2, dtype, 9, 192, **options)
    for video in range(len(writer)):
        writer.write(video, patches)
    writer.finish()
    return writer


def test_the_script_refuses_to_overwrite_a_cache(tmp_path: Path, videosaur_cache: Path) -> None:
    """A second cache_features.py run into the folder of a complete cache (another dtype here, as
    it could be other weights) stops before writing anything, saying what the folder holds."""
    cache = Path(shutil.copytree(videosaur_cache, tmp_path / "train"))  # the module's cache stays intact
    before = {path.name: path.read_bytes() for path in cache.iterdir()}
    with pytest.raises(FeatureCacheError) as error:
        write_cache(VIDEOSAUR, cache, "cache.dtype=float32")
    message = str(error.value)
    assert f"feature cache folder {cache} already holds a feature cache" in message
    assert "experiment videosaur_synthetic, split train, encoder " in message and "float16" in message
    assert "cache.overwrite=true" in message and "another cache.dir=" in message
    assert {path.name: path.read_bytes() for path in cache.iterdir()} == before
    assert FeatureCache(cache).fingerprint == json.loads((cache / MANIFEST).read_text())["fingerprint"]


def test_an_interrupted_cache_is_refused_and_overwrite_replaces_a_cache(tmp_path: Path) -> None:
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / FEATURES_FILE).write_bytes(b"half-written")
    with pytest.raises(
        FeatureCacheError,
        match=f"{re.escape(str(interrupted))} already holds an incomplete feature cache .*cache.overwrite=true",
    ):
        write_wide_cache(interrupted, True, "float32")
    assert (interrupted / FEATURES_FILE).read_bytes() == b"half-written"
    write_wide_cache(interrupted, True, "float32", overwrite=True)
    assert FeatureCache(interrupted).has_keys
    manifest = (interrupted / MANIFEST).read_bytes()
    with pytest.raises(FeatureCacheError, match="already holds a feature cache \\(split train, float32\\)"):
        write_wide_cache(interrupted, False, "float16")
    assert (interrupted / MANIFEST).read_bytes() == manifest
    write_wide_cache(interrupted, False, "float16", overwrite=True)  # the old keys go with the old cache
    cache = FeatureCache(interrupted)
    assert not cache.has_keys and not (interrupted / KEYS_FILE).exists()
    assert cache.read(0, np.arange(3), 0)[FEATURES].dtype == torch.float16
    (tmp_path / "file").write_text("")
    with pytest.raises(FeatureCacheError, match="is a file"):
        write_wide_cache(tmp_path / "file", False, "float16", overwrite=True)
    write_wide_cache(tmp_path / "empty", False, "float16")  # a new or empty folder needs no overwrite


@pytest.mark.slow
def test_the_script_writes_a_cache_that_trains(tmp_path: Path) -> None:
    overrides = ["experiment=videosaur_synthetic", *SYNTHETIC]
    cache = tmp_path / "cache"
    result = run_cli("scripts/cache_features.py", [*overrides, f"cache.dir={cache}", f"hydra.run.dir={tmp_path}/log"])
    assert result.returncode == 0, result.stderr[-3000:]
    # the command it prints trains the experiment the cache was written for
    assert shlex.join(["python", "train.py", *overrides, f"data.feature_cache={cache}"]) in result.stdout
    run = tmp_path / "run"
    metrics = train(compose_config([*overrides, f"data.feature_cache={cache}", f"paths.output_dir={run}"]))
    assert -1.0 <= metrics["val/video_fg_ari"] <= 1.0
    refused = run_cli(
        "train.py", [*overrides, "seed=1", f"data.feature_cache={cache}", f"hydra.run.dir={tmp_path}/refused"]
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "data error: feature cache" in refused.stderr and "encoder differs" in refused.stderr


@pytest.mark.slow
def test_bench_experiments_times_steps_on_cached_features(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--tiny", "--steps", "1", "--warmup", "0", "--precisions", "32-true", "--feature-cache"]
    bench_experiments.main([*arguments, "--experiments", "videosaur_movi_c", "smtc_ytvos"])
    table = capsys.readouterr().out.split("Frozen-feature cache")[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| videosaur_movi_c")]
    assert len(rows) == 1 and "smtc_ytvos" not in table  # SMTC's ViT is trained: nothing to cache
    uncached, cached, ratio = (float(value) for value in rows[0][3:6])
    assert uncached > 0 and cached > 0 and ratio == pytest.approx(uncached / cached, rel=0.02, abs=0.01)
