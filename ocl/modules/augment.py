"""Photometric augmentation of video batches on the model's device, the same for all frames of a video.

SMTC's student and teacher each see their own augmented copy of every clip. The recipe is the
authors' ``Augment_GPU_pre`` (kornia, ``same_on_frame=True``; shvdiwnkozbw/SMTC ``src/utils.py``):
random grayscale (p 0.2), then colour jitter (p 0.8; brightness, contrast, saturation 0.4, hue 0.1),
then Gaussian blur (p 0.5; kernel side ``0.1 * H`` rounded to odd, sigma in [0.1, 2]). The blur's
sigma is drawn once when the module is built (``blur_sigma_draw="run"``, as the authors' pipeline,
whose sigma is drawn when it is built, once per process: so their 4 GPUs each blur with their
own sigma) or per video (``"video"``). Differences left: the jitter's four operations run in a
fixed order and hue is rotated in YIQ space (a linear map) rather than through HSV (kornia's
jitter, whose order and formulas depend on its version, which the authors do not pin). The
ImageNet normalisation of the authors' pipeline is the encoder's job here
(:class:`~ocl.modules.vit.ViTEncoder`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _grayscale(video: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` -> luma ``[..., 1, H, W]``."""
    weights = video.new_tensor(_LUMA).view(3, 1, 1)
    return (video * weights).sum(dim=-3, keepdim=True)


def _rotate_hue(video: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of ``video [B, T, 3, H, W]`` by ``turns [B]`` (fractions of a full turn) in YIQ space."""
    to_yiq = video.new_tensor(_RGB_TO_YIQ)
    angle = 2 * math.pi * turns
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(turns), 3, 3, dtype=video.dtype, device=video.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    transform = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # [B, 3, 3]
    return torch.einsum("bij,btjhw->btihw", transform, video)


def _gaussian_blur(video: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Blur ``video [B, T, 3, H, W]`` with a separable Gaussian of side ``size`` and std ``sigma [B]`` (pixels)."""
    batch, frames, channels, height, width = video.shape
    offsets = torch.arange(size, dtype=video.dtype, device=video.device) - size // 2
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, size]
    kernel = kernel.repeat_interleave(frames * channels, dim=0)  # one per (video, frame, channel) plane
    planes = video.reshape(1, batch * frames * channels, height, width)
    pad = size // 2
    planes = F.pad(planes, (pad, pad, 0, 0), mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, None, :], groups=len(kernel))
    planes = F.pad(planes, (0, 0, pad, pad), mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, :, None], groups=len(kernel))
    return planes.reshape(video.shape)


class PhotometricAugmentation(nn.Module):
    """Random grayscale, colour jitter and blur with parameters drawn per video (see the module docs).

    Draws come from torch's global generator (seeded by the run, saved in checkpoints).

    Args:
        grayscale_probability: chance of converting a video to grayscale.
        jitter_probability: chance of colour-jittering a video.
        brightness, contrast, saturation: jitter factors are drawn from ``[1 - x, 1 + x]``.
        hue: hue rotation drawn from ``[-hue, hue]`` turns.
        blur_probability: chance of blurring a video.
        blur_fraction: kernel side as a fraction of the frame height (rounded down to odd, at least 3).
        blur_sigma: range of the blur's standard deviation in pixels.
        blur_sigma_draw: ``run`` (one sigma for the whole run, drawn here from torch's generator
            and kept in the module's state) or ``video`` (a sigma per video).
    """

    def __init__(
        self,
        grayscale_probability: float = 0.2,
        jitter_probability: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        blur_probability: float = 0.5,
        blur_fraction: float = 0.1,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_sigma_draw: str = "video",
    ) -> None:
        super().__init__()
        if blur_sigma_draw not in ("run", "video"):
            raise ValueError(f"unknown blur_sigma_draw {blur_sigma_draw!r}; known: 'run', 'video'")
        for name, value in (
            ("grayscale_probability", grayscale_probability),
            ("jitter_probability", jitter_probability),
            ("blur_probability", blur_probability),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.grayscale_probability = grayscale_probability
        self.jitter_probability = jitter_probability
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.blur_probability = blur_probability
        self.blur_fraction = blur_fraction
        self.blur_sigma = tuple(blur_sigma)
        self.blur_sigma_draw = blur_sigma_draw
        # saved in checkpoints, so a resumed run blurs as before
        run_sigma = torch.empty(()).uniform_(*self.blur_sigma) if blur_sigma_draw == "run" else None
        self.register_buffer("run_blur_sigma", run_sigma)

    def _draw(self, batch: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        """``[B]`` uniform draws in ``[low, high]``."""
        return torch.empty(batch, device=like.device, dtype=like.dtype).uniform_(low, high)

    def _chosen(self, batch: int, probability: float, like: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 1, 1, 1]`` boolean: which videos get an operation applied with ``probability``."""
        return (torch.rand(batch, device=like.device) < probability).view(batch, 1, 1, 1, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, T, 3, H, W]`` in [0, 1] -> augmented video of the same shape, in [0, 1]."""
        batch = video.shape[0]

        def per_video(values: torch.Tensor) -> torch.Tensor:
            return values.view(batch, 1, 1, 1, 1)

        gray = self._chosen(batch, self.grayscale_probability, video)
        video = torch.where(gray, _grayscale(video).expand_as(video), video)

        jitter = self._chosen(batch, self.jitter_probability, video)
        jittered = (video * per_video(self._draw(batch, 1 - self.brightness, 1 + self.brightness, video))).clamp(0, 1)
        mean = _grayscale(jittered).mean(dim=(-2, -1), keepdim=True)  # per frame, as kornia
        contrast = per_video(self._draw(batch, 1 - self.contrast, 1 + self.contrast, video))
        jittered = ((jittered - mean) * contrast + mean).clamp(0, 1)
        luma = _grayscale(jittered)
        saturation = per_video(self._draw(batch, 1 - self.saturation, 1 + self.saturation, video))
        jittered = ((jittered - luma) * saturation + luma).clamp(0, 1)
        jittered = _rotate_hue(jittered, self._draw(batch, -self.hue, self.hue, video)).clamp(0, 1)
        video = torch.where(jitter, jittered, video)

        size = max(3, int(self.blur_fraction * video.shape[-2]) // 2 * 2 + 1)
        if size // 2 < min(video.shape[-2:]):  # reflect padding needs a kernel radius below the frame side
            blur = self._chosen(batch, self.blur_probability, video)
            if self.run_blur_sigma is not None:
                sigma = self.run_blur_sigma.to(video.dtype).expand(batch)
            else:
                sigma = self._draw(batch, *self.blur_sigma, video)
            blurred = _gaussian_blur(video, sigma, size)
            video = torch.where(blur, blurred, video)
        return video
