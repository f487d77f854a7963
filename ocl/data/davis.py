"""DAVIS-2017 (trainval release), read from the official download as it is.

``DAVIS-2017-trainval-480p.zip`` (https://davischallenge.org/davis2017/code.html) unzips to a
folder ``DAVIS`` (``data.root``) with::

    JPEGImages/<resolution>/<sequence>/00000.jpg ...
    Annotations/<resolution>/<sequence>/00000.png ...    palette ("P") PNGs, one per frame
    ImageSets/2017/train.txt, val.txt                    one sequence name per line

``resolution`` is ``480p`` (or ``Full-Resolution`` from the full-resolution download).

``annotations="unsupervised"`` reads the labels of the official toolkit's unsupervised task
instead: ``Annotations_unsupervised/<resolution>/<sequence>/*.png``, the 2019 re-annotation of the
same frames (every object, not only those the semi-supervised task follows), a separate download
(``DAVIS-2017-Unsupervised-trainval-480p.zip``) unzipped into the same ``DAVIS`` folder. SMTC's
object discovery is scored against it (``eval=object_discovery``).

Labels: a PNG's pixel values are palette indices: ``0`` background, ``k`` object ``k`` (the
same object in every frame of the sequence), ``255`` void, which becomes
:data:`~ocl.contracts.batch.IGNORE_ID`. Every frame must have its PNG (as in the trainval
release); a missing one is a :class:`~ocl.data.errors.DataError` naming it.

Splits: ``train`` and ``val`` as listed in ``ImageSets/2017``; ``test`` serves the ``val``
sequences, the split that DAVIS-2017 results are reported on (test-dev and challenge labels
are not public).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ocl.contracts.batch import IGNORE_ID
from ocl.data.clips import DecodeSize, ReadClip, VideoSource
from ocl.data.datamodule import StoredVideoDataModule
from ocl.data.errors import DataError
from ocl.data.images import list_stems, read_palette_indices, read_video_frames

RESOLUTIONS = ("480p", "Full-Resolution")
SPLITS = ("train", "val")
ANNOTATIONS = {"semi_supervised": "Annotations", "unsupervised": "Annotations_unsupervised"}
"""Label folder of each task of the official toolkit."""
VOID = 255
"""Annotation value of pixels that DAVIS does not score."""
DOWNLOAD_HELP = (
    "Download DAVIS-2017-trainval-480p.zip from https://davischallenge.org/davis2017/code.html "
    "(https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip), unzip it and move "
    "its DAVIS folder to {root}, or point data.root (or OCL_DATA_ROOT) at it."
)
UNSUPERVISED_HELP = (
    "The unsupervised task's labels are a separate download: DAVIS-2017-Unsupervised-trainval-{resolution}.zip "
    "from https://davischallenge.org/davis2017/code.html (https://data.vision.ee.ethz.ch/csergi/share/davis/"
    "DAVIS-2017-Unsupervised-trainval-{resolution}.zip); unzip it so that its DAVIS folder merges into {root} "
    "(giving {root}/Annotations_unsupervised/{resolution}/<sequence>/00000.png), or read the semi-supervised "
    "labels with data.annotations=semi_supervised."
)


def read_annotation(path: Path) -> np.ndarray:
    """int16 ids ``[H, W]`` of a DAVIS palette PNG (void 255 -> IGNORE_ID); DataError naming a bad file."""
    values = read_palette_indices(path, "DAVIS annotations")
    labels = values.astype(np.int16)
    labels[values == VOID] = IGNORE_ID
    return labels


def _read_image_set(path: Path) -> list[str]:
    """Sequence names listed in an ``ImageSets/2017`` file."""
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read the DAVIS sequence list {path}: {error}; the download is incomplete") from error
    if not names:
        raise DataError(f"the DAVIS sequence list {path} is empty")
    return names


class DavisSource(VideoSource):
    """Frames and object ids of the DAVIS-2017 sequences of ``split`` (see the module docs).

    Every sequence's folders are listed here (JPEGs and PNGs must pair up one to one); files
    are decoded, and their sizes compared, when a sequence is read.

    Args:
        root: the ``DAVIS`` folder of the download.
        split: ``train`` or ``val``.
        resolution: ``480p`` or ``Full-Resolution``.
        annotations: ``semi_supervised`` (``Annotations``) or ``unsupervised`` (``Annotations_unsupervised``).
    """

    def __init__(
        self, root: str | Path, split: str, resolution: str = "480p", annotations: str = "semi_supervised"
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown DAVIS split {split!r}; known: {list(SPLITS)}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown DAVIS resolution {resolution!r}; known: {list(RESOLUTIONS)}")
        if annotations not in ANNOTATIONS:
            raise ValueError(f"unknown DAVIS annotations {annotations!r}; known: {list(ANNOTATIONS)}")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"DAVIS-2017 not found: {root} does not exist. {DOWNLOAD_HELP.format(root=root)}")
        self.image_dir = root / "JPEGImages" / resolution
        self.annotation_dir = root / ANNOTATIONS[annotations] / resolution
        if annotations == "unsupervised" and not self.annotation_dir.is_dir():
            raise DataError(
                f"DAVIS-2017 unsupervised annotations not found: {self.annotation_dir} does not exist. "
                + UNSUPERVISED_HELP.format(resolution=resolution, root=root)
            )
        self.sequences = _read_image_set(root / "ImageSets" / "2017" / f"{split}.txt")
        self.frames = [self._frame_names(sequence) for sequence in self.sequences]

    def _frame_names(self, sequence: str) -> list[str]:
        frames = list_stems(self.image_dir / sequence, ".jpg")
        annotations = list_stems(self.annotation_dir / sequence, ".png")
        if not frames:
            raise DataError(f"{self.image_dir / sequence} has no JPEG frames")
        missing = sorted(set(frames) - set(annotations))
        if missing:
            raise DataError(
                f"{self.annotation_dir / sequence / missing[0]}.png is missing ({len(missing)} of the "
                f"{len(frames)} frames of {sequence} have no annotation); DAVIS-2017 trainval annotates every frame"
            )
        if len(annotations) != len(frames):
            extra = sorted(set(annotations) - set(frames))
            raise DataError(
                f"{self.annotation_dir / sequence} has {len(annotations)} annotations for {len(frames)} frames: "
                f"{self.image_dir / sequence / extra[0]}.jpg is missing"
            )
        return frames

    def __len__(self) -> int:
        return len(self.sequences)

    def video_id(self, index: int) -> str:
        return self.sequences[index]

    def num_frames(self, index: int) -> int:
        return len(self.frames[index])

    def read(self, index: int, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames ``[T, H, W, 3]`` and int16 ids ``[T, H, W]`` (0 background, k object k, IGNORE_ID void)."""
        clip = self.read_clip(index, frame_indices)
        return clip.frames, clip.masks

    def read_clip(
        self, index: int, frame_indices: np.ndarray, labels: bool = True, decode_size: DecodeSize | None = None
    ) -> ReadClip:
        """As :meth:`read`; the annotations are read only with ``labels``, frames at a reduced scale
        down to ``decode_size``. DataError naming a frame or annotation whose size differs."""
        sequence = self.sequences[index]
        names = [self.frames[index][int(t)] for t in frame_indices]
        frames, size = read_video_frames([self.image_dir / sequence / f"{name}.jpg" for name in names], decode_size)
        if not labels:
            return ReadClip(frames, None, size)
        masks = []
        for name in names:
            path = self.annotation_dir / sequence / f"{name}.png"
            masks.append(read_annotation(path))
            if masks[-1].shape != size:
                raise DataError(
                    f"{path} is {masks[-1].shape[0]}x{masks[-1].shape[1]} (HxW) but its frame "
                    f"{self.image_dir / sequence / name}.jpg is {size[0]}x{size[1]}"
                )
        return ReadClip(frames, np.stack(masks), size)


class DavisDataModule(StoredVideoDataModule):
    """DAVIS-2017 trainval (see the module docs for layout, labels and splits; ``test`` = ``val``).

    Args:
        root: the ``DAVIS`` folder of the download.
        resolution: ``480p`` or ``Full-Resolution``.
        annotations: ``semi_supervised`` or ``unsupervised`` (the separate download; see the module docs).
        **kwargs: clip lengths, transforms and loader settings of
            :class:`~ocl.data.datamodule.StoredVideoDataModule`.
    """

    def __init__(
        self, root: str, resolution: str = "480p", annotations: str = "semi_supervised", **kwargs: Any
    ) -> None:
        super().__init__(root, **kwargs)
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown DAVIS resolution {resolution!r}; known: {list(RESOLUTIONS)}")
        if annotations not in ANNOTATIONS:
            raise ValueError(f"unknown DAVIS annotations {annotations!r}; known: {list(ANNOTATIONS)}")
        self.resolution = resolution
        self.annotations = annotations

    def open_source(self, split: str) -> DavisSource:
        return DavisSource(self.root, "val" if split == "test" else split, self.resolution, self.annotations)
