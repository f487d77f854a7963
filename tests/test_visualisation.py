"""Mask overlays: panel layout and colours."""

import torch
from PIL import Image

from ocl.callbacks.visualisation import colour_slots, render_overlay, slot_boundaries, slot_palette, write_gif


def test_overlay_layout_and_argmax_colours(tmp_path):
    video = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(2, 3, 3, 8, 10) / 3  # frame t is grey t/3
    masks = torch.zeros(2, 3, 4, 4, 5)
    masks[:, :, 2] = 1.0  # slot 2 owns everything
    frames = render_overlay(video, masks, alpha=1.0)
    assert frames.shape == (3, 2 * 8, (4 + 2) * 10, 3) and frames.dtype == torch.uint8
    expected = (slot_palette(4)[2] * 255).round().to(torch.uint8)
    assert torch.equal(frames[0, 0, 10], expected)  # overlay panel, first pixel
    assert frames[1, :, :10].unique().tolist() == [85]  # input panel: grey 1/3
    path = write_gif(frames, tmp_path / "overlay.gif", fps=2, scale=1)
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (60, 16)


def test_palette_colours_are_distinct():
    palette = slot_palette(11)
    distances = torch.cdist(palette, palette) + torch.eye(11)
    assert distances.min() > 0.1


def test_many_slots_show_only_the_largest_panels_largest_first():
    video = torch.ones(1, 2, 3, 4, 4)
    masks = torch.zeros(1, 2, 6, 4, 4)
    masks[:, :, 4, :, :3] = 1.0  # slot 4: 3 columns
    masks[:, :, 1, :, 3:] = 1.0  # slot 1: 1 column
    frames = render_overlay(video, masks, max_slot_panels=2)
    assert frames.shape == (2, 4, (2 + 2) * 4, 3)
    assert frames[0, :, 8:11].min() == 255 and frames[0, :, 11].max() == 0  # first panel: slot 4
    assert frames[0, :, 15].min() == 255 and frames[0, :, 12:15].max() == 0  # second panel: slot 1
    assert render_overlay(video, masks, max_slot_panels=10).shape[2] == (6 + 2) * 4


def test_overlay_shows_the_frame_under_the_colours_and_outlines_each_slot():
    frames = torch.rand(2, 3, 6, 6)
    ids = torch.zeros(2, 6, 6, dtype=torch.long)
    ids[:, :, 3:] = 1  # two slots side by side: the boundary is column 2
    overlay = colour_slots(frames, ids, 2, alpha=0.4)
    palette = slot_palette(2)
    assert slot_boundaries(ids).nonzero()[:, 2].unique().tolist() == [2]
    torch.testing.assert_close(overlay[:, :, :, 2], palette[0].view(1, 3, 1).expand(2, 3, 6))  # outline, opaque
    torch.testing.assert_close(overlay[:, :, :, 4], 0.6 * frames[:, :, :, 4] + 0.4 * palette[1].view(1, 3, 1))
    other = colour_slots(torch.rand(2, 3, 6, 6), ids, 2, alpha=0.4)
    assert not torch.allclose(overlay[:, :, :, :2], other[:, :, :, :2])  # the video shows through
