"""SMTC losses (Qian et al., "Semantics meets temporal correspondence", ICCV 2023) as tensor functions.

Shapes: ``B`` batch, ``T`` frames, ``N`` tokens per frame, ``S`` semantic slots, ``I`` instances
per semantic, ``D`` feature dimension. The student gets gradients; every teacher input is
detached. All functions run with autocast disabled, in float32 (float64 inputs stay float64,
which ``tests/golden_checks/smtc.py`` uses to compare them with the authors' code).

Formula details follow the authors' training script (shvdiwnkozbw/SMTC ``src/train.py``:
``dense_transport_loss``, ``sinkhorn_cluster``, ``filter_valid_instance``, ``object_loss``):

- semantic consistency: for each ordered frame pair ``(i, j)``, ``i != j``, the plan ``P`` (rows:
  tokens of frame ``i``, columns: tokens of frame ``j``, total mass 1) weights the cross-entropy
  of every token pair: ``L_ij = -sum_{n,m} P[n, m] sum_s q_j[s, m] log p_i[s, n]``; the loss is
  the mean of ``L_ij`` over batch and pairs. ``P`` is not row-normalised, so student token ``n``
  is weighted by its transport mass (about its row marginal). Logs are of ``p + 1e-8``.
- mask diversity: cosine between the semantic masks plus ``1e-8``.
- instance consistency: per student instance, ``mean_{q unmatched} max(0, cos - margin)`` plus
  a pull towards its Hungarian match when that teacher instance is valid (``-cos`` in the
  authors' code, ``1 - cos`` as ocl's option: the same gradient, a loss that is 0 at a perfect
  match), counted only for valid student instances and divided by the number of valid student
  instances over all frame pairs.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ocl.contracts.output import ModelOutput
from ocl.losses.base import LossTerm
from ocl.utils.precision import at_least_float32

SEMANTIC_LOGITS = "semantic_logits"
"""``extras`` key: student's semantic attention logits ``[B, T, S, N]``."""
SEMANTIC_SLOTS = "semantic_slots"
"""``extras`` key: student's semantic slots ``[B, T, S, d]``."""
INSTANCE_SLOTS = "instance_slots"
"""``extras`` key: student's instance slots ``[B, T, S, I, d]``."""
INSTANCE_EMBEDDINGS = "instance_embeddings"
"""``extras`` key: student's projected, L2-normalised instance slots ``[B, T, S, I, d]``."""
TEACHER = "teacher_"
"""Prefix of the teacher's versions of the keys above; ``teacher_keys`` holds its encoder's keys
``[B, T, N, D]`` (before correspondence fusion), which define the transport cost."""
TEACHER_KEYS = TEACHER + "keys"

EPS = 1e-8
"""Added to probabilities before their log and to masks before their normalisation (the authors' code)."""
PULL_OFFSETS = {"negative_cosine": 0.0, "one_minus_cosine": 1.0}
"""Instance consistency's pull term ``offset - cos``: the authors' ``-cos`` or ocl's ``1 - cos``."""


@torch.no_grad()
def sinkhorn(
    cost: torch.Tensor,
    row_marginal: torch.Tensor,
    col_marginal: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 3,
) -> torch.Tensor:
    """Entropic optimal transport plan by Sinkhorn iterations (no gradient), as the authors'
    ``sinkhorn_cluster``, computed in the log domain (no underflow of ``exp(-cost / epsilon)``).

    Starts from a column scaling of ones and alternates a row update then a column update, so
    after any number of iterations the column marginals are exact and the row marginals are
    approximate (exact in the limit).

    Args:
        cost: ``[B, N, M]`` transport cost.
        row_marginal: ``[B, N]`` non-negative weights of the rows; normalised here to sum 1.
        col_marginal: ``[B, M]`` non-negative weights of the columns; normalised here to sum 1.
        epsilon: entropic regularisation (kernel ``exp(-cost / epsilon)``).
        iterations: number of (row, column) update rounds.

    Returns:
        ``[B, N, M]`` plan of total mass 1 (float32, or float64 for float64 ``cost``).
    """
    with torch.autocast(device_type=cost.device.type, enabled=False):
        log_kernel = -at_least_float32(cost) / epsilon
        row = row_marginal.to(log_kernel.dtype)
        col = col_marginal.to(log_kernel.dtype)
        log_row = (row / row.sum(dim=-1, keepdim=True)).log()
        log_col = (col / col.sum(dim=-1, keepdim=True)).log()
        log_v = torch.zeros_like(log_col)
        for _ in range(iterations):
            log_u = log_row - torch.logsumexp(log_kernel + log_v[:, None, :], dim=2)
            log_v = log_col - torch.logsumexp(log_kernel + log_u[:, :, None], dim=1)
        return (log_u[:, :, None] + log_kernel + log_v[:, None, :]).exp()


def semantic_consistency(
    student_logits: torch.Tensor,
    teacher_assignment: torch.Tensor,
    teacher_keys: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 3,
) -> torch.Tensor:
    """Optimal-transport weighted cross-entropy between frames (semantic temporal consistency).

    For every ordered pair ``(i, j)``, ``i != j``: ``k`` = L2-normalised teacher keys, cost
    ``C[n, m] = 1 - k_i[n] . k_j[m]``, marginals ``|k_i[n]|_1`` and ``|k_j[m]|_1`` (L1 norms of the
    normalised keys, as in the authors' code), plan ``P = sinkhorn(C, ...)``; then
    ``L_ij = -sum_{n,m} P[n, m] sum_s q_j[s, m] log p_i[s, n]`` with ``p = softmax_S(student_logits)``
    and ``q = teacher_assignment`` (the log of ``p + 1e-8``). Returns the mean of ``L_ij`` over
    batch and the ``T (T - 1)`` pairs.

    Args:
        student_logits: ``[B, T, S, N]`` student's semantic logits (softmax over ``S`` taken here).
        teacher_assignment: ``[B, T, S, N]`` teacher's soft assignment (sums to 1 over ``S``).
        teacher_keys: ``[B, T, N, D]`` teacher's token features defining the transport cost.
        epsilon, iterations: Sinkhorn settings.

    Returns:
        Scalar loss.
    """
    frames = student_logits.shape[1]
    if frames < 2:
        raise ValueError(f"semantic consistency needs at least 2 frames, got {frames}")
    first, second = zip(*((i, j) for i in range(frames) for j in range(frames) if i != j))
    first, second = list(first), list(second)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_student = (at_least_float32(student_logits).softmax(dim=2) + EPS).log()
        teacher = at_least_float32(teacher_assignment.detach())
        keys = F.normalize(at_least_float32(teacher_keys.detach()), dim=-1)
        keys_i, keys_j = keys[:, first].flatten(0, 1), keys[:, second].flatten(0, 1)  # [B*P, N, D]
        cost = 1.0 - torch.bmm(keys_i, keys_j.transpose(1, 2))
        plan = sinkhorn(cost, keys_i.abs().sum(-1), keys_j.abs().sum(-1), epsilon, iterations)
        # target[., s, n] = sum_m P[n, m] q_j[s, m]: the plan-weighted teacher assignment at frame j.
        target = torch.bmm(teacher[:, second].flatten(0, 1), plan.transpose(1, 2))  # [B*P, S, N]
        return -(target * log_student[:, first].flatten(0, 1)).sum(dim=(1, 2)).mean()


def mask_diversity(masks: torch.Tensor) -> torch.Tensor:
    """Mean cosine between different semantic masks of a frame.

    Each mask plus ``1e-8`` (the authors' code) is L2-normalised over positions; the loss is the
    mean of ``cos(mask_n, mask_m)`` over batch, frames and ordered pairs ``n != m``: about 0 for
    disjoint masks, 1 for identical ones.

    Args:
        masks: ``[B, T, S, N]`` non-negative semantic masks (e.g. softmax over ``S``).

    Returns:
        Scalar loss.
    """
    batch, frames, slots, _ = masks.shape
    if slots < 2:
        raise ValueError(f"mask diversity needs at least 2 masks, got {slots}")
    with torch.autocast(device_type=masks.device.type, enabled=False):
        normalised = F.normalize(at_least_float32(masks) + EPS, dim=-1)
        cosine = torch.einsum("btsn,btrn->btsr", normalised, normalised)
        off_diagonal = cosine.sum() - cosine.diagonal(dim1=2, dim2=3).sum()
        return off_diagonal / (batch * frames * slots * (slots - 1))


@torch.no_grad()
def instance_validity(
    semantic_slots: torch.Tensor,
    instance_slots: torch.Tensor,
    semantic_masks: torch.Tensor,
    slot_threshold: float = 0.5,
    area_threshold: float = 0.2,
    mask_threshold: float = 0.3,
) -> torch.Tensor:
    """Which instances count in :func:`instance_consistency`.

    Instance ``(s, p)`` is valid when ``cos(semantic_slot_s, instance_slot_sp) > slot_threshold``
    and semantic ``s`` covers more than ``area_threshold`` of the frame, coverage being the
    fraction of positions where its mask exceeds ``mask_threshold`` (the authors' code binarises
    the softmax-over-slots mask at 0.3).

    Args:
        semantic_slots: ``[B, T, S, D]``.
        instance_slots: ``[B, T, S, I, D]`` (before any projection head).
        semantic_masks: ``[B, T, S, N]`` soft semantic masks (softmax over ``S``).
        slot_threshold, area_threshold, mask_threshold: the thresholds above.

    Returns:
        ``[B, T, S, I]`` boolean.
    """
    with torch.autocast(device_type=semantic_slots.device.type, enabled=False):
        cosine = torch.einsum(
            "btsd,btsid->btsi",
            F.normalize(at_least_float32(semantic_slots), dim=-1),
            F.normalize(at_least_float32(instance_slots), dim=-1),
        )
        coverage = (semantic_masks > mask_threshold).to(cosine.dtype).mean(dim=-1)
        return (cosine > slot_threshold) & (coverage > area_threshold)[..., None]


EXHAUSTIVE_MATCHING_MAX = 6
"""Up to this many instances, :func:`hungarian_matches` scores every permutation on the tensor's device."""


def hungarian_matches(similarity: torch.Tensor) -> torch.Tensor:
    """One-to-one matching maximising total similarity, per leading index.

    With at most :data:`EXHAUSTIVE_MATCHING_MAX` instances (SMTC has 4) every permutation is scored
    at once on the tensor's device (``I!`` candidates; the best is the optimal assignment, as the
    Hungarian algorithm finds); larger problems go to SciPy's ``linear_sum_assignment`` one by one
    on the CPU. The authors' code solves every (frame pair, video, semantic) problem with SciPy in
    a Python loop: ``scripts/bench_smtc_matching.py`` measures the difference.

    Args:
        similarity: ``[..., I, I]`` (student instance, teacher instance).

    Returns:
        ``[..., I, I]`` boolean, True at the matched (student, teacher) pairs.
    """
    size = similarity.shape[-1]
    if similarity.shape[-2] != size:
        raise ValueError(f"matching needs square [..., I, I] similarities, got {tuple(similarity.shape)}")
    if size <= EXHAUSTIVE_MATCHING_MAX:
        return exhaustive_matches(similarity.detach())
    return scipy_matches(similarity.detach())


def scipy_matches(similarity: torch.Tensor) -> torch.Tensor:
    """:func:`hungarian_matches` by SciPy's ``linear_sum_assignment``, one problem at a time on the CPU."""
    costs = (-at_least_float32(similarity)).cpu().numpy().reshape(-1, *similarity.shape[-2:])
    matched = np.zeros(costs.shape, dtype=bool)
    for index, cost in enumerate(costs):
        rows, cols = linear_sum_assignment(cost)
        matched[index, rows, cols] = True
    return torch.from_numpy(matched).to(similarity.device).view(similarity.shape)


def exhaustive_matches(similarity: torch.Tensor) -> torch.Tensor:
    """:func:`hungarian_matches` by scoring all ``I!`` permutations of ``similarity [..., I, I]``."""
    size = similarity.shape[-1]
    permutations = torch.tensor(list(itertools.permutations(range(size))), device=similarity.device)  # [P, I]
    rows = torch.arange(size, device=similarity.device)
    totals = at_least_float32(similarity)[..., rows, permutations].sum(dim=-1)  # [..., P]: row i matched to perm[i]
    best = permutations[totals.argmax(dim=-1)]  # [..., I]
    return F.one_hot(best, size).bool()


def instance_consistency(
    student_embeddings: torch.Tensor,
    teacher_embeddings: torch.Tensor,
    valid_student: torch.Tensor,
    valid_teacher: torch.Tensor,
    push_margin: float = 0.5,
    pull_offset: float = 1.0,
) -> torch.Tensor:
    """Hungarian-matched contrastive loss between student and teacher instances across frames.

    For every ordered frame pair ``(i, j)`` (``i == j`` included) and semantic ``s``, student
    instances at frame ``i`` are Hungarian-matched to teacher instances at frame ``j`` on cosine
    ``c[p, q]`` (maximum total cosine). Student instance ``p`` with match ``m(p)`` contributes
    ``v_s[i, p] * (mean_{q != m(p)} max(0, c[p, q] - push_margin) + v_t[j, m(p)] (o - c[p, m(p)]))``
    with ``o = pull_offset``: the pull needs both ends valid, the push runs against every other
    teacher instance (valid or not, as in the authors' code), and invalid student instances
    contribute nothing. The sum is divided by the number of valid student instances over all
    ``T^2`` pairs (0 if there are none; the authors' ``+ 1e-10`` per entry vanishes in their
    float32 validity flags). Matching ignores validity.

    Args:
        student_embeddings: ``[B, T, S, I, D]`` projected, L2-normalised student instances.
        teacher_embeddings: ``[B, T, S, I, D]`` projected, L2-normalised teacher instances.
        valid_student: ``[B, T, S, I]`` boolean (see :func:`instance_validity`).
        valid_teacher: ``[B, T, S, I]`` boolean.
        push_margin: cosine above which unmatched pairs are pushed apart.
        pull_offset: ``o`` of the pull term ``o - cos`` (:data:`PULL_OFFSETS`): 0 in the authors'
            code, 1 makes the loss 0 at a perfect match; the gradient is the same.

    Returns:
        Scalar loss.
    """
    if student_embeddings.shape != teacher_embeddings.shape:
        raise ValueError(
            f"student {tuple(student_embeddings.shape)} and teacher {tuple(teacher_embeddings.shape)} "
            "instance embeddings must have the same shape"
        )
    frames, instances = student_embeddings.shape[1], student_embeddings.shape[3]
    with torch.autocast(device_type=student_embeddings.device.type, enabled=False):
        student = at_least_float32(student_embeddings)
        teacher = at_least_float32(teacher_embeddings.detach())
        # similarity[b, i, j, s, p, q] = cos(student at frame i, teacher at frame j)
        similarity = torch.einsum("bispd,bjsqd->bijspq", student, teacher)
        matched = hungarian_matches(similarity)
        valid_s = valid_student.to(student.dtype)[:, :, None, :, :]  # [B, T(i), 1, S, I]
        valid_t = valid_teacher.to(student.dtype)[:, None, :, :, None, :]  # [B, 1, T(j), S, 1, I]
        pull = (matched * similarity).sum(dim=-1)
        matched_valid = (matched * valid_t).sum(dim=-1)
        push = ((~matched) * F.relu(similarity - push_margin)).sum(dim=-1) / max(instances - 1, 1)
        per_instance = valid_s * (push + matched_valid * (pull_offset - pull))
        return per_instance.sum() / (valid_s.sum() * frames).clamp_min(1.0)


class SemanticConsistencyLoss(LossTerm):
    """:func:`semantic_consistency` of the student's semantic logits against the teacher's
    assignment (softmax over semantics) with the teacher's keys as transport cost."""

    def __init__(self, weight: float = 1.0, epsilon: float = 0.05, iterations: int = 3) -> None:
        super().__init__(weight)
        self.epsilon = epsilon
        self.iterations = iterations

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        extras = output.extras
        teacher_assignment = extras[TEACHER + SEMANTIC_LOGITS].softmax(dim=2)
        return semantic_consistency(
            extras[SEMANTIC_LOGITS], teacher_assignment, extras[TEACHER_KEYS], self.epsilon, self.iterations
        )


class MaskDiversityLoss(LossTerm):
    """:func:`mask_diversity` of the student's soft semantic masks (softmax over semantics)."""

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        return mask_diversity(output.extras[SEMANTIC_LOGITS].softmax(dim=2))


class InstanceConsistencyLoss(LossTerm):
    """:func:`instance_consistency` of student and teacher instance embeddings, each side's
    instances filtered by :func:`instance_validity` on its own slots and semantic masks.

    ``pull``: ``negative_cosine`` (the authors' ``-cos``) or ``one_minus_cosine`` (ocl's
    ``1 - cos``, 0 at a perfect match; the same gradient)."""

    def __init__(
        self,
        weight: float = 1.0,
        push_margin: float = 0.5,
        slot_threshold: float = 0.5,
        area_threshold: float = 0.2,
        mask_threshold: float = 0.3,
        pull: str = "one_minus_cosine",
    ) -> None:
        super().__init__(weight)
        if pull not in PULL_OFFSETS:
            raise ValueError(f"unknown instance pull {pull!r}; known: {sorted(PULL_OFFSETS)}")
        self.push_margin = push_margin
        self.pull_offset = PULL_OFFSETS[pull]
        self.thresholds = (slot_threshold, area_threshold, mask_threshold)

    def _validity(self, extras: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return instance_validity(
            extras[prefix + SEMANTIC_SLOTS],
            extras[prefix + INSTANCE_SLOTS],
            extras[prefix + SEMANTIC_LOGITS].softmax(dim=2),
            *self.thresholds,
        )

    def forward(self, output: ModelOutput, batch: dict[str, Any]) -> torch.Tensor:
        extras = output.extras
        return instance_consistency(
            extras[INSTANCE_EMBEDDINGS],
            extras[TEACHER + INSTANCE_EMBEDDINGS],
            self._validity(extras, ""),
            self._validity(extras, TEACHER),
            self.push_margin,
            self.pull_offset,
        )
