"""SMTC's object-discovery evaluation (ocl/eval/object_discovery.py): chunks, frames, proposals and the
frame-by-frame matching of the authors' DAVIS toolkit. The end-to-end run is in tests/test_smtc.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ocl.contracts.batch import IGNORE_ID
from ocl.eval.object_discovery import (
    DiscoverySettings,
    binary_proposals,
    chunks,
    matched_scores,
    model_frames,
    score_video,
    video_proposals,
)


def test_chunks_fill_the_last_one_with_the_videos_last_frames():
    assert [(list(i), own) for i, own in chunks(10, 4)] == [
        ([0, 1, 2, 3], 4),
        ([4, 5, 6, 7], 4),
        ([8, 9, 8, 9], 2),  # the authors' cat([rgbs[:, 8:12], rgbs[:, -2:]])
    ]
    assert [(list(i), own) for i, own in chunks(7, 4)] == [([0, 1, 2, 3], 4), ([4, 5, 6, 6], 3)]
    assert [(list(i), own) for i, own in chunks(2, 4)] == [([0, 1, 0, 1], 2)]


def test_model_frames_are_stretched_and_standardised_with_the_evaluation_statistics():
    settings = DiscoverySettings(frame_size=(6, 10), pixel_mean=(0.1, 0.2, 0.3), pixel_std=(0.5, 0.25, 0.2))
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    video = torch.rand(2, 3, 3, 5)
    frames = model_frames(video, settings, mean, std)
    resized = torch.nn.functional.interpolate(video, size=(6, 10), mode="bilinear", align_corners=False)
    expected = (resized - torch.tensor(settings.pixel_mean).view(1, 3, 1, 1)) / torch.tensor(settings.pixel_std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close((frames - mean) / std, expected)  # what the model's own standardisation gives


def test_binary_proposals_are_nearest_upsampled_min_max_normalised_and_thresholded():
    masks = torch.tensor([[[0.0, 1.0], [0.2, 0.4]], [[0.5, 0.5], [0.5, 0.5]]])  # the second is constant
    binary = binary_proposals(masks, (4, 4), threshold=0.3)
    assert binary.shape == (2, 4, 4) and not binary[1].any()
    expected = np.kron(np.array([[False, True], [False, True]]), np.ones((2, 2), bool))
    assert np.array_equal(binary[0], expected)
    assert binary_proposals(masks[:0], (4, 4), 0.3).shape == (0, 4, 4)


def box(top: int, left: int, size: int = 4, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_matching_is_frame_by_frame():
    """A proposal that follows object 1 in frame 0 and object 2 in frame 1 (and the other way round)
    scores 1 on both frames: the authors' toolkit matches every frame on its own."""
    first, second = box(0, 0), box(8, 8)
    labels = np.stack([first * 1 + second * 2, first * 1 + second * 2])
    proposals = [torch.tensor(np.stack([first, second]), dtype=torch.float32)]
    proposals.append(torch.tensor(np.stack([second, first]), dtype=torch.float32))
    scores = score_video(proposals, labels, DiscoverySettings())
    np.testing.assert_allclose(scores, np.ones((2, 2)))


def test_objects_are_the_first_frames_ids_void_is_excluded_and_rows_are_padded():
    first, second = box(0, 0), box(8, 8)
    labels = np.stack([first * 1, first * 1 + second * 2])  # object 2 appears later: not scored
    labels[:, 0, 0] = IGNORE_ID  # a void pixel inside object 1
    proposals = [torch.tensor(first[None], dtype=torch.float32), torch.zeros(0, 16, 16)]
    scores = score_video(proposals, labels, DiscoverySettings())
    assert scores.shape == (1, 2)
    np.testing.assert_allclose(scores[0], [0.5, 0.5])  # frame 0: J = F = 1; frame 1: no proposal, 0
    j, f = matched_scores(np.zeros((0, 16, 16), bool), first[None], np.zeros((16, 16), bool), rows=1)
    assert j.tolist() == [0.0] and f.tolist() == [0.0]


class FakeSMTC(nn.Module):
    """Records the chunks it is called with and returns one mask per (frame, instance)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.mean, self.encoder.std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
        self.calls: list[tuple[tuple[int, ...], int | None]] = []

    def patch_encoder(self) -> nn.Module:
        return self.encoder

    def instance_proposals(self, video: torch.Tensor, num_iterations: int | None = None):
        self.calls.append((tuple(video.shape), num_iterations))
        frames = video.shape[1]
        masks = torch.rand(1, frames, 3, 2, 2)
        scores = torch.tensor([0.9, 0.5, 0.1]).expand(1, frames, 3)  # the last instance is not kept
        return masks, scores


def test_video_proposals_run_chunks_with_the_evaluation_iterations_and_keep_scored_instances():
    model = FakeSMTC()
    settings = DiscoverySettings(frame_size=(8, 12), chunk_frames=4, slot_iterations=5)
    proposals = video_proposals(model, torch.rand(6, 3, 5, 7), settings)
    assert model.calls == [((1, 4, 3, 8, 12), 5), ((1, 4, 3, 8, 12), 5)]
    assert len(proposals) == 6 and all(p.shape == (2, 2, 2) for p in proposals)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="frame_size"):
        DiscoverySettings(frame_size=(480,))
    with pytest.raises(ValueError, match="chunk_frames"):
        DiscoverySettings(chunk_frames=0)
