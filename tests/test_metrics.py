"""Segmentation metrics against direct reference computations (sklearn, scipy, per-object loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from hydra.utils import instantiate
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from ocl.contracts.batch import IGNORE_ID
from ocl.contracts.output import ModelOutput
from ocl.metrics import (
    FrameFGARI,
    MeanBestOverlap,
    MeanIoU,
    MetricsCallback,
    VideoFGARI,
    contingency,
    frame_fg_ari,
    hard_segmentation,
    mean_best_overlap,
    mean_iou,
    protocol,
    segmentation_contingency,
    video_fg_ari,
)
from ocl.metrics.scoring import update_metrics
from ocl.predict.clips import clip_metrics

# ----------------------------------------------------------------------------- references


def _samples(ids: torch.Tensor, video: bool) -> list[np.ndarray]:
    """``[B, T, H, W]`` -> list of flat numpy samples (per video or per frame)."""
    b, t = ids.shape[:2]
    flat = ids.reshape(b, -1) if video else ids.reshape(b * t, -1)
    return list(flat.numpy())


def ref_fg_ari(pred: torch.Tensor, true: torch.Tensor, video: bool) -> tuple[np.ndarray, np.ndarray]:
    scores, scored = [], []
    for p, t in zip(_samples(pred, video), _samples(true, video), strict=True):
        fg = t > 0
        scored.append(bool(fg.any()))
        scores.append(adjusted_rand_score(t[fg], p[fg]) if fg.any() else 0.0)
    return np.array(scores), np.array(scored)


def ref_iou_matrix(p: np.ndarray, t: np.ndarray, num_pred: int) -> tuple[np.ndarray, list[int]]:
    valid = t != IGNORE_ID
    objects = [int(m) for m in np.unique(t) if m > 0]
    iou = np.zeros((num_pred, len(objects)))
    for j, m in enumerate(objects):
        true_mask = t == m
        for k in range(num_pred):
            pred_mask = (p == k) & valid
            iou[k, j] = (pred_mask & true_mask).sum() / (pred_mask | true_mask).sum()
    return iou, objects


def ref_mbo(pred: torch.Tensor, true: torch.Tensor, num_pred: int, video: bool) -> tuple[np.ndarray, np.ndarray]:
    scores, scored = [], []
    for p, t in zip(_samples(pred, video), _samples(true, video), strict=True):
        iou, objects = ref_iou_matrix(p, t, num_pred)
        scored.append(bool(objects))
        scores.append(iou.max(axis=0).mean() if objects else 0.0)
    return np.array(scores), np.array(scored)


def ref_miou(pred: torch.Tensor, true: torch.Tensor, num_pred: int, video: bool) -> tuple[np.ndarray, np.ndarray]:
    scores, scored = [], []
    for p, t in zip(_samples(pred, video), _samples(true, video), strict=True):
        iou, objects = ref_iou_matrix(p, t, num_pred)
        scored.append(bool(objects))
        if objects:
            rows, cols = linear_sum_assignment(iou, maximize=True)
            scores.append(iou[rows, cols].sum() / len(objects))
        else:
            scores.append(0.0)
    return np.array(scores), np.array(scored)


def ref_slots_per_object(
    pred: torch.Tensor, true: torch.Tensor, num_pred: int, video: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: mean over objects of the slots holding >= 5% of the object's (non-ignored) pixels."""
    scores, scored = [], []
    for p, t in zip(_samples(pred, video), _samples(true, video), strict=True):
        p, t = np.asarray(p).ravel(), np.asarray(t).ravel()
        objects = [m for m in np.unique(t) if m > 0]
        counts = [
            sum((p[t == m] == k).sum() >= 0.05 * (t == m).sum() and (p[t == m] == k).any() for k in range(num_pred))
            for m in objects
        ]
        scored.append(bool(objects))
        scores.append(float(np.mean(counts)) if objects else 0.0)
    return np.array(scores), np.array(scored)


def random_labels(b: int, t: int, h: int, w: int, num_objects: int, seed: int, ignore: float = 0.1) -> torch.Tensor:
    """Random labels with background, ``num_objects`` ids and a fraction of ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_objects + 1, (b, t, h, w), generator=g)
    labels[torch.rand(b, t, h, w, generator=g) < ignore] = IGNORE_ID
    return labels


def random_pred(b: int, t: int, h: int, w: int, num_pred: int, seed: int) -> torch.Tensor:
    return torch.randint(0, num_pred, (b, t, h, w), generator=torch.Generator().manual_seed(seed))


def check_all(pred: torch.Tensor, true: torch.Tensor, num_pred: int) -> None:
    """Every function against its reference, in video and frame mode."""
    b, t = true.shape[:2]
    cases = [
        (video_fg_ari(pred, true, num_pred), ref_fg_ari(pred, true, True), (b,)),
        (frame_fg_ari(pred, true, num_pred), ref_fg_ari(pred, true, False), (b, t)),
    ]
    for video, shape in ((True, (b,)), (False, (b, t))):
        cases.append((mean_best_overlap(pred, true, num_pred, video), ref_mbo(pred, true, num_pred, video), shape))
        cases.append((mean_iou(pred, true, num_pred, video), ref_miou(pred, true, num_pred, video), shape))
    for (scores, scored), (ref_scores, ref_scored), shape in cases:
        assert scores.dtype == torch.float64 and scores.shape == shape and scored.shape == shape
        np.testing.assert_array_equal(scored.reshape(-1).numpy(), ref_scored)
        np.testing.assert_allclose(scores.reshape(-1).numpy(), ref_scores, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- functions


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("num_pred", "num_objects"), [(5, 3), (3, 6), (11, 1), (1, 4)])
def test_random_matches_reference(seed: int, num_pred: int, num_objects: int) -> None:
    true = random_labels(3, 4, 9, 7, num_objects, seed)
    pred = random_pred(3, 4, 9, 7, num_pred, seed + 100)
    check_all(pred, true, num_pred)


def test_structured_predictions_match_reference() -> None:
    """Predictions correlated with the labels (ARI far from 0), with noise."""
    true = random_labels(4, 3, 12, 12, 4, seed=7)
    pred = true.clamp_min(0) % 5
    noise = torch.rand(true.shape, generator=torch.Generator().manual_seed(0)) < 0.2
    pred = torch.where(noise, random_pred(4, 3, 12, 12, 5, 1), pred)
    check_all(pred, true, 5)
    assert video_fg_ari(pred, true, 5)[0].min() > 0.3


def test_empty_foreground_is_not_scored() -> None:
    true = random_labels(3, 2, 6, 6, 3, seed=0)
    true[1] = 0
    true[1, 0, :2] = IGNORE_ID
    pred = random_pred(3, 2, 6, 6, 4, 1)
    check_all(pred, true, 4)
    for fn in (video_fg_ari, mean_best_overlap, mean_iou):
        scores, scored = fn(pred, true, 4)
        assert scored.tolist() == [True, False, True] and scores[1] == 0


def test_single_object_policy() -> None:
    true = torch.zeros(1, 2, 4, 4, dtype=torch.int64)
    true[..., :2, :2] = 1
    pred = torch.zeros_like(true)
    pred[..., :2, :2] = 3  # one slot covers the object exactly
    assert video_fg_ari(pred, true, 4)[0].item() == 1.0
    assert mean_best_overlap(pred, true, 4)[0].item() == 1.0
    assert mean_iou(pred, true, 4)[0].item() == 1.0
    pred[:, 1, :2, :2] = 2  # split across two slots (one per frame)
    assert video_fg_ari(pred, true, 4)[0].item() == 0.0
    assert frame_fg_ari(pred, true, 4)[0].tolist() == [[1.0, 1.0]]
    assert mean_best_overlap(pred, true, 4)[0].item() == 0.5
    check_all(pred, true, 4)


def test_one_slot_owns_everything() -> None:
    true = random_labels(2, 3, 8, 8, 3, seed=3)
    pred = torch.zeros_like(true)
    check_all(pred, true, 6)
    assert video_fg_ari(pred, true, 6)[0].tolist() == [0.0, 0.0]


def test_more_objects_than_slots_leaves_objects_unmatched() -> None:
    true = torch.arange(1, 5).repeat_interleave(4).reshape(1, 1, 4, 4)  # four objects, rows
    pred = (true - 1).clamp_max(1)  # slot 0 = object 1 exactly, slot 1 = objects 2..4
    scores, scored = mean_iou(pred, true, 2)
    assert scored.item() and scores.item() == pytest.approx((1.0 + 1 / 3) / 4)
    check_all(pred, true, 2)


def test_ignore_pixels_are_never_scored() -> None:
    true = random_labels(2, 3, 8, 8, 3, seed=5, ignore=0.3)
    pred = random_pred(2, 3, 8, 8, 4, 6)
    other = torch.where(true == IGNORE_ID, random_pred(2, 3, 8, 8, 4, 9), pred)
    for fn in (video_fg_ari, frame_fg_ari, mean_best_overlap, mean_iou):
        torch.testing.assert_close(fn(pred, true, 4), fn(other, true, 4))


def test_video_mode_needs_temporal_consistency() -> None:
    true = torch.zeros(1, 2, 4, 4, dtype=torch.int64)
    true[..., :, :2] = 1
    true[..., :, 2:] = 2
    pred = true - 1
    pred[:, 1] = 1 - pred[:, 1]  # the slots swap objects in the second frame
    assert frame_fg_ari(pred, true, 2)[0].tolist() == [[1.0, 1.0]]
    assert video_fg_ari(pred, true, 2)[0].item() < 0.1
    assert mean_best_overlap(pred, true, 2, video=False)[0].tolist() == [[1.0, 1.0]]
    assert mean_best_overlap(pred, true, 2, video=True)[0].item() == pytest.approx(1 / 3)
    check_all(pred, true, 2)


# ----------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("chunk_elements", [protocol.MAX_RESIZE_ELEMENTS, 1])
def test_hard_segmentation_matches_interpolate_argmax(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    monkeypatch.setattr(protocol, "MAX_RESIZE_ELEMENTS", chunk_elements)
    soft = torch.rand(2, 3, 5, 4, 6).softmax(dim=2)
    ids = hard_segmentation(soft, (13, 10))
    expected = F.interpolate(soft.flatten(0, 1), size=(13, 10), mode="bilinear", align_corners=False).argmax(1)
    assert ids.dtype == torch.int64
    torch.testing.assert_close(ids, expected.reshape(2, 3, 13, 10))
    torch.testing.assert_close(hard_segmentation(soft, (4, 6)), soft.argmax(2))


def test_more_slots_than_the_cpu_kernel_takes_are_scored_by_torchs_resize() -> None:
    """SMTC-sized slot counts over the int8 kernel's 127 give the same ids and tables, not an error."""
    soft = torch.rand(1, 2, 130, 3, 4, generator=torch.Generator().manual_seed(0)).softmax(dim=2)
    true = random_labels(1, 2, 6, 8, 3, 0)
    ids = hard_segmentation(soft, (6, 8))
    expected = F.interpolate(soft.flatten(0, 1), size=(6, 8), mode="bilinear", align_corners=False).argmax(1)
    torch.testing.assert_close(ids, expected.reshape(1, 2, 6, 8))
    torch.testing.assert_close(segmentation_contingency(soft, true), contingency(ids, true, 130))


def test_hard_segmentation_ties_go_to_first_slot() -> None:
    soft = torch.full((1, 2, 4, 3, 3), 0.25)
    soft[:, 1, 2:] = 0.5
    assert (
        hard_segmentation(soft, (6, 6)).tolist() == torch.tensor([0, 2]).reshape(1, 2, 1, 1).expand(1, 2, 6, 6).tolist()
    )


def test_contingency_counts_and_keeps_labels() -> None:
    true = random_labels(2, 3, 5, 4, 3, seed=2)
    pred = random_pred(2, 3, 5, 4, 4, 3)
    before = true.clone()
    table = contingency(pred, true, 4)
    assert torch.equal(true, before)
    expected = torch.zeros(2, 3, 4, int(true.max()) + 1, dtype=torch.float64)
    for index in np.ndindex(*true.shape):
        if true[index] >= 0:
            expected[index[0], index[1], pred[index], true[index]] += 1
    torch.testing.assert_close(table, expected)
    with pytest.raises(ValueError, match="IGNORE_ID"):
        contingency(pred, true - 2, 4)


# ----------------------------------------------------------------------------- metric classes


def soft_from_ids(ids: torch.Tensor, num_pred: int) -> torch.Tensor:
    """Soft masks ``[B, T, K, H, W]`` whose argmax is ``ids``."""
    return F.one_hot(ids, num_pred).permute(0, 1, 4, 2, 3).float() * 0.5 + 0.5 / num_pred


@pytest.mark.parametrize(
    ("metric", "reference"),
    [
        (VideoFGARI(), lambda p, t, k: ref_fg_ari(p, t, True)),
        (FrameFGARI(), lambda p, t, k: ref_fg_ari(p, t, False)),
        (MeanBestOverlap(), lambda p, t, k: ref_mbo(p, t, k, True)),
        (MeanBestOverlap(video=False), lambda p, t, k: ref_mbo(p, t, k, False)),
        (MeanIoU(), lambda p, t, k: ref_miou(p, t, k, True)),
        (MeanIoU(video=False), lambda p, t, k: ref_miou(p, t, k, False)),
    ],
)
def test_metric_accumulates_over_updates(metric, reference) -> None:
    scores, scored = [], []
    for seed, (batch, num_objects) in enumerate([(3, 3), (2, 4)]):
        true = random_labels(batch, 2, 6, 6, num_objects, seed)
        true[0] = 0  # one empty video per batch
        pred = random_pred(batch, 2, 6, 6, 5, seed + 10)
        metric.update(soft_from_ids(pred, 5), true)
        ref_scores, ref_scored = reference(pred, true, 5)
        scores.append(ref_scores)
        scored.append(ref_scored)
    scores, scored = np.concatenate(scores), np.concatenate(scored)
    assert metric.compute().item() == pytest.approx(scores[scored].mean(), abs=1e-12)
    assert metric.skipped().item() == (~scored).sum() > 0
    assert metric.score_sum.dtype == torch.float64
    shared = metric.clone()  # a shared, precomputed table gives the same result
    shared.reset()
    soft = soft_from_ids(pred, 5)
    shared.update(soft, true, table=segmentation_contingency(soft, true))
    metric.reset()
    metric.update(soft, true)
    torch.testing.assert_close(metric.compute(), shared.compute())
    metric.reset()
    metric.update(
        soft_from_ids(torch.zeros(1, 1, 2, 2, dtype=torch.int64), 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64)
    )
    assert math.isnan(metric.compute().item()) and metric.skipped().item() == 1


# ----------------------------------------------------------------------------- callback


def test_callback_logs_val_and_test_metrics() -> None:
    import lightning.pytorch as pl

    batches = []
    for seed in range(3):
        true = random_labels(2, 3, 8, 8, 3, seed)
        true[1, :, :, :] = 0 if seed == 0 else true[1]
        soft = torch.rand(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(seed)).softmax(dim=2)
        batches.append({"video": torch.rand(2, 3, 3, 8, 8), "masks": true, "soft": soft})

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def _step(self, batch: dict) -> dict:
            return {"output": ModelOutput(slots=torch.zeros(2, 3, 4, 1), masks=batch["soft"])}

        def validation_step(self, batch: dict, batch_idx: int) -> dict:
            return self._step(batch)

        def test_step(self, batch: dict, batch_idx: int) -> dict:
            return self._step(batch)

    callback = MetricsCallback(instantiate(compose_config(["paths.output_dir=/unused"]).metrics))
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[callback]
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    model = Module()
    val = trainer.validate(model, loader, verbose=False)[0]
    test = trainer.test(model, loader, verbose=False)[0]

    pred = torch.cat([hard_segmentation(b["soft"], (8, 8)) for b in batches])
    true = torch.cat([b["masks"] for b in batches])
    expected = {
        "video_fg_ari": ref_fg_ari(pred, true, True),
        "frame_fg_ari": ref_fg_ari(pred, true, False),
        "mbo": ref_mbo(pred, true, 4, True),
        "miou": ref_miou(pred, true, 4, True),
        "slots_per_object": ref_slots_per_object(pred, true, 4, True),
    }
    for stage, logged in (("val", val), ("test", test)):
        assert len(logged) == 2 * len(expected)
        for name, (scores, scored) in expected.items():
            assert logged[f"{stage}/{name}"] == pytest.approx(scores[scored].mean(), abs=1e-6)
            assert logged[f"{stage}/{name}_skipped"] == (~scored).sum()
    assert logged["test/video_fg_ari_skipped"] == 1
    assert callback.stage_metrics["val"]["mbo"] is not callback.stage_metrics["test"]["mbo"]

    callback.on_validation_batch_end(trainer, model, None, {"video": batches[0]["video"]}, 0)  # no labels: skipped
    assert not callback.stage_metrics["val"]["mbo"].update_called


def test_each_metric_scores_the_masks_its_mask_source_names() -> None:
    """SMTC's semantic metrics score ``extras["semantic_masks"]``, in the callback and the notebook alike."""
    true = random_labels(1, 3, 8, 8, 3, 0)
    instance, semantic = (
        torch.rand(1, 3, k, 4, 4, generator=torch.Generator().manual_seed(k)).softmax(dim=2) for k in (6, 2)
    )
    output = ModelOutput(slots=torch.zeros(1, 3, 6, 1), masks=instance, extras={"semantic_masks": semantic})
    metrics = {"video_fg_ari": VideoFGARI(), "semantic_video_fg_ari": VideoFGARI(mask_source="semantic_masks")}
    scores = clip_metrics(output, true[0], metrics)
    for name, masks in (("video_fg_ari", instance), ("semantic_video_fg_ari", semantic)):
        direct = VideoFGARI()
        direct.update(masks, true)
        assert scores[name] == pytest.approx(direct.compute().item(), abs=1e-9)
    assert scores["video_fg_ari"] != pytest.approx(scores["semantic_video_fg_ari"])
    with pytest.raises(KeyError, match="semantic_masks.*does not return"):
        update_metrics(
            {"semantic": VideoFGARI(mask_source="semantic_masks")}, ModelOutput(output.slots, instance), true
        )


def test_slots_per_object_counts_slots_owning_five_percent_of_an_object():
    from ocl.metrics.classes import ObjectFragmentation
    from ocl.metrics.overlap import fragmentation_from_contingency

    # one sample, 3 slots, background + 2 objects: object 1 split 60/38/2 (2 owners), object 2 whole (1 owner)
    table = torch.tensor([[[10.0, 60.0, 0.0], [5.0, 38.0, 0.0], [0.0, 2.0, 50.0]]], dtype=torch.float64)
    scores, scored = fragmentation_from_contingency(table)
    assert scores.tolist() == [1.5] and scored.tolist() == [True]
    assert fragmentation_from_contingency(table, min_share=0.01)[0].tolist() == [2.0]
    empty = torch.tensor([[[10.0, 0.0], [5.0, 0.0]]], dtype=torch.float64)
    assert fragmentation_from_contingency(empty)[1].tolist() == [False]
    labels = torch.tensor([[[[1, 1], [2, 2]]]])  # [B, T, H, W]
    one_slot_per_object = torch.nn.functional.one_hot(labels, 3).permute(0, 1, 4, 2, 3).float()
    metric = ObjectFragmentation()
    metric.update(one_slot_per_object, labels)
    assert metric.compute().item() == 1.0 and not metric.higher_is_better
