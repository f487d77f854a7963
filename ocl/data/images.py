"""Reading and writing image files of the datasets stored as frames or images (YouTube-VIS, YouTube-VOS, DAVIS, CLEVRTex)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ocl.data.errors import DataError


def list_stems(folder: Path, suffix: str) -> list[str]:
    """Sorted names (without ``suffix``) of the ``*suffix`` files in ``folder`` (e.g. a video's frames);
    DataError if the folder is missing."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; the download is incomplete")
    return sorted(path.name[: -len(suffix)] for path in folder.iterdir() if path.name.endswith(suffix))


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 ``[H, W, 3]``; DataError naming it if it is missing or corrupt."""
    return read_rgb_scaled(path, None)[0]


def read_rgb_scaled(
    path: Path, decode_size: Callable[[int, int], tuple[int, int] | None] | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at ``path`` as uint8 ``[h, w, 3]``, and its stored size ``(H, W)``.

    A JPEG is decoded at the smallest of the scales 1/8, 1/4, 1/2, 1 whose ``(h, w)`` is at least
    ``decode_size(H, W)`` (libjpeg's DCT-domain scaling through PIL's ``Image.draft``; faster than
    decoding it whole); ``decode_size`` None (or returning None), and other formats: ``(h, w) = (H, W)``.
    DataError naming the file if it is missing or corrupt.
    """
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
            wanted = None if decode_size is None else decode_size(*size)
            if wanted is not None:
                image.draft("RGB", (wanted[1], wanted[0]))
            return np.asarray(image.convert("RGB")), size
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}; re-extract it from the dataset download") from error


def read_video_frames(
    paths: Sequence[Path], decode_size: Callable[[int, int], tuple[int, int] | None] | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """The frames of one video as uint8 ``[T, h, w, 3]`` (see :func:`read_rgb_scaled`) and their
    stored size ``(H, W)``; DataError naming a frame whose stored size differs from the first one's."""
    frames, sizes = zip(*(read_rgb_scaled(path, decode_size) for path in paths), strict=True)
    for path, size in zip(paths[1:], sizes[1:]):
        if size != sizes[0]:
            raise DataError(
                f"{path} is {size[0]}x{size[1]} (HxW) but {paths[0]} of the same video is "
                f"{sizes[0][0]}x{sizes[0][1]}; re-extract the video from the download"
            )
    return np.stack(frames), sizes[0]


def read_palette_indices(path: Path, what: str) -> np.ndarray:
    """The pixel values (palette indices = object ids) of the palette PNG at ``path``, uint8 ``[H, W]``;
    DataError naming it if it is missing, corrupt or not a palette image (``what``: e.g. "DAVIS annotations")."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DataError(
                    f"{path} is a mode {image.mode!r} image; {what} are palette ('P') PNGs whose pixel values "
                    "are object ids"
                )
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}; re-extract it from the dataset download") from error


def write_palette_png(path: Path, ids: np.ndarray, palette: list[int]) -> None:
    """Write uint8 ids ``[H, W]`` as a palette ("P") PNG, the format of DAVIS annotations."""
    image = Image.fromarray(ids.astype(np.uint8, copy=False), mode="P")
    image.putpalette(palette)
    image.save(path)
