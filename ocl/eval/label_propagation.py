"""Semi-supervised label propagation on frozen features: the CRW protocol for DAVIS-2017.

Given per-frame feature maps of a video and the first frame's labels, every later frame's
labels are predicted by attention to context frames, as in CRW (Jabri et al., NeurIPS 2020,
``github.com/ajabri/videowalk``: ``code/test.py``, ``code/utils/test_utils.py``,
``code/utils/__init__.py`` ``MaskedAttention``, ``code/data/vos.py``) and in SMTC (Qian et al.,
ICCV 2023, ``github.com/shvdiwnkozbw/SMTC``, which runs CRW's code in ``src/eval_prop.py``):

* **Features** are L2-normalised over channels; affinity = dot product (cosine similarity).
* **Context** of frame ``t``: the first frame with its ground truth (CRW's "long memory"), plus
  the ``n_context`` previous frames ``t - n_context .. t - 1`` with their predicted soft labels.
  Indices before ``0`` are the first frame again, with its ground truth: CRW pads the start of
  the video with ``n_context`` copies of the first frame (``VOSDataset.make_paths``), so every
  frame has exactly ``1 + n_context`` context frames. Only these frames are ever held.
* **Radius**: a context position of one of the ``n_context`` *previous* frames is used only
  if its Euclidean distance to the target position on the feature grid, in grid cells, is
  strictly below ``radius`` (a disk: ``MaskedAttention.make``, ``D < radius``). The first
  frame's long-memory copy is not restricted: CRW adds the mask to ``A[0, :, len(long_mem):]``
  only (the padding copies of the first frame are restricted like any previous frame).
* **Top-k**: the ``topk`` largest affinities per target position over all context positions
  of all context frames together; their softmax at ``temperature`` weights the context labels.
* **Labels** at feature resolution (:func:`downsample_labels`): the one-hot map (void as
  background) resized bilinearly without antialiasing, as CRW's ``cv2.resize`` of the one-hot
  map does (OpenCV's default ``INTER_LINEAR``, half-pixel centres). Predicted soft labels are
  stored unnormalised (they stay distributions, being convex combinations of distributions).
* **Output**: each frame's soft labels are resized bilinearly to the image size and argmaxed
  (CRW's ``dump_predictions``); channel ``m`` is object id ``m``. Frame 0 is the ground truth
  (CRW writes the argmax of its labels at feature resolution, resized back; the DAVIS
  semi-supervised protocol does not score frame 0, so the scores are the same).
* **Precision**: float32, or float64 for float64 features (``tests/golden_checks/smtc.py``
  compares the soft labels with the authors' code's).

The radius is in cells of the grid the features are given on. SMTC's two settings
(``configs/eval/propagation``) differ in that grid: the stride-8 setting (commit
``4040186``) upsamples its ViT-S/16 features trilinearly to ``floor(H / 8) x floor(W / 8)``
before normalising (``mapScale = 320 // 40``), so its radius 40 is 40 cells of 8 px; the
stride-16 setting (commit ``d68a7c3``) resizes the frames to multiples of 16 and keeps the
native ``floor(H / 16) x floor(W / 16)`` grid, so its radius 7 is 7 cells of 16 px.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ocl.contracts.batch import IGNORE_ID
from ocl.metrics.protocol import hard_segmentation
from ocl.utils.precision import at_least_float32

AFFINITY_ELEMENTS = 1 << 24
"""Upper bound on the elements of one block of affinities (target positions x positions of
one context frame): 64 MB in fp32, whatever the video length or resolution."""

Context = tuple[torch.Tensor, torch.Tensor]
"""One context frame: L2-normalised features ``[D, h, w]`` and soft labels ``[C, h, w]``."""


@dataclass(frozen=True)
class PropagationSettings:
    """Hyper-parameters of the propagation (see the module docs).

    Attributes:
        topk: context positions kept per target position (over all context frames together).
        radius: previous-frame context positions must lie strictly closer than this to the
            target position, in cells of the feature grid (Euclidean distance).
        temperature: softmax temperature of the kept affinities.
        n_context: previous frames in the context, besides the first frame.
        feature_stride: pixels per cell of the feature grid the radius is counted on (16: a
            ViT/16's own grid; 8: its features upsampled to ``H / 8 x W / 8``); used by the
            evaluation run that computes the features (:mod:`ocl.eval.propagation_run`).
    """

    topk: int
    radius: float
    temperature: float
    n_context: int
    feature_stride: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {self.topk!r}")
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0 (feature-grid cells), got {self.radius!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.n_context, bool) or not isinstance(self.n_context, int) or self.n_context < 0:
            raise ValueError(f"n_context must be an integer >= 0, got {self.n_context!r}")
        if isinstance(self.feature_stride, bool) or not isinstance(self.feature_stride, int) or self.feature_stride < 1:
            raise ValueError(f"feature_stride must be an integer >= 1, got {self.feature_stride!r}")


def _check_labels(labels: torch.Tensor) -> None:
    """ValueError unless ``labels`` is an integer ``[H, W]`` map of ids ``>= 0`` or ``IGNORE_ID``."""
    if labels.ndim != 2 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer [H, W] map, got {labels.dtype} {tuple(labels.shape)}")
    if bool((labels < IGNORE_ID).any()):
        raise ValueError(f"labels must be >= 0 or IGNORE_ID ({IGNORE_ID}), got {int(labels.min())}")


def downsample_labels(labels: torch.Tensor, size: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot labels at feature resolution, as CRW brings them there.

    Void (``IGNORE_ID``) pixels count as background. The one-hot map is resized bilinearly
    (``align_corners=False``, no antialiasing: OpenCV's ``INTER_LINEAR``), so a cell takes the
    label mix of the pixels around its centre; at stride 8 the two central pixels of each axis.

    Args:
        labels: int ``[H, W]``: ``0`` background, ``1..M`` objects, ``IGNORE_ID`` void.
        size: ``(h, w)`` of the feature grid.
        dtype: of the result.

    Returns:
        ``[M + 1, h, w]``: channel ``m`` is id ``m``; every cell sums to 1.
    """
    _check_labels(labels)
    ids = labels.long().clamp(min=0)
    onehot = F.one_hot(ids, int(ids.max()) + 1).permute(2, 0, 1).to(dtype)
    return F.interpolate(onehot[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]


def _normalise(frame: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Features ``[D, h, w]`` on ``device`` (float32, or float64 if given), L2-normalised over ``D``."""
    return F.normalize(at_least_float32(frame.to(device)), dim=0)


def _grid_cells(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 row and column ``[h * w]`` of every cell of the grid, row-major."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.int32),
        torch.arange(width, device=device, dtype=torch.int32),
        indexing="ij",
    )
    return rows.flatten(), cols.flatten()


def _top_matches(
    queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, k: int, outside: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best affinities of each query in one context frame and the labels of those positions.

    Args:
        queries: ``[B, D]``; keys: ``[D, hw]``; labels: ``[hw, C]``.
        outside: bool ``[B, hw]`` positions excluded (affinity ``-inf``), or None.

    Returns:
        ``[B, k]`` affinities and ``[B, k, C]`` labels.
    """
    affinity = queries @ keys
    if outside is not None:
        affinity = affinity.masked_fill(outside, float("-inf"))
    values, positions = affinity.topk(k, dim=1)
    return values, labels[positions]


def _predict_frame(
    query: torch.Tensor,
    first: Context,
    previous: Sequence[Context],
    settings: PropagationSettings,
) -> torch.Tensor:
    """Soft labels of one frame from its context frames.

    The top-k over all context frames is computed frame by frame: the ``topk`` best of each
    frame are merged into a running top-k (the top-k of a union is the top-k of the per-part
    top-ks), over blocks of target positions of at most :data:`AFFINITY_ELEMENTS` affinities.

    Args:
        query: L2-normalised features ``[D, h, w]`` of the frame.
        first: the first frame and its ground truth; not restricted by the radius.
        previous: the ``n_context`` previous frames (oldest first), restricted by the radius.
        settings: see :class:`PropagationSettings`.

    Returns:
        ``[C, h, w]`` soft labels in the dtype of ``query``.
    """
    _, height, width = query.shape
    num_cells = height * width
    queries = query.flatten(1).T  # [hw, D]
    rows, cols = _grid_cells(height, width, query.device)
    first_keys, first_labels = first[0].flatten(1), first[1].flatten(1).T  # [D, hw], [hw, C]
    previous_frames = [(keys.flatten(1), labels.flatten(1).T) for keys, labels in previous]
    per_frame = min(settings.topk, num_cells)
    block = max(1, AFFINITY_ELEMENTS // num_cells)
    out = torch.empty(num_cells, first_labels.shape[1], device=query.device, dtype=query.dtype)
    for start in range(0, num_cells, block):
        stop = min(start + block, num_cells)
        block_queries = queries[start:stop]
        squared_distances = (rows[start:stop, None] - rows).square() + (cols[start:stop, None] - cols).square()
        outside = squared_distances >= settings.radius**2  # [B, hw]
        best_values, best_labels = _top_matches(block_queries, first_keys, first_labels, per_frame, None)
        for keys, labels in previous_frames:
            values, matched = _top_matches(block_queries, keys, labels, per_frame, outside)
            values = torch.cat([best_values, values], dim=1)
            candidates = torch.cat([best_labels, matched], dim=1)
            best_values, kept = values.topk(min(settings.topk, values.shape[1]), dim=1)
            best_labels = candidates.gather(1, kept[..., None].expand(-1, -1, candidates.shape[2]))
        weights = torch.softmax(best_values / settings.temperature, dim=1)  # masked (-inf) entries weigh 0
        out[start:stop] = torch.einsum("bk,bkc->bc", weights, best_labels)
    return out.T.reshape(-1, height, width)


def hard_labels(soft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int64 ``[H, W]``: soft labels ``[C, h, w]`` resized bilinearly to ``size``, argmax (ties: lowest id;
    the metrics' :func:`~ocl.metrics.protocol.hard_segmentation`)."""
    return hard_segmentation(soft[None, None], size)[0, 0]


def _check_inputs(features: torch.Tensor, first_labels: torch.Tensor, settings: PropagationSettings) -> None:
    """ValueError for features that are not ``[T >= 1, D, h, w]`` floats, bad labels, or a top-k
    larger than the context."""
    if features.ndim != 4 or not features.dtype.is_floating_point:
        raise ValueError(f"features must be a float [T, D, h, w] tensor, got {features.dtype} {tuple(features.shape)}")
    _check_labels(first_labels)
    num_frames, _, height, width = features.shape
    if num_frames == 0:
        raise ValueError("features must hold at least one frame")
    context_cells = (1 + settings.n_context) * height * width
    if settings.topk > context_cells:
        raise ValueError(
            f"topk={settings.topk} exceeds the {context_cells} context positions "
            f"((1 + n_context={settings.n_context}) frames of {height}x{width})"
        )


def soft_label_stream(
    features: torch.Tensor,
    first_labels: torch.Tensor,
    settings: PropagationSettings,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Soft labels ``[C, h, w]`` of every frame in order (see the module docs): frame 0's are its
    labels at feature resolution (:func:`downsample_labels`), later frames' are propagated.

    Frames are processed one at a time; only the first frame and the ``n_context`` previous
    frames (features and soft labels at feature resolution) are kept.

    Args:
        features: ``[T, D, h, w]`` features of the frames (float32, or float64 if given).
        first_labels: int ``[H, W]`` labels of frame 0 (``IGNORE_ID`` void propagates as background).
        settings: see :class:`PropagationSettings`.
        device: where the propagation runs (frames are moved there one by one); defaults to
            ``features.device``.
    """
    _check_inputs(features, first_labels, settings)
    device = features.device if device is None else torch.device(device)
    query = _normalise(features[0], device)
    first = (query, downsample_labels(first_labels, tuple(features.shape[-2:]), query.dtype).to(device))
    yield first[1]
    previous: deque[Context] = deque([first] * settings.n_context, maxlen=settings.n_context)
    for frame in features[1:]:
        query = _normalise(frame, device)
        soft = _predict_frame(query, first, list(previous), settings)
        previous.append((query, soft))
        yield soft


def propagate_labels(
    features: torch.Tensor,
    first_labels: torch.Tensor,
    settings: PropagationSettings,
    output_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Labels of every frame of a video, propagated from the first frame's (see the module docs
    and :func:`soft_label_stream`).

    Args:
        features: ``[T, D, h, w]`` features of the frames (float32, or float64 if given).
        first_labels: int ``[H, W]`` labels of frame 0: ``0`` background, ``1..M`` objects,
            ``IGNORE_ID`` void (propagated as background).
        settings: see :class:`PropagationSettings`.
        output_size: ``(H_out, W_out)`` of the predictions; defaults to ``first_labels``' size
            (the first frame's labels are resized to it with nearest-neighbour if it differs).
        device: where the propagation runs (frames are moved there one by one); defaults to
            ``features.device``. The predictions are returned on ``first_labels.device``.

    Returns:
        int64 ``[T, H_out, W_out]`` ids in ``0..M``: frame 0 holds ``first_labels`` with void
        set to background, later frames the propagated labels.
    """
    _check_inputs(features, first_labels, settings)
    size = tuple(first_labels.shape) if output_size is None else tuple(output_size)
    out = torch.empty(len(features), *size, dtype=torch.int64, device=first_labels.device)
    first_ids = first_labels.long().clamp(min=0)
    if tuple(first_ids.shape) != size:
        first_ids = F.interpolate(first_ids[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    out[0] = first_ids
    stream = soft_label_stream(features, first_labels, settings, device)
    next(stream)  # frame 0: the ground truth above
    for t, soft in enumerate(stream, start=1):
        out[t] = hard_labels(soft, size).to(out.device)
    return out


def _encode(
    encoder: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """``encoder(frames)`` run on ``device``, returned on ``frames.device``; ValueError for a bad output shape."""
    features = encoder(frames.to(device))
    if features.ndim != 4 or len(features) != len(frames):
        raise ValueError(
            f"the encoder must map [n, 3, H, W] to [n, D, h, w]; got {tuple(features.shape)} for {tuple(frames.shape)}"
        )
    return features.to(frames.device)


def video_features(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    video: torch.Tensor,
    chunk: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Features of all frames of a video from a frozen encoder, ``chunk`` frames at a time.

    Runs without gradients. Each chunk is moved to ``device`` and its features back to
    ``video.device``, so the encoder's device only ever holds one chunk.

    Args:
        encoder: maps frames ``[n, 3, H, W]`` to features ``[n, D, h, w]``.
        video: ``[T, 3, H, W]`` frames, prepared as the encoder expects them.
        chunk: frames per encoder call (``>= 1``).
        device: where the encoder runs; defaults to ``video.device``.

    Returns:
        ``[T, D, h, w]`` features on ``video.device``, in the encoder's dtype.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    if video.ndim != 4 or video.shape[1] != 3 or len(video) == 0:
        raise ValueError(f"video must be a non-empty [T, 3, H, W] tensor, got {tuple(video.shape)}")
    device = video.device if device is None else torch.device(device)
    with torch.no_grad():
        first = _encode(encoder, video[:chunk], device)
        out = torch.empty(len(video), *first.shape[1:], dtype=first.dtype, device=video.device)
        out[: len(first)] = first
        for start in range(chunk, len(video), chunk):
            out[start : start + chunk] = _encode(encoder, video[start : start + chunk], device)
    return out
