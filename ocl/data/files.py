"""File helpers shared by the dataset converters (MOVi, CLEVR): atomic writes, manifests."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ocl.data.errors import DataError


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(stream)`` on a temporary file beside ``path``, then rename it to ``path``
    (an interrupted conversion never leaves a half-written file under the final name)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as stream:
        write(stream)
    os.replace(temporary, path)


def read_manifest(path: Path) -> Any:
    """The JSON at ``path``; DataError naming it if unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: unreadable manifest ({error})") from error


def load_converted_manifest(folder: Path, name: str, format_name: str, entries: str, kind: type, rerun: str) -> dict:
    """The manifest ``folder / name`` of a converter's output, checked to be of ``format_name``
    with an ``entries`` field of type ``kind``; DataError ending with ``rerun`` (how to finish the
    conversion) if it is missing (half-converted), unreadable or of another format."""
    path = folder / name
    if not path.is_file():
        raise DataError(f"{folder} is half-converted: no {name}; {rerun}")
    manifest = read_manifest(path)
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != format_name
        or not isinstance(manifest.get(entries), kind)
    ):
        raise DataError(f"{path}: not a manifest of format {format_name}; {rerun}")
    return manifest
