"""Frozen-feature cache: a frozen encoder's output for every frame of a split, computed once.

VideoSAUR, SlotContrast and SlotCurri read a frozen ViT's block tokens (and VideoSAUR its
attention keys); for a given frame, crop and flip they never change, yet a 100k-step recipe
recomputes each clip's features ~100 times. ``scripts/cache_features.py`` runs the encoder once
over a split (:class:`FeatureCacheWriter`); training with ``data.feature_cache=<dir>`` reads
clips of cached features (:class:`CachedClips`, batch key ``features``) and the method skips its
encoder. docs/scaling.md ("Frozen-feature cache") has the commands and disk sizes.

**Crops and flips.** A frame's features depend on the whole crop the ViT sees (attention is
global, and the position embedding is not mirror-symmetric), so they cannot be cropped or flipped
on the token grid. The cache stores a fixed set of *placements* per video: every flip the
transform can draw (both orientations when ``horizontal_flip``), times, for random
``short_side_crop`` crops (YouTube-VIS), ``crops`` offsets along the long side, the centres of
``crops`` equal bins of the range the recipe draws from (``crops=1``: the centre crop). Training
draws the clip start exactly as the recipe (:meth:`~ocl.data.clips.ClipDataset.clip_frames`),
then one of the cached crops uniformly (instead of any offset) and the flip with probability 1/2:
with no random crop (MOVi: resize + flips) the draws and the clips are exactly the recipe's.

**Layout** of ``<dir>`` (one split)::

    features.npy   [V, F, N, D] float16 (or float32): block tokens of placement v of frame f
    keys.npy       [V, F, N, D] attention keys (only for methods that read them: VideoSAUR, reconstruction_target=keys)
    index.npz      video_ids [videos], frame_offsets [videos + 1] (video i = frames
                   offsets[i]:offsets[i+1] of F), placements [videos, V, 3] (top, left, flip)
    manifest.json  format, version, fingerprint, contents; written last

``.npy`` files are opened with ``np.load(mmap_mode="r")``: a clip reads ``T`` rows of ``N x D``
values of one placement, so any (video, frame, placement) is read without loading the rest.
The manifest's fingerprint names what the features depend on (encoder, resolution, dataset,
split, transform); :meth:`FeatureCache.check` refuses a cache whose fingerprint differs from the
experiment's, naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ocl.contracts.batch import FEATURE_KEYS, FEATURES, META
from ocl.data.clips import ClipDataset, VideoSource
from ocl.data.errors import DataError
from ocl.data.files import read_manifest, write_atomically
from ocl.data.transforms import Placement, VideoTransform

FORMAT = "ocl-feature-cache"
VERSION = 1
"""Version of the layout above; a cache of another version is refused."""
MANIFEST = "manifest.json"
FEATURES_FILE = "features.npy"
KEYS_FILE = "keys.npy"
INDEX_FILE = "index.npz"
DTYPES = ("float16", "float32")
DATA_FIELDS = ("dataset", "split", "transform")
"""Fingerprint fields that follow from the data module."""
MODEL_FIELDS = ("resolution", "encoder")
"""Fingerprint fields that follow from the method's frozen encoder."""

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""Frames ``[n, 3, H, W]`` in [0, 1] -> block tokens ``[n, N, D]`` and attention keys ``[n, N, D]``
(None when the cache stores no keys)."""


class FeatureCacheError(DataError):
    """A feature cache is missing, incomplete, or was made for another experiment."""


def random_crop(transform: VideoTransform) -> bool:
    """Whether ``transform`` draws its crop offset at random (training ``short_side_crop``)."""
    return transform.mode == "short_side_crop" and transform.crop == "random"


def cached_placements(transform: VideoTransform, height: int, width: int, crops: int) -> list[Placement]:
    """The placements cached for frames of ``height x width`` (as read): for each crop offset
    (``crops`` bin centres of the random range, or the transform's fixed crop), each flip the
    transform may draw (unflipped first). Placement ``v = crop * flips + flip``."""
    if random_crop(transform):
        spare_h, spare_w = transform.spare(height, width)
        offsets = [((2 * i + 1) * spare_h // (2 * crops), (2 * i + 1) * spare_w // (2 * crops)) for i in range(crops)]
    else:
        fixed = transform.draw(height, width)
        offsets = [(fixed.top, fixed.left)]
    flips = (False, True) if transform.horizontal_flip else (False,)
    return [Placement(top, left, flip) for top, left in offsets for flip in flips]


def videos_digest(source: VideoSource) -> str:
    """A short digest of a split's video ids and lengths (which videos, in which order)."""
    digest = hashlib.sha256()
    for index in range(len(source)):
        digest.update(f"{source.video_id(index)}\t{source.num_frames(index)}\n".encode())
    return digest.hexdigest()[:16]


def data_fingerprint(identity: dict[str, Any], split: str, clips: ClipDataset) -> dict[str, Any]:
    """The data fields of a fingerprint: ``dataset`` (``identity``, e.g. module and root, plus the
    split's videos), ``split`` and ``transform`` (every field of the split's transform)."""
    dataset = {**identity, "num_videos": len(clips.source), "videos": videos_digest(clips.source)}
    return {"dataset": dataset, "split": split, "transform": dataclasses.asdict(clips.transform)}


def _differences(stored: Any, expected: Any, prefix: str) -> list[str]:
    """``"<key>: cache <a>, experiment <b>"`` for each leaf where ``stored`` and ``expected`` differ."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        keys = sorted(stored.keys() | expected.keys())
        return [line for key in keys for line in _differences(stored.get(key), expected.get(key), f"{prefix}.{key}")]
    return [] if stored == expected else [f"{prefix}: cache {stored!r}, experiment {expected!r}"]


class FeatureCache:
    """A cache written by :class:`FeatureCacheWriter`, opened for reading (memory-mapped).

    Opening checks that the folder is complete (manifest of this format and version, arrays of the
    shapes it names); :meth:`check` and :meth:`check_model` compare it with an experiment. The
    arrays are mapped on first read in each process (and dropped when pickled for a worker).

    Raises:
        FeatureCacheError: naming the folder or file, with what to do.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        rerun = f"write it with `python scripts/cache_features.py experiment=<name> cache.dir={self.directory}`"
        path = self.directory / MANIFEST
        if not self.directory.is_dir():
            raise FeatureCacheError(f"feature cache not found: {self.directory} does not exist; {rerun}")
        if not path.is_file():
            raise FeatureCacheError(f"feature cache {self.directory} is incomplete (no {MANIFEST}); {rerun}")
        manifest = read_manifest(path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise FeatureCacheError(f"{path} is not a feature cache manifest; {rerun}")
        if manifest.get("version") != VERSION:
            raise FeatureCacheError(
                f"feature cache {self.directory} has format version {manifest.get('version')}, this ocl reads "
                f"{VERSION}; {rerun}"
            )
        self.fingerprint: dict[str, Any] = manifest["fingerprint"]
        contents = manifest["contents"]
        self.has_keys: bool = contents["keys"]
        self.crops: int = contents["crops"]
        self.flips: bool = contents["flips"]
        try:
            with np.load(self.directory / INDEX_FILE) as index:
                self.frame_offsets = index["frame_offsets"].astype(np.int64)
        except (OSError, KeyError, ValueError) as error:
            raise FeatureCacheError(
                f"feature cache {self.directory}: unreadable {INDEX_FILE} ({error}); {rerun}"
            ) from error
        shape = tuple(contents["shape"])
        for name in self.array_files():
            array = self._map(name, rerun)
            if array.shape != shape or array.dtype != np.dtype(contents["dtype"]):
                raise FeatureCacheError(
                    f"feature cache {self.directory}: {name} is {array.dtype} {array.shape}, the manifest says "
                    f"{contents['dtype']} {shape}; {rerun}"
                )
        self._arrays: dict[str, np.ndarray] = {}

    def array_files(self) -> tuple[str, ...]:
        """The ``.npy`` files of this cache: features, and keys if stored."""
        return (FEATURES_FILE, KEYS_FILE) if self.has_keys else (FEATURES_FILE,)

    def _map(self, name: str, rerun: str = "") -> np.ndarray:
        """``name`` memory-mapped read-only; FeatureCacheError if it is missing or unreadable."""
        path = self.directory / name
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise FeatureCacheError(f"feature cache {self.directory}: unreadable {name} ({error}); {rerun}") from error

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}  # workers map the files themselves

    def check(self, expected: dict[str, Any]) -> None:
        """Raise FeatureCacheError naming every field of ``expected`` (``resolution``, ``encoder``,
        ``dataset``, ``split``, ``transform``) where the cache's fingerprint differs, with the values."""
        expected = json.loads(json.dumps(expected))  # as stored: tuples become lists
        differences = {
            field: _differences(self.fingerprint.get(field), value, field) for field, value in expected.items()
        }
        fields = [field for field, lines in differences.items() if lines]
        if fields:
            lines = [line for field in fields for line in differences[field]]
            shown = "; ".join(lines[:4]) + ("; ..." if len(lines) > 4 else "")
            raise FeatureCacheError(
                f"feature cache {self.directory} does not match the experiment: {', '.join(fields)} "
                f"differ{'s' if len(fields) == 1 else ''} ({shown}). Write a cache for this experiment with "
                "scripts/cache_features.py (same overrides), or train without data.feature_cache"
            )

    def check_model(self, model_fingerprint: dict[str, Any] | None, method: str) -> None:
        """Check the fingerprint of the training method's frozen encoder (``encoder``,
        ``resolution``, and ``keys``: whether it reads attention keys); None: the method has no
        frozen encoder the cache could replace."""
        if model_fingerprint is None:
            raise FeatureCacheError(
                f"data.feature_cache is set but {method} reads no frozen encoder features (VideoSAUR, SlotContrast "
                "and SlotCurri do); unset data.feature_cache"
            )
        self.check({field: model_fingerprint[field] for field in MODEL_FIELDS})
        if model_fingerprint["keys"] and not self.has_keys:
            raise FeatureCacheError(
                f"feature cache {self.directory} does not match the experiment: contents differ (no attention keys, "
                f"which {method}'s similarity loss reads). Write it with this experiment's scripts/cache_features.py"
            )

    def read(self, video: int, frame_indices: np.ndarray, placement: int) -> dict[str, torch.Tensor]:
        """``{features: [T, N, D], feature_keys?: [T, N, D]}`` of frames ``frame_indices`` of
        ``video`` at cached placement ``placement`` (in the cache's dtype)."""
        rows = self.frame_offsets[video] + np.asarray(frame_indices, dtype=np.int64)
        if not self._arrays:
            self._arrays = {name: self._map(name) for name in self.array_files()}
        item = {FEATURES: torch.from_numpy(np.ascontiguousarray(self._arrays[FEATURES_FILE][placement, rows]))}
        if self.has_keys:
            item[FEATURE_KEYS] = torch.from_numpy(np.ascontiguousarray(self._arrays[KEYS_FILE][placement, rows]))
        return item


class CachedClips(Dataset):
    """Training clips of cached features: the clips of ``clips`` with features in place of frames.

    :meth:`sample` draws as the recipe: the clip's frames with :meth:`ClipDataset.clip_frames`,
    then (random ``short_side_crop``) one of the cached crops uniformly, then (``horizontal_flip``)
    the flip with probability 1/2; without an ``rng``: the first frames, crop ``crops // 2``
    (the centre one for odd ``crops``), unflipped. Items: ``{"features": [T, N, D],
    "feature_keys"?: [T, N, D], "meta": {"video_id", "frame_indices"}}`` (no frames, no masks).
    """

    def __init__(self, clips: ClipDataset, cache: FeatureCache) -> None:
        self.clips = clips
        self.cache = cache
        self.random_crop = random_crop(clips.transform)

    def __len__(self) -> int:
        return len(self.clips)

    def placement(self, rng: np.random.Generator | None) -> int:
        """The cached placement of one clip (see the class docs)."""
        flips = 2 if self.cache.flips else 1
        if rng is None:
            return (self.cache.crops // 2) * flips
        crop = int(rng.integers(self.cache.crops)) if self.random_crop else 0
        flip = self.cache.flips and bool(rng.random() < 0.5)
        return crop * flips + int(flip)

    def sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Video ``index`` as a clip of cached features (see the class docs)."""
        frame_indices = self.clips.clip_frames(index, rng)
        item: dict[str, Any] = self.cache.read(index, frame_indices, self.placement(rng))
        item[META] = {"video_id": self.clips.source.video_id(index), "frame_indices": torch.from_numpy(frame_indices)}
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index, None)


CACHE_FILES = (MANIFEST, FEATURES_FILE, KEYS_FILE, INDEX_FILE, f".{INDEX_FILE}.tmp", f".{MANIFEST}.tmp")
"""The files a writer creates in its folder (the last two: :func:`~ocl.data.files.write_atomically`'s)."""


def describe_cache(directory: Path) -> str:
    """What the manifest in ``directory`` says the cache holds, e.g. ``experiment videosaur_movi_c,
    split train, encoder vit_base_patch8_224 block 12 (weights sha256 1a2b3c4d...), float16``;
    ``an unreadable manifest`` if it cannot be read."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        fingerprint, contents = manifest["fingerprint"], manifest["contents"]
        parts = [f"experiment {contents['experiment']}"] if "experiment" in contents else []
        if "split" in fingerprint:
            parts.append(f"split {fingerprint['split']}")
        encoder = fingerprint.get("encoder")
        if isinstance(encoder, dict) and encoder.get("model_name"):
            name = f"encoder {encoder['model_name']}" + (f" block {encoder['block']}" if "block" in encoder else "")
            digest = encoder.get("weights_sha256")
            parts.append(name + (f" (weights sha256 {str(digest)[:8]}...)" if digest else ""))
        if "dtype" in contents:
            parts.append(str(contents["dtype"]))
    except (OSError, ValueError, KeyError, TypeError):
        return "an unreadable manifest"
    return ", ".join(parts) if parts else "a manifest"


def refuse_existing_cache(directory: Path) -> None:
    """Raise FeatureCacheError if ``directory`` holds a feature cache, complete (a manifest: saying
    what it holds) or interrupted (any of its files), so that writing does not replace it silently."""
    if not directory.is_dir():
        return
    found = [name for name in CACHE_FILES if (directory / name).exists()]
    if not found:
        return
    if MANIFEST in found:
        held = f"already holds a feature cache ({describe_cache(directory)})"
    else:
        held = f"already holds an incomplete feature cache ({', '.join(found)}, no {MANIFEST}: an interrupted write?)"
    raise FeatureCacheError(
        f"feature cache folder {directory} {held}; to replace it, rerun with cache.overwrite=true, "
        "or choose another cache.dir="
    )


class FeatureCacheWriter:
    """Writes the cache of one split: call :meth:`write` for every video, then :meth:`finish`.

    Args:
        directory: the cache folder (created). A folder already holding a cache, complete (a
            manifest) or interrupted (any of its files), is refused unless ``overwrite``.
        clips: the split as its data module reads it (source and transform).
        fingerprint: the full fingerprint (:data:`MODEL_FIELDS` and :data:`DATA_FIELDS`).
        keys: store the attention keys too.
        crops: crop offsets cached for a random ``short_side_crop`` (ignored otherwise: one).
        dtype: ``float16`` (the default of the script) or ``float32`` (exact parity with the
            uncached path, twice the disk).
        tokens, dim: ``N`` and ``D`` of the encoder's output.
        details: extra manifest entries (e.g. the command and the encoder's precision).
        overwrite: replace a cache already in ``directory`` (its manifest is removed first, so an
            interrupted rewrite leaves an incomplete cache, never a stale one).

    Raises:
        FeatureCacheError: ``directory`` already holds a cache (and not ``overwrite``) or is a file.
    """

    def __init__(
        self,
        directory: str | Path,
        clips: ClipDataset,
        fingerprint: dict[str, Any],
        keys: bool,
        crops: int,
        dtype: str,
        tokens: int,
        dim: int,
        details: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown cache dtype {dtype!r}; choose one of {list(DTYPES)}")
        if crops < 1:
            raise ValueError(f"crops must be >= 1, got {crops}")
        missing = [field for field in (*MODEL_FIELDS, *DATA_FIELDS) if field not in fingerprint]
        if missing:
            raise ValueError(f"the fingerprint lacks {missing}")
        self.directory = Path(directory).expanduser()
        if not overwrite:
            refuse_existing_cache(self.directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise FeatureCacheError(f"feature cache folder {self.directory} is a file; choose another cache.dir=")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / MANIFEST).unlink(missing_ok=True)
        if not keys:
            (self.directory / KEYS_FILE).unlink(missing_ok=True)  # a replaced cache's keys
        self.clips = clips
        self.fingerprint = fingerprint
        self.keys = keys
        self.crops = crops if random_crop(clips.transform) else 1
        self.flips = clips.transform.horizontal_flip
        self.dtype = dtype
        self.details = details or {}
        source = clips.source
        lengths = [source.num_frames(index) for index in range(len(source))]
        self.frame_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        variants = self.crops * (2 if self.flips else 1)
        self.shape = (variants, int(self.frame_offsets[-1]), tokens, dim)
        self.placements = np.zeros((len(source), variants, 3), dtype=np.int64)
        names = (FEATURES_FILE, KEYS_FILE) if keys else (FEATURES_FILE,)
        self.arrays = {
            name: np.lib.format.open_memmap(self.directory / name, mode="w+", dtype=dtype, shape=self.shape)
            for name in names
        }
        self.frame_size = tuple(fingerprint["resolution"]["image_size"])

    def __len__(self) -> int:
        """Videos of the split."""
        return len(self.clips.source)

    @property
    def nbytes(self) -> int:
        """Size of the arrays on disk: ``placements * frames * N * D * bytes per value * arrays``."""
        return sum(array.nbytes for array in self.arrays.values())

    def write(self, video: int, encode: Encode) -> None:
        """Encode every frame of ``video`` at every cached placement and store the features (the
        frames read and transformed as :class:`~ocl.data.clips.ClipDataset` reads a training clip)."""
        length = int(self.frame_offsets[video + 1] - self.frame_offsets[video])
        transform = self.clips.transform
        clip = self.clips.source.read_clip(video, np.arange(length), labels=False, decode_size=transform.decode_size)
        placements = cached_placements(transform, *clip.size, self.crops)
        rendered = torch.cat([transform.apply(clip.frames, None, placement, clip.size)[0] for placement in placements])
        if tuple(rendered.shape[-2:]) != self.frame_size:
            raise FeatureCacheError(
                f"the split's transform gives {tuple(rendered.shape[-2:])} frames, the encoder's resolution is "
                f"{self.frame_size}: set the transform's size to the encoder's image_size"
            )
        features, keys = encode(rendered)
        start, stop = self.frame_offsets[video], self.frame_offsets[video + 1]
        for name, values in ((FEATURES_FILE, features), (KEYS_FILE, keys)):
            if name in self.arrays:
                stored = values.detach().to("cpu", getattr(torch, self.dtype)).numpy()
                self.arrays[name][:, start:stop] = stored.reshape(len(placements), length, *self.shape[2:])
        self.placements[video] = [(p.top, p.left, int(p.flip)) for p in placements]

    def finish(self) -> Path:
        """Flush the arrays, write the index and, last, the manifest; -> the manifest's path."""
        for array in self.arrays.values():
            array.flush()
        source = self.clips.source
        index = {
            "video_ids": np.array([source.video_id(i) for i in range(len(source))]),
            "frame_offsets": self.frame_offsets,
            "placements": self.placements,
        }
        buffer = io.BytesIO()
        np.savez(buffer, **index)
        write_atomically(self.directory / INDEX_FILE, lambda stream: stream.write(buffer.getvalue()))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "contents": {
                "keys": self.keys,
                "dtype": self.dtype,
                "shape": list(self.shape),
                "crops": self.crops,
                "flips": self.flips,
                **self.details,
            },
        }
        path = self.directory / MANIFEST
        write_atomically(path, lambda stream: stream.write(json.dumps(manifest, indent=1).encode()))
        return path
