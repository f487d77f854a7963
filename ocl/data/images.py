"""Reading image files of the datasets stored as frames (YouTube-VIS, DAVIS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ocl.data.errors import DataError


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 ``[H, W, 3]``; DataError naming it if it is missing or corrupt."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}; re-extract it from the dataset download") from error
