"""Reading and writing image files of the datasets stored as frames or images (YouTube-VIS, YouTube-VOS, DAVIS, CLEVRTex)."""

from __future__ import annotations

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
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}; re-extract it from the dataset download") from error


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
