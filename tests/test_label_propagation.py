"""CRW label propagation: exact cases, a translating object, top-k / radius, void, bounded context,
agreement with a dense reference, and chunked feature extraction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

import ocl.eval.label_propagation as lp
from ocl.contracts.batch import IGNORE_ID
from ocl.eval.label_propagation import PropagationSettings, downsample_labels, propagate_labels, video_features
from ocl.metrics.jandf import j_and_f

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "eval" / "propagation"


def load_settings(name: str) -> PropagationSettings:
    return instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))


def block_labels(cells: torch.Tensor, stride: int) -> torch.Tensor:
    """Image labels ``[h * stride, w * stride]`` constant on every ``stride x stride`` cell."""
    return cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1)


def assert_perfect(pred: torch.Tensor, true: torch.Tensor) -> None:
    scores = j_and_f(pred.numpy(), true.numpy(), match=False)
    assert len(scores.object_ids) > 0
    np.testing.assert_array_equal(scores.j, 1.0)
    np.testing.assert_array_equal(scores.f, 1.0)


def basis(dim: int, *terms: tuple[int, float]) -> torch.Tensor:
    """The vector ``sum weight * e_index`` of ``R^dim``."""
    vector = torch.zeros(dim)
    for index, weight in terms:
        vector[index] = weight
    return vector


def frames_1d(*rows: list[torch.Tensor]) -> torch.Tensor:
    """Features ``[T, D, 1, w]`` from per-frame lists of ``w`` feature vectors."""
    return torch.stack([torch.stack(row, dim=1)[:, None, :] for row in rows])


# ----------------------------------------------------------------------------- settings and configs


def test_configs_hold_the_published_settings():
    assert load_settings("stride8") == PropagationSettings(
        topk=40, radius=40, temperature=0.05, n_context=20, feature_stride=8
    )
    assert load_settings("stride16") == PropagationSettings(
        topk=7, radius=7, temperature=0.2, n_context=20, feature_stride=16
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topk": 0},
        {"topk": 2.0},
        {"radius": 0},
        {"temperature": 0.0},
        {"n_context": -1},
        {"feature_stride": 0},
    ],
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PropagationSettings(**{"topk": 5, "radius": 3, "temperature": 0.1, "n_context": 2, **kwargs})


def test_bad_arguments_raise():
    settings = PropagationSettings(topk=5, radius=3, temperature=0.1, n_context=1)
    labels = torch.zeros(8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match="features"):
        propagate_labels(torch.zeros(2, 4, 2), labels, settings)
    with pytest.raises(ValueError, match="integer"):
        propagate_labels(torch.zeros(2, 4, 2, 2), labels.float(), settings)
    with pytest.raises(ValueError, match="IGNORE_ID"):
        propagate_labels(torch.zeros(2, 4, 2, 2), labels - 2, settings)
    with pytest.raises(ValueError, match="topk=9 exceeds the 8 context positions"):
        propagate_labels(torch.zeros(2, 4, 2, 2), labels, PropagationSettings(9, 3, 0.1, 1))


# ----------------------------------------------------------------------------- label downsampling


def test_downsample_labels_is_one_hot_on_aligned_cells_and_mixes_at_centres():
    cells = torch.tensor([[0, 1], [2, 0]])
    down = downsample_labels(block_labels(cells, 8), (2, 2))
    assert down.shape == (3, 2, 2) and down.dtype == torch.float32
    torch.testing.assert_close(down, F.one_hot(cells, 3).permute(2, 0, 1).float())
    # Bilinear without antialiasing: a stride-8 cell averages its two central pixels per axis.
    labels = torch.zeros(8, 8, dtype=torch.int64)
    labels[:, 4:] = 1
    torch.testing.assert_close(downsample_labels(labels, (1, 1)), torch.tensor([0.5, 0.5])[:, None, None])


# ----------------------------------------------------------------------------- (1) identical frames


def identical_frames_case(stride: int) -> torch.Tensor:
    """Labels ``[8 * stride, 8 * stride]`` whose propagation can be exact at ``stride``.

    Bilinear upsampling then argmax (the protocol's output step) rounds off the convex corners
    of objects larger than one pixel, so at ``stride > 1`` the objects are bands spanning the
    frame, whose only boundaries are straight lines.
    """
    cells = torch.zeros(8, 8, dtype=torch.int64)
    if stride == 1:
        cells[1:4, 1:3] = 1
        cells[5:7, 2:7] = 2
        cells[0:3, 5:8] = 3
    else:
        cells[:, 1:3] = 1
        cells[:, 4:5] = 2
        cells[:, 6:8] = 3
    return block_labels(cells, stride)


@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("config", ["stride8", "stride16"])
def test_identical_frames_reproduce_the_first_labels(config, stride):
    torch.manual_seed(0)
    num_frames = 5
    labels = identical_frames_case(stride)
    features = torch.randn(1, 16, 8, 8).expand(num_frames, -1, -1, -1)

    pred = propagate_labels(features, labels, load_settings(config))

    assert pred.shape == (num_frames, 8 * stride, 8 * stride) and pred.dtype == torch.int64
    torch.testing.assert_close(pred, labels.expand(num_frames, -1, -1))
    assert_perfect(pred, labels.expand(num_frames, -1, -1))


# ----------------------------------------------------------------------------- (2) a translating object


@pytest.mark.parametrize("stride", [1, 4])
def test_a_translating_object_is_tracked(stride):
    torch.manual_seed(1)
    num_frames, height, width = 6, 12, 16
    frame0 = torch.randn(32, height, width)
    # The whole scene (objects and background texture) moves one cell to the right per frame.
    features = torch.stack([frame0.roll(t, dims=2) for t in range(num_frames)])
    cells = torch.zeros(height, width, dtype=torch.int64)
    if stride == 1:
        cells[4:7, 2:5] = 1
        cells[8:11, 1:3] = 2
    else:  # bands: see identical_frames_case
        cells[:, 2:5] = 1
        cells[:, 7:9] = 2
    expected = torch.stack([block_labels(cells.roll(t, dims=1), stride) for t in range(num_frames)])

    # Labels given at stride 2: frame 0 is resized to the output with nearest-neighbour.
    pred = propagate_labels(
        features, block_labels(cells, 2), load_settings("stride16"), output_size=(height * stride, width * stride)
    )

    torch.testing.assert_close(pred, expected)
    assert_perfect(pred, expected)
    assert not torch.equal(pred[-1], pred[0])  # the objects did move


# ----------------------------------------------------------------------------- (3) top-k and radius


def test_radius_excludes_a_better_match_of_a_previous_frame():
    e = [basis(4, (i, 1.0)) for i in range(4)]  # e0: the target, e1/e2: objects 1/2, e3: background
    background = e[3]
    near_one = F.normalize(e[0] + 0.1 * e[1], dim=0)  # in frame 1 at cell 0: becomes object 1
    half = F.normalize(e[0] + math.sqrt(3) * e[2], dim=0)  # in frame 1 at cell 6: object 2, cos(e0) = 1/2
    features = frames_1d(
        [e[1], *[background] * 5, e[2], background],
        [near_one, *[background] * 5, half, background],
        [*[background] * 7, e[0]],  # cell 7: best match cell 0 of frame 1 (7 cells away), then cell 6
    )
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 2, 0]])

    restricted = propagate_labels(features, labels, PropagationSettings(1, 2, 1.0, n_context=1))
    unrestricted = propagate_labels(features, labels, PropagationSettings(1, 10, 1.0, n_context=1))

    torch.testing.assert_close(restricted[1], labels)
    assert restricted[2, 0, 7] == 2
    assert unrestricted[2, 0, 7] == 1


def previous_frame_match(cell_a: tuple[int, int], cell_b: tuple[int, int], radius: float) -> int:
    """Frame 2's label at ``cell_b`` when only frame 1's ``cell_a`` (object 1) matches it well.

    Frame 1 holds the target feature (plus a trace of object 1's, which labels it 1) at
    ``cell_a``; its other cells are background that matches the target moderately (cos 0.45),
    and nothing in frame 0 correlates with the target. So the label is 1 exactly when
    ``cell_a`` lies within the radius of ``cell_b``.
    """
    e = [basis(4, (i, 1.0)) for i in range(4)]  # e0: target, e1: object 1, e3: background
    frame0 = e[3][:, None, None].repeat(1, 5, 5)
    frame0[:, cell_a[0], cell_a[1]] = e[1]
    frame1 = F.normalize(e[0] + 2 * e[3], dim=0)[:, None, None].repeat(1, 5, 5)
    frame1[:, cell_a[0], cell_a[1]] = F.normalize(e[0] + 0.1 * e[1], dim=0)
    frame2 = e[3][:, None, None].repeat(1, 5, 5)
    frame2[:, cell_b[0], cell_b[1]] = e[0]
    labels = torch.zeros(5, 5, dtype=torch.int64)
    labels[cell_a] = 1
    pred = propagate_labels(torch.stack([frame0, frame1, frame2]), labels, PropagationSettings(1, radius, 1.0, 1))
    assert pred[1, cell_a[0], cell_a[1]] == 1
    return int(pred[2, cell_b[0], cell_b[1]])


@pytest.mark.parametrize(
    "cell_a, radius, label",
    [
        ((0, 0), 2.5, 0),  # distance sqrt(8) = 2.83: outside the disk (inside a square of half-side 2.5)
        ((0, 0), 2.9, 1),
        ((2, 0), 2.5, 1),  # distance 2
        ((2, 0), 2.0, 0),  # strictly closer than the radius
    ],
)
def test_radius_is_a_strict_disk_in_grid_cells(cell_a, radius, label):
    assert previous_frame_match(cell_a, (2, 2), radius) == label


@pytest.mark.parametrize("n_context", [0, 1])
def test_radius_does_not_restrict_the_first_frame(n_context):
    target, background = basis(2, (0, 1.0)), basis(2, (1, 1.0))
    frame0 = background[:, None, None].repeat(1, 5, 5)
    frame0[:, 0, 0] = target
    frame1 = background[:, None, None].repeat(1, 5, 5)
    frame1[:, 4, 4] = target
    labels = torch.zeros(5, 5, dtype=torch.int64)
    labels[0, 0] = 1
    pred = propagate_labels(torch.stack([frame0, frame1]), labels, PropagationSettings(1, 1, 1.0, n_context))
    assert pred[1, 4, 4] == 1


def test_topk_limits_the_neighbours():
    q = basis(3, (0, 1.0))
    strong = basis(3, (0, 0.9), (1, math.sqrt(1 - 0.81)))  # cos 0.9 with q, object 1
    weak = basis(3, (0, 0.8), (2, 0.6))  # cos 0.8 with q, background
    features = frames_1d([strong, weak, weak, weak], [q, q, q, q])
    labels = torch.tensor([[1, 0, 0, 0]])

    top1 = propagate_labels(features, labels, PropagationSettings(1, 10, 1.0, n_context=0))
    top4 = propagate_labels(features, labels, PropagationSettings(4, 10, 1.0, n_context=0))

    torch.testing.assert_close(top1[1], torch.ones(1, 4, dtype=torch.int64))
    torch.testing.assert_close(top4[1], torch.zeros(1, 4, dtype=torch.int64))


# ----------------------------------------------------------------------------- (4) void


def test_void_is_propagated_as_background():
    torch.manual_seed(2)
    cells = torch.zeros(4, 4, dtype=torch.int64)
    cells[0, 0] = 1
    cells[2:4, 1:3] = 2
    cells[1, 3] = IGNORE_ID  # a void cell next to background
    cells[0, 1] = IGNORE_ID  # and one next to object 1
    labels = block_labels(cells, 4)
    labels[8, 4] = IGNORE_ID  # a void pixel inside object 2, at a corner of its cell

    down = downsample_labels(labels, (4, 4))
    assert down.shape == (3, 4, 4)  # ids 0..2: void adds no channel
    torch.testing.assert_close(down, F.one_hot(cells.clamp(min=0), 3).permute(2, 0, 1).float())
    assert downsample_labels(torch.full((4, 4), IGNORE_ID), (2, 2)).shape == (1, 2, 2)

    # Propagation at stride 1 (see identical_frames_case): void cells become background.
    features = torch.randn(1, 8, 4, 4).expand(4, -1, -1, -1)
    pred = propagate_labels(features, cells, PropagationSettings(7, 7, 0.2, 20))

    expected = cells.clamp(min=0).expand(4, -1, -1)
    torch.testing.assert_close(pred, expected)  # frame 0 included: void set to background
    assert_perfect(pred, cells.expand(4, -1, -1))  # void pixels are not scored


# ----------------------------------------------------------------------------- (5) bounded context


def test_only_the_first_and_n_context_previous_frames_are_held(monkeypatch):
    torch.manual_seed(3)
    num_frames, n_context = 6, 2
    features = torch.randn(num_frames, 8, 3, 4)
    normalised = F.normalize(features, dim=1)
    labels = torch.zeros(3, 4, dtype=torch.int64)
    labels[1, 1:3] = 1
    seen: list[tuple[int, list[int]]] = []
    predict = lp._predict_frame

    def frame_index(frame: torch.Tensor) -> int:
        (index,) = [i for i in range(num_frames) if torch.equal(frame, normalised[i])]
        return index

    def spy(query, first, previous, settings):
        assert len(previous) == n_context
        assert frame_index(first[0]) == 0
        seen.append((frame_index(query), [frame_index(keys) for keys, _ in previous]))
        return predict(query, first, previous, settings)

    monkeypatch.setattr(lp, "_predict_frame", spy)
    propagate_labels(features, labels, PropagationSettings(3, 2, 0.1, n_context))

    # The start is padded with the first frame (CRW), afterwards a window of the last two frames.
    assert seen == [(1, [0, 0]), (2, [0, 1]), (3, [1, 2]), (4, [2, 3]), (5, [3, 4])]


# ----------------------------------------------------------------------------- dense reference


def reference_soft_labels(features: torch.Tensor, labels: torch.Tensor, settings: PropagationSettings) -> list:
    """Soft labels ``[h * w, C]`` of every frame: all context affinities at once, CRW's distance mask."""
    num_frames, _, height, width = features.shape
    flat = F.normalize(features, dim=1).flatten(2).transpose(1, 2)  # [T, hw, D]
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    grid = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
    near = torch.cdist(grid, grid) < settings.radius  # [hw, hw]
    soft = [downsample_labels(labels, (height, width)).flatten(1).T]
    for t in range(1, num_frames):
        context = [0] + [max(0, s) for s in range(t - settings.n_context, t)]
        affinity = torch.cat([flat[t] @ flat[c].T for c in context], dim=1)
        allowed = torch.cat([torch.ones_like(near)] + [near] * settings.n_context, dim=1)
        affinity = affinity.masked_fill(~allowed, -1e10)
        values, indices = affinity.topk(settings.topk, dim=1)
        weights = torch.softmax(values / settings.temperature, dim=1)
        soft.append((weights[..., None] * torch.cat([soft[c] for c in context])[indices]).sum(1))
    return soft


@pytest.mark.parametrize("settings", [PropagationSettings(5, 2.5, 0.1, 3), PropagationSettings(30, 1.5, 0.5, 2)])
def test_matches_a_dense_reference_with_blocks_of_targets(monkeypatch, settings):
    torch.manual_seed(4)
    num_frames, height, width = 7, 5, 6
    features = torch.randn(num_frames, 4, height, width)
    labels = torch.randint(0, 3, (height * 2, width * 2))
    monkeypatch.setattr(lp, "AFFINITY_ELEMENTS", 4 * height * width)  # blocks of 4 target cells

    pred = propagate_labels(features, labels, settings, output_size=(height, width))

    soft = reference_soft_labels(features, labels, settings)
    expected = torch.stack([s.argmax(dim=1).reshape(height, width) for s in soft[1:]])
    torch.testing.assert_close(pred[1:], expected)


# ----------------------------------------------------------------------------- (6) feature extraction


def test_video_features_in_chunks_equal_one_pass():
    torch.manual_seed(5)
    encoder = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
    video = torch.rand(7, 3, 16, 24)

    whole = video_features(encoder, video, chunk=7)
    for chunk in (1, 3, 10):
        torch.testing.assert_close(video_features(encoder, video, chunk=chunk, device="cpu"), whole)
    assert whole.shape == (7, 8, 4, 6) and not whole.requires_grad
    torch.testing.assert_close(whole, encoder(video).detach())


def test_video_features_bad_arguments_raise():
    encoder = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
    with pytest.raises(ValueError, match="chunk"):
        video_features(encoder, torch.rand(2, 3, 8, 8), chunk=0)
    with pytest.raises(ValueError, match="video"):
        video_features(encoder, torch.rand(2, 1, 8, 8), chunk=1)
    with pytest.raises(ValueError, match="encoder"):
        video_features(lambda frames: frames.flatten(1), torch.rand(2, 3, 8, 8), chunk=1)
