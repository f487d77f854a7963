"""The split rule of the slot curriculum (SlotCurri): parents give their rows children.

:meth:`~ocl.modules.initialisers.LearnedInit.grow` applies it to the learned initial slots;
:class:`~ocl.callbacks.curriculum.SlotCurriculum` decides when.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MEAN_NORM_EPS = 1e-8
"""Added to the mean slot norm in the noise scale (the authors' code)."""


def allocate_children(errors: torch.Tensor, num_new: int) -> list[int]:
    """Children per parent, proportional to ``errors [K_active]``: floors, then the largest
    remainders (ties to the lower index). All-zero errors share equally."""
    errors = errors.double().clamp_min(0)
    shares = errors / errors.sum() if errors.sum() > 0 else torch.full_like(errors, 1 / errors.numel())
    quotas = shares * num_new
    counts = quotas.floor().long()
    remainders = quotas - counts
    order = sorted(range(len(counts)), key=lambda i: (-float(remainders[i]), i))
    for index in order[: num_new - int(counts.sum())]:
        counts[index] += 1
    return counts.tolist()


@dataclass
class Split:
    """One parent's share of a growth and the numbers of its noise scale."""

    parent: int
    children: list[int]
    error_share: float
    nearest: int  # the most cosine-similar other row of the pool
    distance: float  # ||p - nearest||
    parent_norm: float  # ||p||
    mean_norm: float  # mean row norm of the pool, + MEAN_NORM_EPS
    sigma: float  # noise_scale * distance * parent_norm / mean_norm: each child's distance to p


def split_slots(
    slots: torch.Tensor,
    num_active: int,
    errors: torch.Tensor,
    noise: torch.Tensor,
    noise_scale: float,
    over_all: bool = True,
    from_copy: bool = False,
) -> list[Split]:
    """Write one child per row of ``noise [num_new, d]`` into rows ``num_active..`` of
    ``slots [N, d]`` (in place); -> one :class:`Split` per parent that got children.

    Parents get children in proportion to ``errors [num_active]`` (:func:`allocate_children`),
    in parent order; child ``j`` = parent + sigma * ``noise[j] / ||noise[j]||`` with
    ``sigma = noise_scale * ||p - nn(p)|| * ||p|| / (mean row norm + 1e-8)``. ``nn(p)`` is the
    most cosine-similar other row, chosen once per growth among all ``N`` rows (``over_all``) or
    the active ones. Distance and mean norm read ``slots`` as it is being written (rows written
    for earlier parents included, as the authors' code), or with ``from_copy`` the rows before
    the growth.
    """
    counts = allocate_children(errors, noise.shape[0])
    before = slots.clone()
    pool_size = slots.shape[0] if over_all else num_active
    similarity = F.normalize(before[:num_active], dim=-1) @ F.normalize(before[:pool_size], dim=-1).T
    similarity[torch.arange(num_active), torch.arange(num_active)] = float("-inf")
    nearest = similarity.argmax(dim=1).tolist()
    source = before if from_copy else slots
    total = float(errors.sum()) or 1.0
    row, splits = num_active, []
    for parent, count in enumerate(counts):
        if not count:
            continue
        distance = (source[parent] - source[nearest[parent]]).norm()
        parent_norm = source[parent].norm()
        mean_norm = source[:pool_size].norm(dim=-1).mean() + MEAN_NORM_EPS
        sigma = noise_scale * distance * (parent_norm / mean_norm)
        directions = F.normalize(noise[row - num_active : row - num_active + count].to(slots), dim=-1)
        slots[row : row + count] = source[parent] + sigma * directions
        splits.append(
            Split(
                parent,
                list(range(row, row + count)),
                float(errors[parent]) / total,
                nearest[parent],
                float(distance),
                float(parent_norm),
                float(mean_norm),
                float(sigma),
            )
        )
        row += count
    return splits
