"""Mask overlays: panel layout and colours."""

import torch
from PIL import Image

from ocl.callbacks.visualisation import render_overlay, slot_palette, write_gif


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
