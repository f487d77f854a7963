"""DAVIS J&F against a literal, loop-based implementation of the official toolkit's definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ocl.contracts.batch import IGNORE_ID
from ocl.metrics.jandf import (
    JAndF,
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    j_and_f,
    region_similarity,
)
from ocl.metrics.protocol import hard_segmentation

# ----------------------------------------------------------------------------- references


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """A pixel is boundary if it differs from its right, bottom or bottom-right neighbour inside the image."""
    height, width = mask.shape
    out = np.zeros(mask.shape, dtype=bool)
    for y in range(height):
        for x in range(width):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                ny, nx = y + dy, x + dx
                if ny < height and nx < width and mask[y, x] != mask[ny, nx]:
                    out[y, x] = True
    return out


def ref_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with the disk ``dy^2 + dx^2 <= radius^2``, pixel by pixel."""
    disk = [
        (dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy**2 + dx**2 <= radius**2
    ]
    height, width = mask.shape
    out = np.zeros(mask.shape, dtype=bool)
    for y, x in zip(*np.nonzero(mask)):
        for dy, dx in disk:
            if 0 <= y + dy < height and 0 <= x + dx < width:
                out[y + dy, x + dx] = True
    return out


def ref_radius(height: int, width: int, bound_th: float) -> int:
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.sqrt(height**2 + width**2))


def ref_j(pred: np.ndarray, true: np.ndarray, void: np.ndarray | None) -> float:
    valid = np.ones(true.shape, dtype=bool) if void is None else ~void
    union = ((pred | true) & valid).sum()
    return 1.0 if union == 0 else ((pred & true) & valid).sum() / union


def ref_f(pred: np.ndarray, true: np.ndarray, void: np.ndarray | None, bound_th: float = 0.008) -> float:
    if void is not None:
        pred, true = pred & ~void, true & ~void
    radius = ref_radius(*true.shape, bound_th)
    pred_b, true_b = ref_boundary(pred), ref_boundary(true)
    n_pred, n_true = pred_b.sum(), true_b.sum()
    if n_pred == 0 and n_true == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_true == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = (pred_b & ref_dilate(true_b, radius)).sum() / n_pred
        recall = (true_b & ref_dilate(pred_b, radius)).sum() / n_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_pair_means(pred: np.ndarray, true: np.ndarray, void: np.ndarray | None, bound_th: float) -> tuple[float, float]:
    """Mean over frames of J and F of one binary pair ``[T, H, W]``."""
    frames = range(len(true))
    none = [None] * len(true) if void is None else void
    j = np.mean([ref_j(pred[t], true[t], none[t]) for t in frames])
    f = np.mean([ref_f(pred[t], true[t], none[t], bound_th) for t in frames])
    return float(j), float(f)


def blobs(rng: np.random.Generator, shape: tuple[int, ...], density: float = 0.5) -> np.ndarray:
    """Random masks with blobs (upsampled coarse noise) and speckle, bool ``shape``."""
    *lead, height, width = shape
    coarse = rng.random((*lead, -(-height // 4), -(-width // 4))) < density
    masks = np.kron(coarse, np.ones((4, 4), dtype=bool))[..., :height, :width]
    return masks ^ (rng.random(shape) < 0.03)


# ----------------------------------------------------------------------------- boundaries and tolerance


def test_boundary_map_matches_definition() -> None:
    rng = np.random.default_rng(0)
    for mask in blobs(rng, (6, 13, 17)):
        np.testing.assert_array_equal(boundary_map(mask), ref_boundary(mask))


def test_image_border_is_not_a_boundary() -> None:
    full = np.ones((5, 7), dtype=bool)
    assert not boundary_map(full).any()
    left_half = np.zeros((5, 7), dtype=bool)
    left_half[:, :3] = True
    expected = np.zeros((5, 7), dtype=bool)
    expected[:, 2] = True  # the last object column differs from its right neighbour
    np.testing.assert_array_equal(boundary_map(left_half), expected)


def test_radius_from_diagonal() -> None:
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.65)
    assert boundary_radius(24, 32) == 1  # ceil(0.008 * 40)
    assert boundary_radius(24, 32, 0.1) == 4
    assert boundary_radius(24, 32, 3) == 3
    with pytest.raises(ValueError, match="integer"):
        boundary_radius(24, 32, 2.5)


def test_tolerance_at_davis_resolution() -> None:
    """At 480 x 854 boundaries 8 px apart match, 9 px apart do not."""
    true = np.zeros((1, 480, 854), dtype=bool)
    true[0, 100:300, 200:500] = True
    assert boundary_f_measure(np.roll(true, 8, axis=2), true)[0] == 1.0
    f = boundary_f_measure(np.roll(true, 9, axis=2), true)[0]
    crop = true[0, 80:320, 180:530]  # the same geometry, small enough for the reference loops
    assert f < 1.0
    assert f == pytest.approx(ref_f(np.roll(crop, 9, axis=1), crop, None, bound_th=8), rel=1e-12)


# ----------------------------------------------------------------------------- J and F against the reference


@pytest.mark.parametrize("bound_th", [0.008, 0.1, 3])
def test_random_masks_match_reference(bound_th: float) -> None:
    rng = np.random.default_rng(1)
    shape = (5, 24, 31)
    pred, true, void = blobs(rng, shape), blobs(rng, shape), rng.random(shape) < 0.1
    for v in (None, void):
        j = region_similarity(pred, true, v)
        f = boundary_f_measure(pred, true, v, bound_th)
        frames = [None] * 5 if v is None else v
        np.testing.assert_allclose(j, [ref_j(p, t, w) for p, t, w in zip(pred, true, frames)], rtol=1e-12)
        np.testing.assert_allclose(f, [ref_f(p, t, w, bound_th) for p, t, w in zip(pred, true, frames)], rtol=1e-12)
        assert j.dtype == f.dtype == np.float64


def _edge_cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    rng = np.random.default_rng(2)
    shape = (12, 15)
    some = blobs(rng, shape)
    empty = np.zeros(shape, dtype=bool)
    full = np.ones(shape, dtype=bool)
    pixel = empty.copy()
    pixel[5, 7] = True
    corner = empty.copy()
    corner[-1, -1] = True
    border = empty.copy()
    border[:, -4:] = True
    border[-3:, :] = True
    return {
        "empty prediction": (empty, some, None),
        "empty ground truth": (some, empty, None),
        "both empty": (empty, empty, None),
        "all void": (some, some ^ full, full),
        "single pixel": (pixel, some, None),
        "single pixel both": (pixel, pixel, None),
        "pixel next to pixel": (np.roll(pixel, 1, axis=1), pixel, None),
        "bottom-right corner pixel": (corner, pixel, None),
        "touching the border": (border, some, None),
        "full frames": (full, full, None),
        "full prediction": (full, some, None),
        "void on the object": (some, some, some & (rng.random(shape) < 0.5)),
    }


@pytest.mark.parametrize("name", list(_edge_cases()))
def test_edge_cases_match_reference(name: str) -> None:
    pred, true, void = _edge_cases()[name]
    batch_void = None if void is None else void[None]
    assert region_similarity(pred[None], true[None], batch_void)[0] == pytest.approx(ref_j(pred, true, void), abs=1e-15)
    assert boundary_f_measure(pred[None], true[None], batch_void)[0] == pytest.approx(
        ref_f(pred, true, void), abs=1e-15
    )


def test_empty_conventions() -> None:
    empty = np.zeros((1, 8, 8), dtype=bool)
    square = empty.copy()
    square[0, 2:5, 2:5] = True
    assert region_similarity(empty, empty)[0] == 1.0
    assert boundary_f_measure(empty, empty)[0] == 1.0
    assert region_similarity(empty, square)[0] == 0.0
    assert boundary_f_measure(empty, square)[0] == 0.0  # P = 1, R = 0
    assert boundary_f_measure(square, empty)[0] == 0.0  # P = 0, R = 1
    assert region_similarity(square, square, void=np.ones_like(square))[0] == 1.0


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        region_similarity(np.zeros((2, 3, 4), bool), np.zeros((2, 3, 5), bool))
    with pytest.raises(ValueError, match="void"):
        boundary_f_measure(np.zeros((2, 3, 4), bool), np.zeros((2, 3, 4), bool), np.zeros((3, 4), bool))


# ----------------------------------------------------------------------------- multi-object protocols


def _video(rng: np.random.Generator, frames: int, num_objects: int, shape: tuple[int, int] = (20, 26)) -> np.ndarray:
    """int64 labels ``[T, H, W]``: objects ``1..num_objects`` painted over background, some void."""
    labels = np.zeros((frames, *shape), dtype=np.int64)
    for obj in range(1, num_objects + 1):
        labels[blobs(rng, labels.shape, density=0.3)] = obj
    labels[rng.random(labels.shape) < 0.05] = IGNORE_ID
    return labels


def test_semi_supervised_matches_reference_and_drops_first_last() -> None:
    rng = np.random.default_rng(3)
    true = _video(rng, 5, 3)
    pred = np.where(rng.random(true.shape) < 0.85, np.maximum(true, 0), rng.integers(0, 4, true.shape))
    pred[0] = 0  # first and last frames are wrong; the protocol does not score them
    pred[-1] = 0
    for exclude in (False, True):
        scores = j_and_f(pred, true, match=False, exclude_first_last=exclude)
        frames = slice(1, -1) if exclude else slice(None)
        np.testing.assert_array_equal(scores.object_ids, [1, 2, 3])
        for i, obj in enumerate(scores.object_ids):
            void = true[frames] == IGNORE_ID
            j, f = ref_pair_means(pred[frames] == obj, true[frames] == obj, void, 0.008)
            assert scores.j[i] == pytest.approx(j, rel=1e-12)
            assert scores.f[i] == pytest.approx(f, rel=1e-12)
    perfect = np.maximum(true, 0)
    perfect[[0, -1]] = 0
    scores = j_and_f(perfect, true, match=False, exclude_first_last=True)
    np.testing.assert_array_equal(scores.j, 1.0)
    np.testing.assert_array_equal(scores.f, 1.0)
    assert j_and_f(perfect, true, match=False).j.max() < 1.0
    with pytest.raises(ValueError, match="3 frames"):
        j_and_f(perfect[:2], true[:2], match=False, exclude_first_last=True)


def test_void_as_background_reproduces_the_official_script() -> None:
    rng = np.random.default_rng(4)
    true = _video(rng, 3, 2)
    pred = rng.integers(0, 3, true.shape)
    scores = j_and_f(pred, true, match=False, void_as_background=True)
    as_background = np.maximum(true, 0)  # the official loader turns 255 into 0
    expected = j_and_f(pred, as_background, match=False)
    np.testing.assert_allclose(scores.j, expected.j, rtol=1e-12)
    np.testing.assert_allclose(scores.f, expected.f, rtol=1e-12)


def test_hungarian_on_hand_made_case() -> None:
    true = np.zeros((2, 10, 12), dtype=np.int64)
    true[:, 1:5, 1:6] = 1
    true[:, 6:9, 7:11] = 2
    pred = np.zeros_like(true)  # slot 0 background
    pred[true == 1] = 3  # slot 3 is object 1
    pred[true == 2] = 1  # slot 1 is object 2
    pred[:, 0, 0] = 2  # slot 2 is a stray pixel
    scores = j_and_f(pred, true, match=True, num_pred=4)
    np.testing.assert_array_equal(scores.object_ids, [1, 2])
    np.testing.assert_array_equal(scores.j, [1.0, 1.0])
    np.testing.assert_array_equal(scores.f, [1.0, 1.0])


def test_hungarian_matches_brute_force_on_j_and_f() -> None:
    rng = np.random.default_rng(5)
    true = _video(rng, 3, 3, shape=(14, 18))
    pred = rng.integers(0, 4, true.shape)
    pred[true == 1] = 2  # a few informative slots, so the matching matters
    pred[(true == 2) & (rng.random(true.shape) < 0.6)] = 0
    scores = j_and_f(pred, true, match=True, num_pred=4)
    void = true == IGNORE_ID
    pairs = {
        (k, m): ref_pair_means(pred == k, true == m, void, 0.008) for k in range(4) for m in (1, 2, 3)
    }  # (mean J, mean F) of every (slot, object) pair
    best = max(
        itertools.permutations(range(4), 3), key=lambda slots: sum(sum(pairs[k, m]) for k, m in zip(slots, (1, 2, 3)))
    )
    expected = [pairs[k, m] for k, m in zip(best, (1, 2, 3))]
    np.testing.assert_allclose(scores.j, [j for j, _ in expected], rtol=1e-12)
    np.testing.assert_allclose(scores.f, [f for _, f in expected], rtol=1e-12)


def test_matching_maximises_j_and_f_not_j_alone() -> None:
    """As the toolkit: a ring on the object's outline (low J, F = 1) beats its filled interior
    glued to a speckled region elsewhere (higher J, low F)."""
    true = np.zeros((1, 48, 40), dtype=np.int64)
    true[0, 10:30, 10:30] = 1
    pred = np.full_like(true, 2)  # slot 2: the rest
    pred[true == 1] = 1  # slot 1: a 2 px ring on the object's outline ...
    pred[0, 12:28, 12:28] = 0  # ... slot 0: the object's interior ...
    checkerboard = (np.add.outer(np.arange(48), np.arange(40)) % 2 == 0) & (np.arange(48) >= 38)[:, None]
    pred[0][checkerboard] = 0  # ... and a speckled region far from the object
    scores = j_and_f(pred, true, match=True, num_pred=3, bound_th=3)
    ring_j, ring_f = ref_pair_means(pred == 1, true == 1, None, 3)
    glued_j, glued_f = ref_pair_means(pred == 0, true == 1, None, 3)
    assert glued_j > ring_j and glued_j + glued_f < ring_j + ring_f
    assert (scores.j[0], scores.f[0]) == (pytest.approx(ring_j), pytest.approx(ring_f))


def test_fewer_proposals_than_objects_pad_with_empty_masks() -> None:
    true = np.zeros((2, 10, 10), dtype=np.int64)
    true[:, 0:6, :] = 1  # large object, both frames
    true[0, 8:10, 8:10] = 2  # small object, first frame only
    pred = np.zeros_like(true)  # one proposal covering everything: no boundary
    scores = j_and_f(pred, true, match=True, num_pred=1)
    # The proposal goes to object 1 (J = 60/100, F = 0); object 2 gets an empty mask:
    # 0 in frame 0 where it is visible, 1 in frame 1 where it is absent.
    np.testing.assert_allclose(scores.j, [0.6, 0.5])
    np.testing.assert_allclose(scores.f, [0.0, 0.5])


def test_video_without_objects_and_bad_ids() -> None:
    empty = j_and_f(np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), match=True)
    assert empty.object_ids.size == empty.j.size == empty.f.size == 0
    true = np.ones((2, 4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="0..1"):
        j_and_f(np.full((2, 4, 4), 2), true, match=True, num_pred=2)


# ----------------------------------------------------------------------------- metric class


def test_metric_equals_function_over_two_batches() -> None:
    rng = np.random.default_rng(6)
    generator = torch.Generator().manual_seed(0)
    metric = JAndF()
    j_total, f_total, objects = 0.0, 0.0, 0
    for batch in range(2):
        true = torch.from_numpy(np.stack([_video(rng, 3, 2 + batch), _video(rng, 3, 2)]))
        if batch == 1:
            true[1] = 0  # a video without objects: skipped and counted
        soft = torch.rand(2, 3, 4, 10, 13, generator=generator)
        metric.update(soft, true)
        pred = hard_segmentation(soft, tuple(true.shape[-2:]))
        for p, t in zip(pred.numpy(), true.numpy()):
            scores = j_and_f(p, t, match=True, num_pred=4)
            j_total += scores.j.sum()
            f_total += scores.f.sum()
            objects += len(scores.object_ids)
    values = metric.values("j_and_f")
    assert values["j"].item() == pytest.approx(j_total / objects, rel=1e-12)
    assert values["f"].item() == pytest.approx(f_total / objects, rel=1e-12)
    assert metric.compute().item() == pytest.approx((j_total + f_total) / (2 * objects), rel=1e-12)
    assert values["j_and_f"].item() == pytest.approx(metric.compute().item(), rel=1e-12)
    assert metric.skipped().item() == 1
    assert metric.j_sum.dtype == torch.float64


def test_metrics_callback_logs_j_and_f() -> None:
    """J&F (DAVIS's protocol) is logged by the callback with J and F apart."""
    import lightning.pytorch as pl

    from ocl.contracts.output import ModelOutput
    from ocl.metrics import MetricsCallback

    rng = np.random.default_rng(7)
    generator = torch.Generator().manual_seed(1)
    batches = [
        {
            "video": torch.rand(2, 3, 3, 20, 26, generator=generator),
            "masks": torch.from_numpy(np.stack([_video(rng, 3, 2), _video(rng, 3, 3)])),
            "soft": torch.rand(2, 3, 4, 5, 7, generator=generator).softmax(dim=2),
        }
        for _ in range(2)
    ]

    class Module(pl.LightningModule):
        def validation_step(self, batch: dict, batch_idx: int) -> dict:
            return {"output": ModelOutput(slots=torch.zeros(2, 3, 4, 1), masks=batch["soft"])}

    class DataModule(pl.LightningDataModule):
        def val_dataloader(self) -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(batches, batch_size=None)

    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[MetricsCallback({"j_and_f": JAndF()})],
    )
    logged = trainer.validate(Module(), datamodule=DataModule(), verbose=False)[0]
    expected = JAndF()
    for batch in batches:
        expected.update(batch["soft"], batch["masks"])
    assert logged == pytest.approx(
        {f"val/{key}": value.item() for key, value in expected.values("j_and_f").items()}
        | {"val/j_and_f_skipped": 0.0},
        abs=1e-6,
    )
