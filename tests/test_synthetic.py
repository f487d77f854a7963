"""Tests of the procedural video dataset and its data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from ocl.contracts.batch import validate_batch
from ocl.data.datamodule import SyntheticDataModule, VideoDataModule, collate_single_threaded
from ocl.data.synthetic import (
    LEVELS,
    SHAPES,
    LevelSpec,
    Scene,
    SyntheticVideoDataset,
    generate_video,
    get_level,
    render_scene,
    sample_scene,
    video_seed,
)

RES = 32
FRAMES = 6


def _scene(seed: int, level: str, frames: int = FRAMES, resolution: int = RES) -> Scene:
    return sample_scene(np.random.default_rng(seed), LEVELS[level], frames, resolution)


def _colours_of(video: np.ndarray, where: np.ndarray) -> set[tuple[int, ...]]:
    """Distinct RGB colours of ``video [T, H, W, 3]`` at the pixels ``where [T, H, W]``."""
    return {tuple(c) for c in np.unique(video[where].reshape(-1, 3), axis=0)}


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_same_seed_same_video_and_different_seed_different_video(level: str) -> None:
    video, masks = generate_video(7, level, FRAMES, RES)
    again_video, again_masks = generate_video(7, level, FRAMES, RES)
    other_video, _ = generate_video(8, level, FRAMES, RES)
    assert video.shape == (FRAMES, RES, RES, 3) and video.dtype == np.uint8
    assert masks.shape == (FRAMES, RES, RES) and masks.dtype == np.uint8
    np.testing.assert_array_equal(video, again_video)
    np.testing.assert_array_equal(masks, again_masks)
    assert not np.array_equal(video, other_video)


def test_generate_video_is_sample_then_render() -> None:
    video, masks = generate_video(3, "medium", FRAMES, RES)
    scene_video, scene_masks = render_scene(_scene(3, "medium"), RES)
    np.testing.assert_array_equal(video, scene_video)
    np.testing.assert_array_equal(masks, scene_masks)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_levels_generate_their_object_counts(level: str) -> None:
    spec = LEVELS[level]
    counts = set()
    for seed in range(60):
        scene = _scene(seed, level)
        _, masks = render_scene(scene, RES)
        counts.add(scene.num_objects)
        assert masks.max() <= scene.num_objects
        assert set(scene.shapes) <= set(spec.shapes) and set(scene.textures) <= set(spec.textures)
    assert counts == set(range(spec.num_objects[0], spec.num_objects[1] + 1))


def test_easy_masks_are_exact() -> None:
    """Each id has exactly its object's colour, the background exactly the background's."""
    for seed in range(20):
        scene = _scene(seed, "easy")
        video, masks = render_scene(scene, RES)
        assert _colours_of(video, masks == 0) <= {tuple(scene.background[:, 0, 0])}
        assert (scene.background == scene.background[:, :1, :1]).all(), "easy backgrounds are plain"
        for k in range(1, scene.num_objects + 1):
            if (masks == k).any():
                assert _colours_of(video, masks == k) == {tuple(scene.colours[k - 1, 0])}


@pytest.mark.parametrize("level", ["medium", "hard"])
def test_textured_masks_are_exact(level: str) -> None:
    """Every pixel of id k has one of object k's two texture colours, in every frame."""
    for seed in range(20):
        scene = _scene(seed, level)
        video, masks = render_scene(scene, RES)
        for k in range(1, scene.num_objects + 1):
            if (masks == k).any():
                assert _colours_of(video, masks == k) <= {tuple(c) for c in scene.colours[k - 1]}


def test_colours_contrast_with_background_and_each_other() -> None:
    for level in LEVELS:
        for seed in range(20):
            scene = _scene(seed, level)
            brightest_object = scene.colours.astype(int).max(axis=-1).min()
            brightest_background = scene.background.astype(int).max(axis=0).max()
            assert brightest_object - brightest_background >= 88  # 0.35 * 255, minus rounding
            first_colours = {tuple(c) for c in scene.colours[:, 0]}
            assert len(first_colours) == scene.num_objects


def test_textured_levels_use_two_colours() -> None:
    scene = _scene(0, "hard")
    video, masks = render_scene(scene, RES)
    two_coloured = [k for k in range(1, scene.num_objects + 1) if len(_colours_of(video, masks == k)) == 2]
    assert two_coloured, "hard objects are always textured"


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_objects_stay_in_frame(level: str) -> None:
    spec = LEVELS[level]
    for seed in range(30):
        scene = _scene(seed, level, frames=24, resolution=64)
        max_radius = scene.radii.max(axis=1)[:, None, None]
        # At most `overflow` of an object's radius leaves the frame; its centre never does.
        assert (scene.centers >= max_radius * (1 - spec.overflow) - 1e-3).all()
        assert (scene.centers <= 64 - max_radius * (1 - spec.overflow) + 1e-3).all()


def test_objects_move_and_bounce() -> None:
    scene = _scene(1, "easy", frames=200, resolution=64)
    steps = np.diff(scene.centers, axis=1)  # [M, T - 1, 2]
    assert (np.abs(steps).sum(axis=-1) > 0).all(), "every object moves in every frame"
    flips = np.sign(steps[:, 1:]) != np.sign(steps[:, :-1])
    assert flips.any(axis=(1, 2)).all(), "over 200 frames every object bounces"


def _two_circle_scene() -> Scene:
    """A small circle (id 1) crossing behind a large static circle (id 2) over 9 frames."""
    frames = 9
    back_x = np.linspace(4.0, 28.0, frames)
    centers = np.stack([np.stack([back_x, np.full(frames, 16.0)], axis=1), np.full((frames, 2), 16.0)])
    return Scene(
        shapes=("circle", "circle"),
        textures=("solid", "solid"),
        centers=centers.astype(np.float32),
        radii=np.array([[3.0] * frames, [8.0] * frames], dtype=np.float32),
        angles=np.zeros(2, dtype=np.float32),
        texture_frequency=np.ones(2, dtype=np.float32),
        texture_offset=np.zeros(2, dtype=np.float32),
        colours=np.array([[[255, 0, 0]] * 2, [[0, 0, 255]] * 2], dtype=np.uint8),
        background=np.zeros((3, RES, RES), dtype=np.uint8),
        camera=np.zeros((frames, 2), dtype=np.int64),
    )


def test_occlusion_keeps_ids_and_topmost_wins() -> None:
    scene = _two_circle_scene()
    video, masks = render_scene(scene, RES)
    visible = (masks == 1).any(axis=(1, 2))
    assert visible[0] and not visible[4] and visible[-1], "id 1 disappears behind id 2 and reappears"
    assert (masks == 2).sum(axis=(1, 2)).min() == (masks[0] == 2).sum(), "the front object is never cut"
    # Pixels of the back circle that the front circle covers carry the front id.
    ys, xs = np.mgrid[:RES, :RES] + 0.5
    back_shape = (xs - float(scene.centers[0, 2, 0])) ** 2 + (ys - 16.0) ** 2 <= 9.0
    overlap = back_shape & (masks[2] == 2)
    assert overlap.any() and not (masks[2][back_shape] == 0).any()
    assert _colours_of(video, masks == 1) == {(255, 0, 0)}


def test_random_videos_have_occlusions_with_stable_ids() -> None:
    """Some medium video has an object that vanishes and comes back, with its own colours."""
    for seed in range(100):
        scene = _scene(seed, "medium", frames=12)
        video, masks = render_scene(scene, RES)
        for k in range(1, scene.num_objects + 1):
            present = (masks == k).any(axis=(1, 2))
            hidden = np.flatnonzero(~present)
            if len(hidden) and present[: hidden[0]].any() and present[hidden[-1] :].any():
                assert _colours_of(video, masks == k) <= {tuple(c) for c in scene.colours[k - 1]}
                return
    pytest.fail("no video in which an object disappears and reappears")


def test_camera_pans_the_background_in_hard_level() -> None:
    scene = _scene(0, "hard", frames=12, resolution=64)
    assert (np.abs(np.diff(scene.camera, axis=0)).sum(axis=1) > 0).any()
    assert (scene.radii.max(axis=1) > scene.radii.min(axis=1) * 1.05).all(), "objects change scale"


def test_generation_of_many_videos_runs() -> None:
    """Speed sanity without a timing assertion: 50 full-size videos of each level."""
    for level in LEVELS:
        for seed in range(50):
            video, masks = generate_video(seed, level, 6, 64)
            assert video.shape == (6, 64, 64, 3) and masks.shape == (6, 64, 64)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="known levels.*easy"):
        get_level("impossible")
    with pytest.raises(ValueError, match="known splits"):
        SyntheticVideoDataset(split="training")
    with pytest.raises(ValueError, match="size"):
        SyntheticVideoDataset(size=0)
    with pytest.raises(ValueError, match="num_frames"):
        generate_video(0, "easy", 0, RES)
    with pytest.raises(ValueError, match="shapes"):
        LevelSpec(num_objects=(1, 2), radius=(0.1, 0.2), speed=(0.0, 0.1), shapes=("hexagon",))
    with pytest.raises(ValueError, match="num_objects"):
        LevelSpec(num_objects=(3, 2), radius=(0.1, 0.2), speed=(0.0, 0.1))
    with pytest.raises(IndexError):
        SyntheticVideoDataset(size=2)[2]
    with pytest.raises(ValueError, match="known levels"):
        SyntheticDataModule(level="extreme")
    with pytest.raises(RuntimeError, match="setup"):
        VideoDataModule().train_dataloader()


def test_custom_level_spec() -> None:
    spec = LevelSpec(num_objects=(1, 1), radius=(0.2, 0.2), speed=(0.0, 0.0), shapes=("star",))
    scene = sample_scene(np.random.default_rng(0), spec, 3, RES)
    assert scene.shapes == ("star",)
    np.testing.assert_allclose(scene.centers[0, 0], scene.centers[0, -1])
    dataset = SyntheticVideoDataset(size=1, level=spec, num_frames=3, resolution=RES)
    assert dataset[0]["masks"].max() == 1


def test_every_shape_rasterises_inside_its_radius() -> None:
    for shape in SHAPES:
        spec = LevelSpec(num_objects=(1, 1), radius=(0.3, 0.3), speed=(0.0, 0.0), shapes=(shape,))
        scene = sample_scene(np.random.default_rng(0), spec, 1, 64)
        _, masks = render_scene(scene, 64)
        ys, xs = np.nonzero(masks[0])
        distance = np.hypot(xs + 0.5 - scene.centers[0, 0, 0], ys + 0.5 - scene.centers[0, 0, 1])
        assert distance.max() <= scene.radii[0, 0] + 1e-4, shape
        assert len(xs) >= 0.25 * np.pi * scene.radii[0, 0] ** 2, f"{shape} covers a fair part of its disc"


# --------------------------------------------------------------------------- dataset


def test_splits_are_disjoint() -> None:
    seeds = {split: {video_seed(0, split, i) for i in range(500)} for split in ("train", "val", "test")}
    assert all(len(s) == 500 for s in seeds.values())
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"] or seeds["val"] & seeds["test"])
    assert video_seed(0, "train", 0) != video_seed(1, "train", 0)
    videos = {
        split: {
            SyntheticVideoDataset(split, 40, num_frames=2, resolution=RES).arrays(i)[0].tobytes() for i in range(40)
        }
        for split in ("train", "val", "test")
    }
    assert sum(len(v) for v in videos.values()) == len(set().union(*videos.values())) == 120


def test_dataset_item_follows_contract_and_cache_is_transparent() -> None:
    cached = SyntheticVideoDataset("val", 4, "hard", num_frames=3, resolution=RES, seed=5, cache=True)
    plain = SyntheticVideoDataset("val", 4, "hard", num_frames=3, resolution=RES, seed=5)
    item = cached[3]
    assert item["video"].shape == (3, 3, RES, RES) and item["video"].dtype == torch.float32
    assert 0.0 <= item["video"].min() and item["video"].max() <= 1.0
    assert item["masks"].shape == (3, RES, RES) and item["masks"].dtype == torch.int64
    assert item["meta"]["video_id"] == "val_000003"
    assert item["meta"]["frame_indices"].tolist() == [0, 1, 2]
    for again in (cached[3], plain[3]):
        assert torch.equal(item["video"], again["video"]) and torch.equal(item["masks"], again["masks"])
    video, _ = generate_video(video_seed(5, "val", 3), "hard", 3, RES)
    assert torch.equal(item["video"], torch.from_numpy(video.transpose(0, 3, 1, 2).astype(np.float32) / 255.0))


# --------------------------------------------------------------------------- data module


@pytest.mark.parametrize(("train_frames", "val_frames"), [(4, 6), (1, 1)])
def test_datamodule_batches_follow_contract(train_frames: int, val_frames: int) -> None:
    module = SyntheticDataModule(
        resolution=RES, train_frames=train_frames, val_frames=val_frames, train_size=10, val_size=5, batch_size=4
    )
    for loader, frames, batch_size in (
        (module.train_dataloader(), train_frames, 4),
        (module.val_dataloader(), val_frames, 4),
    ):
        batch = next(iter(loader))
        validate_batch(batch)
        assert batch["video"].shape == (batch_size, frames, 3, RES, RES)
        assert batch["video"].dtype == torch.float32
        assert 0.0 <= batch["video"].min() and batch["video"].max() <= 1.0
        assert batch["masks"].shape == (batch_size, frames, RES, RES) and batch["masks"].dtype == torch.int64
        assert batch["masks"].min() >= 0 and batch["masks"].max() <= LEVELS["easy"].num_objects[1]
        assert len(batch["meta"]["video_id"]) == batch_size
        assert batch["meta"]["frame_indices"].shape == (batch_size, frames)


def _train_ids(seed: int) -> list[str]:
    module = SyntheticDataModule(
        resolution=RES, train_frames=1, val_frames=1, train_size=12, val_size=6, batch_size=4, seed=seed
    )
    return [video_id for batch in module.train_dataloader() for video_id in batch["meta"]["video_id"]]


def test_datamodule_shuffle_is_reproducible_per_seed() -> None:
    first = _train_ids(seed=0)
    assert first == _train_ids(seed=0)
    assert sorted(first) == [f"train_{i:06d}" for i in range(12)]
    assert first != sorted(first)
    assert first != _train_ids(seed=1)


def test_datamodule_test_split_is_its_own_videos() -> None:
    module = SyntheticDataModule(resolution=RES, val_size=3, test_size=3, batch_size=3, train_size=4, val_frames=2)
    test_batch, val_batch = next(iter(module.test_dataloader())), next(iter(module.val_dataloader()))
    validate_batch(test_batch)
    assert test_batch["meta"]["video_id"] == [f"test_{i:06d}" for i in range(3)]
    assert not torch.equal(test_batch["video"], val_batch["video"])


def test_datamodule_val_is_ordered() -> None:
    module = SyntheticDataModule(resolution=RES, val_size=5, batch_size=4, val_batch_size=2, train_size=4)
    ids = [video_id for batch in module.val_dataloader() for video_id in batch["meta"]["video_id"]]
    assert ids == [f"val_{i:06d}" for i in range(5)]
    assert len(next(iter(module.val_dataloader()))["meta"]["video_id"]) == 2


def test_single_threaded_collate_matches_default_and_workers_give_same_batches() -> None:
    module = SyntheticDataModule(resolution=RES, train_size=8, val_size=4, batch_size=4, val_frames=3)
    items = [module.val_set[i] for i in range(4)]
    ours, reference = collate_single_threaded(items), default_collate(items)
    assert torch.equal(ours["video"], reference["video"]) and torch.equal(ours["masks"], reference["masks"])
    assert ours["meta"]["video_id"] == reference["meta"]["video_id"]
    assert torch.equal(ours["meta"]["frame_indices"], reference["meta"]["frame_indices"])
    with_workers = SyntheticDataModule(
        resolution=RES, train_size=8, val_size=4, batch_size=4, val_frames=3, num_workers=1
    )
    loader = with_workers.val_dataloader()
    assert loader.persistent_workers
    assert torch.equal(next(iter(loader))["video"], ours["video"])
