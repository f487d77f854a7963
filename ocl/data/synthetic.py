"""Procedural videos of moving shapes with exact instance masks: the embedded default data.

Every video is a pure function of one integer seed (``np.random.default_rng(seed)``), so the
data needs no files, works on a laptop CPU and is identical on every machine and worker.
Generation is two steps, each vectorised over frames and pixels:

1. :func:`sample_scene` draws a :class:`Scene`: objects (shape, texture, colours, size over
   time, trajectory), a background canvas and a camera path.
2. :func:`render_scene` rasterises it analytically: every shape is a set of half-plane /
   distance tests on pixel centres, evaluated in a window around the object for all frames
   at once (no loop over pixels), then composited by depth.

Conventions:

- Object ``k`` (0-based) of a scene has mask id ``k + 1``, and ids are in **depth order**:
  id 1 is the farthest object, id ``M`` the nearest. A pixel's id is the largest id whose
  shape covers it (the topmost object); 0 is background. An object keeps its id in every
  frame, also in frames where it is fully hidden.
- There are no "ignore" pixels and no anti-aliasing: every pixel with id ``k`` has exactly one
  of object ``k``'s (at most two) texture colours, every background pixel the background's.
- Objects move with constant velocity and bounce elastically off the frame borders. The bounce
  is solved in closed form (a triangle wave), and the centre is kept far enough inside that
  at least part of the object is always in view (see :attr:`LevelSpec.overflow`).
- Colours: objects are saturated and bright (HSV ``s >= 0.6``, ``v >= 0.75``) with hues spread
  evenly around the colour wheel (plus a small jitter); backgrounds are dark or neutral
  (``v <= 0.4``), so every object's brightest channel exceeds every background channel by
  at least ``0.35`` (~89 of 255). A textured object's second colour is its first one desaturated.
- Camera motion (levels with :attr:`LevelSpec.camera_speed` > 0) pans the background canvas by a
  constant velocity, rounded to whole pixels, and adds the same drift to every object's
  velocity; object trajectories (and their bounces) are then solved in image coordinates, so
  objects stay in view although the scene pans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ocl.data.clips import VideoSource

SHAPES = ("circle", "ellipse", "square", "diamond", "triangle", "star", "cross")
TEXTURES = ("solid", "stripes", "checker", "two_tone")
BACKGROUNDS = ("plain", "gradient", "checker", "noise")
SPLITS = ("train", "val", "test")
MAX_OBJECTS = 127
"""Ids and texture codes are packed into one ``uint8`` (``2 * id + tone``) while rendering."""

_OBJECT_SATURATION = (0.6, 1.0)
_OBJECT_VALUE = (0.75, 1.0)
_BACKGROUND_SATURATION = (0.0, 0.35)
_BACKGROUND_VALUE = (0.05, 0.4)
_SECOND_TONE_SATURATION = 0.35
"""A textured object's second colour has this fraction of its first colour's saturation."""


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low <= bounds[0] <= bounds[1] <= high``."""
    if len(bounds) != 2 or not low <= bounds[0] <= bounds[1] <= high:
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {bounds}")


def _check_names(name: str, values: tuple[str, ...], known: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``values`` is a non-empty subset of ``known``."""
    unknown = sorted(set(values) - set(known))
    if not values or unknown:
        raise ValueError(f"{name} must be a non-empty subset of {known}, got {values}")


@dataclass(frozen=True)
class LevelSpec:
    """A difficulty level: the distributions one video's scene is drawn from.

    Lengths and speeds are fractions of the frame side, so a level looks the same at any
    resolution. Ranges are ``(min, max)``, inclusive for integers.

    Attributes:
        num_objects: how many objects a video has.
        radius: radius of the circle that bounds an object's shape.
        speed: an object's speed, per frame.
        shapes: shapes objects are drawn from (subset of :data:`SHAPES`).
        textures: object textures (subset of :data:`TEXTURES`); all but ``solid`` use two colours.
        backgrounds: background kinds (subset of :data:`BACKGROUNDS`).
        camera_speed: speed of the camera pan, per frame; ``(0, 0)`` is a static camera.
        scale_amplitude: objects' radius oscillates by this relative amount over time
            (``radius * (1 + a * sin(2 pi t / period + phase))``); 0 keeps sizes constant.
        overflow: the fraction of its radius by which an object may leave the frame at a
            border; 0 keeps every object fully inside, 1 lets the centre touch the border.
    """

    num_objects: tuple[int, int]
    radius: tuple[float, float]
    speed: tuple[float, float]
    shapes: tuple[str, ...] = SHAPES
    textures: tuple[str, ...] = ("solid",)
    backgrounds: tuple[str, ...] = ("plain",)
    camera_speed: tuple[float, float] = (0.0, 0.0)
    scale_amplitude: float = 0.0
    overflow: float = 0.0

    def __post_init__(self) -> None:
        """Validate the ranges and names, so a bad level fails where it is defined."""
        if len(self.num_objects) != 2 or not 1 <= self.num_objects[0] <= self.num_objects[1] <= MAX_OBJECTS:
            raise ValueError(
                f"num_objects must be (min, max) with 1 <= min <= max <= {MAX_OBJECTS}, got {self.num_objects}"
            )
        _check_range("radius", self.radius, 0.01, 0.5)
        _check_range("speed", self.speed, 0.0, 1.0)
        _check_range("camera_speed", self.camera_speed, 0.0, 1.0)
        _check_names("shapes", self.shapes, SHAPES)
        _check_names("textures", self.textures, TEXTURES)
        _check_names("backgrounds", self.backgrounds, BACKGROUNDS)
        if not 0.0 <= self.scale_amplitude < 1.0:
            raise ValueError(f"scale_amplitude must be in [0, 1), got {self.scale_amplitude}")
        if not 0.0 <= self.overflow <= 1.0:
            raise ValueError(f"overflow must be in [0, 1], got {self.overflow}")


LEVELS: dict[str, LevelSpec] = {
    # Few large, solid, well-separated colours on a plain dark background: learnable in minutes.
    "easy": LevelSpec(num_objects=(2, 4), radius=(0.12, 0.2), speed=(0.015, 0.04)),
    # More, smaller objects, two-colour textures, gradient backgrounds, objects leave the frame.
    "medium": LevelSpec(
        num_objects=(3, 6),
        radius=(0.09, 0.18),
        speed=(0.02, 0.05),
        textures=TEXTURES,
        backgrounds=("plain", "gradient"),
        overflow=0.3,
    ),
    # Crowded, always textured, textured background, panning camera, objects change size.
    "hard": LevelSpec(
        num_objects=(4, 8),
        radius=(0.07, 0.16),
        speed=(0.02, 0.06),
        textures=("stripes", "checker", "two_tone"),
        backgrounds=("checker", "noise"),
        camera_speed=(0.03, 0.06),
        scale_amplitude=0.25,
        overflow=0.5,
    ),
}


def get_level(level: str | LevelSpec) -> LevelSpec:
    """Return the preset named ``level`` (or ``level`` itself if it is a :class:`LevelSpec`)."""
    if isinstance(level, LevelSpec):
        return level
    if level not in LEVELS:
        raise ValueError(f"unknown synthetic level {level!r}; known levels: {sorted(LEVELS)}")
    return LEVELS[level]


@dataclass(frozen=True)
class Scene:
    """Everything :func:`render_scene` needs to draw one video of ``T`` frames, ``M`` objects.

    Objects are listed back to front: object ``k`` has mask id ``k + 1``. Coordinates are
    pixels, ``x`` to the right and ``y`` down, with pixel ``(i, j)`` centred at ``(j + .5, i + .5)``.

    Attributes:
        shapes: ``M`` names from :data:`SHAPES`.
        textures: ``M`` names from :data:`TEXTURES`.
        centers: float32 ``[M, T, 2]`` object centres ``(x, y)`` in image coordinates.
        radii: float32 ``[M, T]`` radius of each object's bounding circle.
        angles: float32 ``[M]`` orientation of each shape (and its texture), radians.
        texture_frequency: float32 ``[M]`` texture cells per radius (stripes and checker).
        texture_offset: float32 ``[M]`` texture phase (stripes, checker) or the position of
            the colour split along the object's axis (two-tone), in radii.
        colours: uint8 ``[M, 2, 3]`` each object's two texture colours (solid objects use
            only the first).
        background: uint8 ``[3, Hc, Wc]`` the background canvas (channel first), at least
            ``H x W``, larger when the camera pans over it.
        camera: int64 ``[T, 2]`` offset ``(x, y)`` of each frame's top-left pixel in the
            canvas (all zero for a static camera).
    """

    shapes: tuple[str, ...]
    textures: tuple[str, ...]
    centers: np.ndarray
    radii: np.ndarray
    angles: np.ndarray
    texture_frequency: np.ndarray
    texture_offset: np.ndarray
    colours: np.ndarray
    background: np.ndarray
    camera: np.ndarray

    @property
    def num_objects(self) -> int:
        """``M``, the number of objects."""
        return len(self.shapes)

    @property
    def num_frames(self) -> int:
        """``T``, the number of frames."""
        return self.camera.shape[0]


# --------------------------------------------------------------------------- sampling


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Convert HSV (each ``[...]`` in ``[0, 1]``) to uint8 RGB ``[..., 3]``."""
    n = np.array([5.0, 3.0, 1.0])
    k = (n + hue[..., None] * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    rgb = value[..., None] * (1.0 - saturation[..., None] * ramp)
    return np.round(rgb * 255.0).astype(np.uint8)


def _background_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """Draw ``count`` dark or neutral colours: float ``[count, 3]`` in ``[0, 1]``."""
    hue = rng.random(count)
    saturation = rng.uniform(*_BACKGROUND_SATURATION, size=count)
    value = rng.uniform(*_BACKGROUND_VALUE, size=count)
    return _hsv_to_rgb(hue, saturation, value) / 255.0


def _object_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """Draw ``count`` bright colours with evenly spread hues: uint8 ``[count, 2, 3]``.

    Hues sit on ``count`` evenly spaced slots (random rotation, random assignment, a jitter of
    at most 15% of the spacing), so any two objects' hues differ by at least 70% of
    ``1 / count`` of the wheel. The second colour (texture) is the first one desaturated.
    """
    slots = rng.permutation(count) + rng.uniform(-0.15, 0.15, size=count)
    hue = (rng.random() + slots / count) % 1.0
    saturation = rng.uniform(*_OBJECT_SATURATION, size=count)
    value = rng.uniform(*_OBJECT_VALUE, size=count)
    tones = np.stack([saturation, saturation * _SECOND_TONE_SATURATION], axis=1)
    return _hsv_to_rgb(np.repeat(hue[:, None], 2, axis=1), tones, np.repeat(value[:, None], 2, axis=1))


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Value noise: random values on a grid of ``cell`` px, bilinearly interpolated: ``[H, W]``."""
    grid_h, grid_w = int(height / cell) + 2, int(width / cell) + 2
    coarse = rng.random((grid_h, grid_w))

    def weights(size: int, grid: int) -> np.ndarray:
        """Linear-interpolation matrix ``[size, grid]`` from grid nodes to pixel centres."""
        position = (np.arange(size) + 0.5) / cell
        return np.maximum(0.0, 1.0 - np.abs(position[:, None] - np.arange(grid)[None, :]))

    return weights(height, grid_h) @ coarse @ weights(width, grid_w).T


def _sample_background(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """Draw a background canvas of ``kind``: uint8 ``[3, height, width]``."""
    first, second = _background_colours(rng, 2)[:, :, None, None]
    if kind == "plain":
        return np.broadcast_to(np.round(first * 255.0).astype(np.uint8), (3, height, width))
    ys = (np.arange(height) + 0.5)[:, None]
    xs = (np.arange(width) + 0.5)[None, :]
    size = min(height, width)
    if kind == "gradient":
        angle = rng.uniform(0.0, 2.0 * np.pi)
        along = np.cos(angle) * xs + np.sin(angle) * ys
        weight = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif kind == "checker":
        cell = rng.uniform(0.06, 0.14) * size
        weight = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2.0).astype(np.float64)
    else:  # noise: smooth blobs plus a little per-pixel grain
        weight = _smooth_noise(rng, height, width, cell=rng.uniform(0.08, 0.2) * size)
        weight = np.clip(weight + rng.normal(0.0, 0.08, size=(height, width)), 0.0, 1.0)
    return np.round((first + weight * (second - first)) * 255.0).astype(np.uint8)


def _bounce(
    start: np.ndarray, velocity: np.ndarray, low: np.ndarray, high: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """Positions ``[M, T]`` of points moving at ``velocity`` and bouncing elastically in ``[low, high]``.

    ``start``, ``velocity``, ``low``, ``high`` are ``[M]``; ``times`` is ``[T]``. The unfolded
    path ``start + velocity * t`` is folded back into the interval by a triangle wave.
    """
    span = (high - low)[:, None]
    unfolded = (start - low)[:, None] + velocity[:, None] * times[None, :]
    folded = np.mod(unfolded, 2.0 * span)
    return low[:, None] + span - np.abs(folded - span)


def sample_scene(rng: np.random.Generator, level: LevelSpec, num_frames: int, resolution: int) -> Scene:
    """Draw one video's :class:`Scene` of ``num_frames`` square frames of side ``resolution``."""
    count = int(rng.integers(level.num_objects[0], level.num_objects[1] + 1))
    times = np.arange(num_frames, dtype=np.float64)

    shapes = tuple(level.shapes[i] for i in rng.integers(len(level.shapes), size=count))
    textures = tuple(level.textures[i] for i in rng.integers(len(level.textures), size=count))
    base_radius = rng.uniform(*level.radius, size=count) * resolution
    period = rng.uniform(8.0, 16.0, size=count)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=count)
    radii = base_radius[:, None] * (
        1.0 + level.scale_amplitude * np.sin(2.0 * np.pi * times / period[:, None] + phase[:, None])
    )

    camera_angle = rng.uniform(0.0, 2.0 * np.pi)
    camera_velocity = (
        rng.uniform(*level.camera_speed) * resolution * np.array([np.cos(camera_angle), np.sin(camera_angle)])
    )
    heading = rng.uniform(0.0, 2.0 * np.pi, size=count)
    speed = rng.uniform(*level.speed, size=count) * resolution
    velocity = speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1) - camera_velocity

    # The centre stays in [low, high], so at most `overflow` of the largest radius leaves the frame.
    low = np.minimum(radii.max(axis=1) * (1.0 - level.overflow), resolution / 2.0)
    high = resolution - low
    start = rng.uniform(low[:, None], high[:, None], size=(count, 2))
    centers = np.stack([_bounce(start[:, axis], velocity[:, axis], low, high, times) for axis in (0, 1)], axis=-1)

    kind = level.backgrounds[rng.integers(len(level.backgrounds))]
    travel = np.ceil(np.abs(camera_velocity) * max(num_frames - 1, 0)).astype(np.int64)
    background = _sample_background(rng, kind, resolution + int(travel[1]), resolution + int(travel[0]))
    # Pan from the canvas side the camera moves away from, so every frame lies inside it.
    origin = np.where(camera_velocity < 0, travel, 0)
    camera = np.round(origin[None, :] + camera_velocity[None, :] * times[:, None]).astype(np.int64)

    return Scene(
        shapes=shapes,
        textures=textures,
        centers=centers.astype(np.float32),
        radii=radii.astype(np.float32),
        angles=rng.uniform(0.0, 2.0 * np.pi, size=count).astype(np.float32),
        texture_frequency=rng.uniform(1.2, 2.2, size=count).astype(np.float32),
        texture_offset=rng.uniform(-0.4, 0.4, size=count).astype(np.float32),
        colours=_object_colours(rng, count),
        background=background,
        camera=camera,
    )


# --------------------------------------------------------------------------- rasterising
# Shapes and textures are tests on object coordinates (u, v): pixel offsets from the object's
# centre, rotated by its angle and divided by its radius, so every shape fits the unit disc.

_SIN60 = float(np.sqrt(3.0) / 2.0)
_HALF_DIAGONAL = float(np.sqrt(0.5))
_ELLIPSE_MINOR = 0.55
_CROSS_ARM = 0.95
_CROSS_WIDTH = 0.3


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Equilateral triangle with vertices on the unit circle, apex at ``-v`` (up on screen)."""
    return np.maximum(np.abs(u) * _SIN60 - 0.5 * v, v) <= 0.5


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Six-pointed star: the union of two opposite triangles."""
    return _triangle(u, v) | _triangle(u, -v)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Plus sign: inside a square and close to one of its axes."""
    au, av = np.abs(u), np.abs(v)
    return (np.maximum(au, av) <= _CROSS_ARM) & (np.minimum(au, av) <= _CROSS_WIDTH)


_SHAPE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "ellipse": lambda u, v: u * u + (v / _ELLIPSE_MINOR) ** 2 <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= _HALF_DIAGONAL,
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
}


_BAND_SHIFT = 16.0
"""Keeps band indices positive inside the unit disc, where truncation equals ``floor``.

Outside the disc the bands are wrong but never drawn (they are masked by the shape), and
casting to an integer is ~15x faster than ``np.mod`` or ``np.floor``.
"""


def _bands(coordinate: np.ndarray, frequency: float, offset: float) -> np.ndarray:
    """Alternating bands of width ``1 / frequency`` along ``coordinate`` (valid for ``|coordinate| <= 1``): bool."""
    index = (coordinate * frequency + (offset + _BAND_SHIFT)).astype(np.int32)
    return (index & 1).astype(bool)


_TEXTURE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]] = {
    "stripes": lambda u, v, f, o: _bands(u, f, o),
    "checker": lambda u, v, f, o: _bands(u, f, o) ^ _bands(v, f, o),
    "two_tone": lambda u, v, f, o: u > o,
}


def _object_window(scene: Scene, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise object ``index`` in a ``size`` x ``size`` window around its centre in every frame.

    Returns:
        ``(codes, corners)``: uint8 ``[T, size, size]`` codes, ``2 * (index + 1) + tone`` where
        the object covers the pixel (``tone`` is 0 or 1, the texture colour) and 0 elsewhere,
        so a larger code always means a nearer object; int64 ``[T, 2]`` the image pixel
        ``(x, y)`` of each window's top-left corner.
    """
    centers = scene.centers[index]  # [T, 2]
    corners = np.floor(centers - size / 2.0).astype(np.int64)
    offsets = (corners[:, :, None] - centers[:, :, None] + 0.5).astype(np.float32)  # [T, 2, 1]
    pixels = offsets + np.arange(size, dtype=np.float32)  # [T, 2, size]: pixel centre - object centre
    radius = scene.radii[index][:, None]
    dx = (pixels[:, 0] / radius)[:, None, :]  # [T, 1, size]
    dy = (pixels[:, 1] / radius)[:, :, None]  # [T, size, 1]
    cos, sin = np.cos(scene.angles[index]), np.sin(scene.angles[index])
    u = cos * dx + sin * dy  # [T, size, size]
    v = cos * dy - sin * dx
    inside = _SHAPE_TESTS[scene.shapes[index]](u, v)
    codes = inside.view(np.uint8) * np.uint8(2 * (index + 1))
    texture = scene.textures[index]
    if texture != "solid":
        tone = _TEXTURE_TESTS[texture](u, v, scene.texture_frequency[index], scene.texture_offset[index])
        codes += tone & inside
    return codes, corners


def _rasterise(scene: Scene, resolution: int) -> np.ndarray:
    """Codes of the topmost object at every pixel (see :func:`_object_window`): uint8 ``[T, H, W]``.

    Each object is only evaluated in a window that bounds it, and the windows are max-composited
    into a canvas with a margin of one window on every side, so windows never need clipping.
    """
    size = int(np.ceil(2.0 * float(scene.radii.max(initial=0.0)))) + 3  # bounds a disc of any centre
    canvas = np.zeros((scene.num_frames, resolution + 2 * size, resolution + 2 * size), dtype=np.uint8)
    for index in range(scene.num_objects):
        codes, corners = _object_window(scene, index, size)
        for frame, (x, y) in enumerate((corners + size).tolist()):
            region = canvas[frame, y : y + size, x : x + size]
            np.maximum(region, codes[frame], out=region)
    return canvas[:, size : size + resolution, size : size + resolution]


def render_scene(scene: Scene, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scene`` at ``resolution`` (= H = W).

    Returns:
        ``(video, masks)``: uint8 ``[T, H, W, 3]`` frames and uint8 ``[T, H, W]`` instance ids.
        The frames are a channels-last view of channel-first memory (``video.transpose(0, 3, 1,
        2)`` is contiguous), which is what the dataset needs and saves a copy.
    """
    codes = _rasterise(scene, resolution)
    _, height, width = scene.background.shape
    pixels = np.arange(resolution)
    corner = scene.camera[:, 1, None, None] * width + scene.camera[:, 0, None, None]  # [T, 1, 1]
    background = corner + (pixels[:, None] * width + pixels)  # [T, H, W] index into the flat canvas
    # One colour table per channel: the flat canvas, then the objects' colours (code 2 onwards).
    index = np.where(codes < 2, background, codes.astype(np.intp) + (height * width - 2))
    table = np.concatenate([scene.background.reshape(3, -1), scene.colours.reshape(-1, 3).T], axis=1)
    video = np.stack([channel[index] for channel in table])  # [3, T, H, W]
    return video.transpose(1, 2, 3, 0), codes >> 1


def generate_video(
    seed: int, level: str | LevelSpec, num_frames: int, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one video from ``seed`` alone.

    Returns:
        ``(video, masks)``: uint8 ``[T, H, W, 3]`` RGB frames and uint8 ``[T, H, W]``
        instance ids (0 background, ``1..M`` objects back to front; see the module docs).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    scene = sample_scene(np.random.default_rng(seed), get_level(level), num_frames, resolution)
    return render_scene(scene, resolution)


# --------------------------------------------------------------------------- dataset


def video_seed(seed: int, split: str, index: int) -> int:
    """The seed of video ``index`` of ``split``: independent streams via ``SeedSequence`` spawn keys."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {list(SPLITS)}")
    sequence = np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), index))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


class SyntheticVideoDataset(Dataset):
    """``size`` procedural videos of one split, generated on the fly (see the module docs).

    Video ``i`` comes from :func:`video_seed` ``(seed, split, i)``, so splits never share a
    video and any video can be regenerated from its id alone. Items follow the batch contract
    (:mod:`ocl.contracts.batch`) without the batch dimension:
    ``{"video": float32 [T, 3, H, W] in [0, 1], "masks": int64 [T, H, W],
    "meta": {"video_id": "<split>_<i:06d>", "frame_indices": int64 [T]}}``.

    Args:
        split: one of :data:`SPLITS`.
        size: number of videos.
        level: a name in :data:`LEVELS` or a :class:`LevelSpec`.
        num_frames: frames per video (1 for images).
        resolution: side of the square frames, in pixels.
        seed: base seed of the whole dataset.
        cache: keep generated uint8 arrays in memory (``~4 * T * H * W`` bytes per video,
            per process) instead of regenerating them on every access.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        level: str | LevelSpec = "easy",
        num_frames: int = 6,
        resolution: int = 64,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known splits: {list(SPLITS)}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.split = split
        self.size = size
        self.level = get_level(level)
        self.num_frames = num_frames
        self.resolution = resolution
        self.seed = seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        """Number of videos."""
        return self.size

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Video ``index`` as uint8 ``[T, H, W, 3]`` frames and uint8 ``[T, H, W]`` ids."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.split} split of size {self.size}")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        arrays = generate_video(video_seed(self.seed, self.split, index), self.level, self.num_frames, self.resolution)
        if self._cache is not None:
            self._cache[index] = arrays
        return arrays

    def video_id(self, index: int) -> str:
        """The name of video ``index``: ``<split>_<index:06d>``."""
        return f"{self.split}_{index:06d}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Video ``index`` in the batch contract's per-sample form (see the class docs)."""
        video, masks = self.arrays(index)
        # Converted in numpy: single-threaded, which beats torch's intra-op threads on such small
        # arrays (their hand-offs cost milliseconds on a busy CPU).
        frames = video.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return {
            "video": torch.from_numpy(np.ascontiguousarray(frames)),
            "masks": torch.from_numpy(masks.astype(np.int64)),
            "meta": {
                "video_id": self.video_id(index),
                "frame_indices": torch.arange(self.num_frames, dtype=torch.int64),
            },
        }


class SyntheticSource(VideoSource):
    """The videos of a :class:`SyntheticVideoDataset` as a :class:`~ocl.data.clips.VideoSource`, so
    that a :class:`~ocl.data.clips.ClipDataset` (whole videos, no transform) reads them as it reads
    stored ones: item ``i`` equals ``dataset[i]`` (the frozen-feature cache reads splits this way)."""

    def __init__(self, dataset: SyntheticVideoDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def video_id(self, index: int) -> str:
        return self.dataset.video_id(index)

    def num_frames(self, index: int) -> int:
        return self.dataset.num_frames

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        video, masks = self.dataset.arrays(index)
        return video[frame_indices], masks[frame_indices].astype(np.int64)
