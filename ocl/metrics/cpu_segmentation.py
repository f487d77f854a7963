"""The evaluation protocol's resize + argmax + count, fused into compiled loops for the CPU.

:func:`~ocl.metrics.protocol.hard_segmentation` resizes ``[K, h, w]`` soft masks bilinearly to the
label size and takes the argmax over slots; on the CPU that materialises ``K * H * W`` floats per
frame (11 slots at 128² is 16 times the labels) and dominates the evaluation. This module gives
the same label maps without the resized stack:

1. **Winners.** For every low-resolution pixel, the slot that beats every other by more than
   ``MARGIN * (1 + |top|)``, else "none".
2. **Cells.** An output pixel is a convex combination of the four input pixels around it (its
   cell); a slot that wins at all four corners wins everywhere inside, because each difference
   of two slots is a convex combination of positive corner differences. Such cells take their
   label without any interpolation. For the other cells, the candidates are the slots whose
   largest corner value reaches the largest smallest-corner value of any slot (no other slot can
   win anywhere in the cell); their corners are kept.
3. **Pixels.** Each undecided cell interpolates its candidates only over its block of output
   pixels (in float64, with the float32 weights PyTorch computes); decided cells are copied.
   With labels, the per-frame contingency table is counted afterwards, run-length along rows.
4. **Exactness.** Where the two best candidates of a pixel are within the margin, float32
   rounding in ``F.interpolate`` could order them differently: those pixels are redone with
   ``F.interpolate`` + argmax over the candidate slots of their cells (each channel is resized
   independently, so the values are bit-identical to the full stack's), and the label maps equal
   the reference bit for bit. The margin (``1e-5`` relative) is ~20 times the rounding error of a
   float32 bilinear combination. Masks whose argmax flips between most neighbouring pixels (over
   :data:`MAX_UNDECIDED_SHARE` of the cells undecided) go to ``F.interpolate`` directly: there,
   step 3 would cost more.

Numba compiles the loops once per input dtype and caches them on disk (``cache=True``); they run
on one thread, so the results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

MARGIN = 1e-5
"""Relative gap between two slots below which a pixel is redone exactly with ``F.interpolate``."""

MAX_UNDECIDED_SHARE = 0.4
"""Above this share of undecided cells (masks whose argmax flips between neighbouring pixels)
per-pixel interpolation loses to ``F.interpolate``, which is then used for all frames."""


@njit(cache=True, nogil=True)
def _winners(soft: np.ndarray, margin: float, winners: np.ndarray) -> None:
    """``winners[n, r, c]``: the slot ahead of all others by the margin at input pixel ``(r, c)``, or -1.

    Args:
        soft: float32 ``[N, K, h, w]``.
        margin: relative margin.
        winners: int8 ``[N, h, w]``, written.
    """
    frames, slots, h, w = soft.shape
    best = np.empty((h, w), np.float32)
    second = np.empty((h, w), np.float32)
    arg = np.empty((h, w), np.int8)
    for n in range(frames):
        best[:] = soft[n, 0]
        second[:] = -np.inf
        arg[:] = 0
        for k in range(1, slots):
            plane = soft[n, k]
            for r in range(h):
                for c in range(w):
                    value = plane[r, c]
                    if value > best[r, c]:
                        second[r, c] = best[r, c]
                        best[r, c] = value
                        arg[r, c] = k
                    elif value > second[r, c]:
                        second[r, c] = value
        for r in range(h):
            for c in range(w):
                top = best[r, c]
                winners[n, r, c] = arg[r, c] if top - second[r, c] > margin * (1.0 + abs(top)) else -1


@njit(cache=True, nogil=True)
def _cells(
    soft: np.ndarray,
    winners: np.ndarray,
    margin: float,
    cell_labels: np.ndarray,
    candidates: np.ndarray,
    num_candidates: np.ndarray,
) -> int:
    """Label of every cell whose four corners share a winner; candidate slots of the others.

    The cell ``(r, c)`` has corners ``r, min(r + 1, h - 1)`` x ``c, min(c + 1, w - 1)``.

    Args:
        soft: float32 ``[N, K, h, w]``.
        winners: int8 ``[N, h, w]`` from :func:`_winners`.
        margin: relative margin.
        cell_labels: int8 ``[N, h, w]``, written: the cell's slot, or -1 when undecided.
        candidates: int8 ``[N, h, w, K]``, written for undecided cells: candidate slots, ascending.
        num_candidates: int8 ``[N, h, w]``, written for undecided cells.

    Returns:
        The number of undecided cells.
    """
    frames, slots, h, w = soft.shape
    undecided = 0
    for n in range(frames):
        frame = soft[n]
        for r in range(h):
            r1 = min(r + 1, h - 1)
            for c in range(w):
                c1 = min(c + 1, w - 1)
                k = winners[n, r, c]
                if k >= 0 and winners[n, r, c1] == k and winners[n, r1, c] == k and winners[n, r1, c1] == k:
                    cell_labels[n, r, c] = k
                    continue
                cell_labels[n, r, c] = -1
                undecided += 1
                floor = -np.inf
                for s in range(slots):
                    low = min(min(frame[s, r, c], frame[s, r, c1]), min(frame[s, r1, c], frame[s, r1, c1]))
                    floor = max(floor, low)
                bound = floor - margin * (1.0 + abs(floor))
                count = 0
                for s in range(slots):
                    high = max(max(frame[s, r, c], frame[s, r, c1]), max(frame[s, r1, c], frame[s, r1, c1]))
                    if high >= bound:
                        candidates[n, r, c, count] = s
                        count += 1
                num_candidates[n, r, c] = count
    return undecided


@njit(cache=True, nogil=True)
def _labels(
    soft: np.ndarray,
    cell_labels: np.ndarray,
    candidates: np.ndarray,
    num_candidates: np.ndarray,
    rows: tuple,
    cols: tuple,
    margin: float,
    labels: np.ndarray,
    redo_slots: np.ndarray,
) -> None:
    """Write every output pixel's slot; -1 where float32 rounding could change the winner.

    Decided cells are copied along each output row; then every undecided cell interpolates its
    candidates' corners over its block of output pixels (the pixels whose top-left source pixel
    is the cell's corner).

    Args:
        soft: float32 ``[N, K, h, w]``.
        cell_labels, candidates, num_candidates: from :func:`_cells`.
        rows, cols: ``(i0, weight0, weight1)`` of the output rows / columns (see
            :func:`_source_pixels`).
        margin: relative margin.
        labels: int8 ``[N, H, W]``, written.
        redo_slots: bool ``[N, K]``, set for the candidates of every pixel left at -1 (its two
            best slots are within the margin, or its values are NaN).
    """
    frames, slots, h, w = soft.shape
    height, width = labels.shape[1], labels.shape[2]
    row0, row_weight0, row_weight1 = rows
    col0, col_weight0, col_weight1 = cols
    row_start, row_stop = _blocks(row0, h)
    col_start, col_stop = _blocks(col0, w)
    corners = np.empty((slots, 4), np.float64)
    left = np.empty(slots, np.float64)
    right = np.empty(slots, np.float64)
    for n in range(frames):
        frame = soft[n]
        cells = cell_labels[n]
        for y in range(height):
            cell_row = cells[row0[y]]
            label_row = labels[n, y]
            for x in range(width):
                label_row[x] = cell_row[col0[x]]
        for r in range(h):
            r1 = min(r + 1, h - 1)
            for c in range(w):
                if cells[r, c] >= 0 or row_start[r] == row_stop[r] or col_start[c] == col_stop[c]:
                    continue
                c1 = min(c + 1, w - 1)
                count = num_candidates[n, r, c]
                for i in range(count):
                    s = candidates[n, r, c, i]
                    corners[i, 0] = frame[s, r, c]
                    corners[i, 1] = frame[s, r, c1]
                    corners[i, 2] = frame[s, r1, c]
                    corners[i, 3] = frame[s, r1, c1]
                tied = False
                for y in range(row_start[r], row_stop[r]):
                    a0 = row_weight0[y]
                    a1 = row_weight1[y]
                    for i in range(count):  # the candidates' values down the cell's two columns at row y
                        left[i] = a0 * corners[i, 0] + a1 * corners[i, 2]
                        right[i] = a0 * corners[i, 1] + a1 * corners[i, 3]
                    label_row = labels[n, y]
                    if count == 2:  # most boundary cells: no loop, no data-dependent branch
                        first = candidates[n, r, c, 0]
                        other = candidates[n, r, c, 1]
                        for x in range(col_start[c], col_stop[c]):
                            value0 = col_weight0[x] * left[0] + col_weight1[x] * right[0]
                            value1 = col_weight0[x] * left[1] + col_weight1[x] * right[1]
                            best = max(value0, value1)
                            clear = abs(value0 - value1) > margin * (1.0 + abs(best))
                            label = first if value0 > value1 else other
                            label_row[x] = label if clear else -1
                            tied |= not clear
                        continue
                    for x in range(col_start[c], col_stop[c]):
                        b0 = col_weight0[x]
                        b1 = col_weight1[x]
                        best = -np.inf
                        second = -np.inf
                        winner = -1
                        for i in range(count):
                            value = b0 * left[i] + b1 * right[i]
                            if value > best:
                                second = best
                                best = value
                                winner = i
                            elif value > second:
                                second = value
                        # Written so that NaN (or no candidate) also counts as a tie.
                        if best - second > margin * (1.0 + abs(best)):
                            label_row[x] = candidates[n, r, c, winner]
                        else:
                            label_row[x] = -1
                            tied = True
                if tied:
                    for i in range(count):
                        redo_slots[n, candidates[n, r, c, i]] = True


@njit(cache=True, nogil=True)
def _blocks(source: np.ndarray, size_in: int) -> tuple[np.ndarray, np.ndarray]:
    """``(start, stop)``, each ``[size_in]``: the output indices ``j`` with ``source[j] == i`` are ``start[i]:stop[i]``.

    ``source`` (an ``i0`` of :func:`_source_pixels`) is non-decreasing, so each range is contiguous.
    """
    start = np.zeros(size_in, np.int64)
    stop = np.zeros(size_in, np.int64)
    for j in range(len(source) - 1, -1, -1):
        start[source[j]] = j
    for j in range(len(source)):
        stop[source[j]] = j + 1
    return start, stop


@njit(cache=True, nogil=True)
def _count(labels: np.ndarray, true: np.ndarray, table: np.ndarray) -> None:
    """``table[n, label, true] += 1`` for every pixel; negative true ids are skipped.

    Runs of equal (label, true) pairs along a row are added at once: the maps are piecewise
    constant, and one increment per pixel would serialise on the same counter.

    Args:
        labels: int8 ``[N, H, W]``.
        true: integer ``[N, H, W]``.
        table: int64 ``[N, K, M + 1]``, incremented.
    """
    frames, height, width = labels.shape
    for n in range(frames):
        counts = table[n]
        for y in range(height):
            label_row = labels[n, y]
            true_row = true[n, y]
            run_label = 0
            run_true = -1
            run = 0
            for x in range(width):
                label = label_row[x]
                value = true_row[x]
                if label == run_label and value == run_true:
                    run += 1
                    continue
                if run_true >= 0:
                    counts[run_label, run_true] += run
                run_label = label
                run_true = value
                run = 1
            if run_true >= 0:
                counts[run_label, run_true] += run


def _source_pixels(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input pixels and weights of bilinear resizing with ``align_corners=False``, as PyTorch computes them.

    Returns:
        ``(i0, weight0, weight1)``, each ``[size_out]``: output pixel ``j`` is
        ``weight0[j] * in[i0[j]] + weight1[j] * in[i1]`` with ``i1 = min(i0[j] + 1, size_in - 1)``
        (weights in float32 cast to float64).
    """
    scale = torch.tensor(size_in, dtype=torch.float32) / size_out
    source = ((torch.arange(size_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = source.long().clamp_max(size_in - 1)
    weight1 = (source - i0).clamp(0, 1)
    return i0.numpy(), (1 - weight1).double().numpy(), weight1.double().numpy()


def _reference_labels(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int64 ``[N, H, W]``: ``F.interpolate`` (bilinear) + first argmax over slots of float32 ``[N, K, h, w]``."""
    resized = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    return resized.max(dim=1).indices


def _redo_ties(frame: torch.Tensor, size: tuple[int, int], slots: torch.Tensor, labels: torch.Tensor) -> None:
    """Fill the -1 pixels of ``labels`` (int8 ``[H, W]``, in place) as ``F.interpolate`` + argmax would.

    Only the ``slots`` (bool ``[K]``) that can win at those pixels are resized: each channel is
    resized on its own, so their values are bit-identical to the full stack's, and the others are
    below them by more than the margin.
    """
    slot_ids = slots.nonzero().squeeze(1)
    winners = slot_ids[_reference_labels(frame[slot_ids].unsqueeze(0), size)[0]]
    tied = labels < 0
    labels[tied] = winners[tied].to(torch.int8)


MAX_SLOTS = 127
"""Most slots :func:`segment_and_count` takes (ids are int8); :mod:`ocl.metrics.protocol` resizes more in torch."""


def segment_and_count(
    frames: torch.Tensor, size: tuple[int, int], true_ids: torch.Tensor | None = None, num_true: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Slot ids of the resized soft masks and, if labels are given, the per-frame contingency tables.

    Args:
        frames: ``[N, K, h, w]`` soft masks on the CPU (any float dtype; compared in float32).
        size: ``(H, W)`` of the output.
        true_ids: optional integer ``[N, H, W]`` true ids ``0..num_true - 1``; negative ids are not counted.
        num_true: number of true-id columns of the table.

    Returns:
        int8 ``[N, H, W]`` slot ids in ``0..K-1`` (equal to ``F.interpolate`` + argmax), and int64
        ``[N, K, num_true]`` counts (``None`` without ``true_ids``).
    """
    n, k, h, w = frames.shape
    if k > MAX_SLOTS:
        raise ValueError(f"the CPU segmentation kernel stores slot ids as int8: at most {MAX_SLOTS} slots, got {k}")
    soft = frames.detach().float().contiguous()
    soft_np = soft.numpy()
    winners = np.empty((n, h, w), np.int8)
    _winners(soft_np, MARGIN, winners)
    cell_labels = np.empty((n, h, w), np.int8)
    candidates = np.empty((n, h, w, k), np.int8)
    num_candidates = np.zeros((n, h, w), np.int8)
    undecided = _cells(soft_np, winners, MARGIN, cell_labels, candidates, num_candidates)
    if undecided > MAX_UNDECIDED_SHARE * cell_labels.size:
        labels = np.concatenate([_reference_labels(chunk, size).to(torch.int8).numpy() for chunk in soft.split(16)])
    else:
        labels = np.empty((n, *size), np.int8)
        redo_slots = np.zeros((n, k), np.bool_)
        rows, cols = _source_pixels(h, size[0]), _source_pixels(w, size[1])
        _labels(soft_np, cell_labels, candidates, num_candidates, rows, cols, MARGIN, labels, redo_slots)
        for frame in np.flatnonzero(redo_slots.any(axis=1)):
            _redo_ties(soft[frame], size, torch.from_numpy(redo_slots[frame]), torch.from_numpy(labels[frame]))
    if true_ids is None:
        return torch.from_numpy(labels), None
    table = np.zeros((n, k, num_true), np.int64)
    _count(labels, true_ids.contiguous().numpy(), table)
    return torch.from_numpy(labels), torch.from_numpy(table)
