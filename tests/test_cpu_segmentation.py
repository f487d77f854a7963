"""The CPU segmentation kernel gives exactly the label maps and tables of resize + argmax + bincount."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocl.contracts.batch import IGNORE_ID
from ocl.metrics.cpu_segmentation import segment_and_count
from ocl.metrics.protocol import contingency, segmentation_contingency


def reference_ids(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int64 ``[N, H, W]``: ``F.interpolate`` (bilinear, align_corners=False) then the first argmax."""
    return F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False).argmax(dim=1)


def smooth_masks(frames: int, slots: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """``[N, K, h, w]`` softmaxed blurred random logits: large regions, some near-ties at borders."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, slots, size[0] // 4 + 1, size[1] // 4 + 1, generator=g) * 4
    logits = F.interpolate(logits, size=size, mode="bicubic", align_corners=False)
    return (logits + 0.1 * torch.randn(logits.shape, generator=g)).softmax(dim=1)


@pytest.mark.parametrize(
    ("low", "high"),
    [((8, 8), (32, 32)), ((7, 9), (30, 41)), ((12, 12), (12, 12)), ((20, 16), (9, 7)), ((5, 6), (64, 48))],
)
def test_label_maps_equal_interpolate_and_argmax(low: tuple[int, int], high: tuple[int, int]) -> None:
    smooth = smooth_masks(6, 7, low, seed=0)
    noisy = torch.rand(6, 7, *low, generator=torch.Generator().manual_seed(1)).softmax(dim=1)
    for frames in (smooth, noisy, smooth.to(torch.bfloat16)):
        ids, _ = segment_and_count(frames, high)
        assert ids.dtype == torch.int8
        assert torch.equal(ids.long(), reference_ids(frames, high))


def test_exact_ties_and_nan_follow_the_reference() -> None:
    uniform = torch.full((2, 5, 6, 6), 0.2)  # every slot ties everywhere: slot 0
    half = uniform.clone()
    half[:, 3, :, 3:] = 0.2 + 1e-7  # near-tie inside the margin: decided by F.interpolate itself
    for frames in (uniform, half):
        assert torch.equal(segment_and_count(frames, (17, 23))[0].long(), reference_ids(frames, (17, 23)))
    nan = uniform.clone()
    nan[0, 2, 2, 2] = float("nan")
    ids = segment_and_count(nan, (12, 12))[0]
    assert torch.equal(ids.long(), reference_ids(nan, (12, 12)))
    assert int(ids.min()) >= 0


def test_tables_equal_the_bincount_of_the_reference_ids() -> None:
    frames = smooth_masks(2 * 3, 5, (9, 9), seed=2).reshape(2, 3, 5, 9, 9)
    g = torch.Generator().manual_seed(3)
    true = torch.randint(0, 4, (2, 3, 36, 36), generator=g)
    true[..., :3, :] = IGNORE_ID
    true[1, 2] = 7  # a large id in one frame only
    expected = contingency(reference_ids(frames.flatten(0, 1), (36, 36)).reshape(2, 3, 36, 36), true, 5)
    table = segmentation_contingency(frames, true)
    assert table.dtype == torch.float64
    assert torch.equal(table, expected)


def test_more_slots_than_int8_holds_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at most 127 slots"):
        segment_and_count(torch.rand(1, 128, 2, 2), (4, 4))
