"""SMTC losses: formulas against loop-based references, Sinkhorn marginals, extreme cases,
validity gating, gradients (student only) and fp32 under autocast."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ocl.losses.smtc import (
    EXHAUSTIVE_MATCHING_MAX,
    PULL_OFFSETS,
    InstanceConsistencyLoss,
    hungarian_matches,
    instance_consistency,
    instance_validity,
    mask_diversity,
    semantic_consistency,
    sinkhorn,
)


def loop_sinkhorn(cost, row, col, epsilon, iterations):
    """Multiplicative Sinkhorn on one ``[N, M]`` cost, in float64 Python loops."""
    n, m = cost.shape
    row = [float(r) / float(row.sum()) for r in row]
    col = [float(c) / float(col.sum()) for c in col]
    kernel = [[math.exp(-float(cost[a, b]) / epsilon) for b in range(m)] for a in range(n)]
    v = [1.0] * m
    for _ in range(iterations):
        u = [row[a] / sum(kernel[a][b] * v[b] for b in range(m)) for a in range(n)]
        v = [col[b] / sum(kernel[a][b] * u[a] for a in range(n)) for b in range(m)]
    return [[u[a] * kernel[a][b] * v[b] for b in range(m)] for a in range(n)]


def random_marginals(batch, size):
    return torch.rand(batch, size) + 0.1


def test_sinkhorn_plan_has_the_requested_marginals():
    torch.manual_seed(0)
    keys = F.normalize(torch.randn(2, 7, 5), dim=-1)
    cost = 1.0 - keys[:, :6] @ keys.transpose(1, 2)  # [2, 6, 7]
    row, col = random_marginals(2, 6), random_marginals(2, 7)
    plan = sinkhorn(cost, row, col, epsilon=0.05, iterations=200)  # eps 0.05 converges slowly
    torch.testing.assert_close(plan.sum(dim=2), row / row.sum(-1, keepdim=True), atol=1e-3, rtol=0)
    torch.testing.assert_close(plan.sum(dim=1), col / col.sum(-1, keepdim=True), atol=1e-3, rtol=0)
    # After the default 3 iterations the column marginals (updated last) are already exact.
    short = sinkhorn(cost, row, col)
    torch.testing.assert_close(short.sum(dim=1), col / col.sum(-1, keepdim=True), atol=1e-5, rtol=0)


def test_sinkhorn_defaults_and_formula():
    torch.manual_seed(1)
    cost, row, col = torch.rand(1, 4, 5) * 2, random_marginals(1, 4), random_marginals(1, 5)
    default = sinkhorn(cost, row, col)
    torch.testing.assert_close(default, sinkhorn(cost, row, col, epsilon=0.05, iterations=3))
    assert not torch.allclose(default, sinkhorn(cost, row, col, epsilon=0.05, iterations=2))
    assert not torch.allclose(default, sinkhorn(cost, row, col, epsilon=0.1, iterations=3))
    expected = torch.tensor(loop_sinkhorn(cost[0], row[0], col[0], 0.05, 3), dtype=torch.float32)
    torch.testing.assert_close(default[0], expected, atol=1e-6, rtol=1e-4)


def test_sinkhorn_has_no_gradient():
    cost = torch.rand(1, 3, 3, requires_grad=True)
    assert not sinkhorn(cost, torch.ones(1, 3), torch.ones(1, 3)).requires_grad


def semantic_inputs(seed=0, batch=2, frames=3, slots=3, tokens=5, dim=4):
    torch.manual_seed(seed)
    student = torch.randn(batch, frames, slots, tokens)
    teacher = torch.randn(batch, frames, slots, tokens).softmax(dim=2)
    keys = torch.randn(batch, frames, tokens, dim)
    return student, teacher, keys


def test_semantic_consistency_equals_its_formula():
    student, teacher, keys = semantic_inputs()
    batch, frames, slots, tokens = student.shape
    loss = semantic_consistency(student, teacher, keys)
    terms = []
    for b in range(batch):
        for i in range(frames):
            for j in range(frames):
                if i == j:
                    continue
                k_i = [v / v.norm() for v in keys[b, i]]
                k_j = [v / v.norm() for v in keys[b, j]]
                cost = torch.tensor([[1.0 - float(x @ y) for y in k_j] for x in k_i])
                row = torch.tensor([float(x.abs().sum()) for x in k_i])
                col = torch.tensor([float(y.abs().sum()) for y in k_j])
                plan = loop_sinkhorn(cost, row, col, 0.05, 3)
                p_i = student[b, i].softmax(dim=0)
                term = 0.0
                for n in range(tokens):
                    for m in range(tokens):
                        cross = sum(float(teacher[b, j, s, m]) * math.log(float(p_i[s, n])) for s in range(slots))
                        term -= plan[n][m] * cross
                terms.append(term)
    assert len(terms) == batch * frames * (frames - 1)
    torch.testing.assert_close(loss, torch.tensor(sum(terms) / len(terms)), atol=1e-5, rtol=1e-5)


def test_semantic_consistency_near_zero_for_a_static_video_with_student_equal_to_teacher():
    student, teacher, _ = semantic_inputs(seed=2)
    batch, frames, slots, tokens = teacher.shape
    one_hot = F.one_hot(teacher[:, :1].argmax(dim=2), slots).permute(0, 1, 3, 2).float()
    static_teacher = one_hot.expand(batch, frames, slots, tokens)
    orthogonal_keys = torch.eye(tokens).expand(batch, frames, tokens, tokens)  # plan ~ diagonal
    assert semantic_consistency(static_teacher * 30, static_teacher, orthogonal_keys) < 1e-4
    assert semantic_consistency(student, static_teacher, orthogonal_keys) > 0.5


def test_semantic_consistency_gradients_reach_only_the_student():
    student, teacher, keys = semantic_inputs()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    keys.requires_grad_(True)
    semantic_consistency(student, teacher, keys).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and keys.grad is None


def loop_diversity(masks):
    batch, frames, slots, _ = masks.shape
    values = []
    for b in range(batch):
        for t in range(frames):
            for n in range(slots):
                for m in range(slots):
                    if n != m:
                        x, y = masks[b, t, n], masks[b, t, m]
                        values.append(float(x @ y) / (float(x.norm()) * float(y.norm())))
    return sum(values) / len(values)


def test_mask_diversity_equals_its_formula():
    torch.manual_seed(3)
    masks = torch.randn(2, 3, 4, 6).softmax(dim=2)
    torch.testing.assert_close(mask_diversity(masks), torch.tensor(loop_diversity(masks)), atol=1e-6, rtol=1e-5)


def test_mask_diversity_extremes():
    assignment = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    disjoint = F.one_hot(assignment, 3).T.float()[None, None]  # [1, 1, 3, 7]
    assert mask_diversity(disjoint) == pytest.approx(0.0, abs=1e-7)
    identical = torch.rand(1, 7).expand(3, 7)[None, None]
    assert mask_diversity(identical) == pytest.approx(1.0, abs=1e-6)


def test_instance_validity():
    semantic = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, None]  # [1, 1, 2, 2]
    # [1, 1, 2 semantics, 2 instances, 2]; cosines to their semantic: 0.995, 0, 1, 0.707
    instances = torch.tensor([[[1.0, 0.1], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]])[None, None]
    masks = torch.tensor([[0.9, 0.9, 0.1, 0.35, 0.25], [0.1, 0.1, 0.9, 0.65, 0.75]])[None, None]
    valid = instance_validity(semantic, instances, masks)
    # Coverage (mask > 0.3): semantic 0 -> 3/5, semantic 1 -> 3/5.
    assert valid.tolist() == [[[[True, False], [True, True]]]]
    small = masks.clone()
    small[..., 1, 2:] = 0.2  # semantic 1 now covers 0 positions
    assert instance_validity(semantic, instances, small).tolist() == [[[[True, False], [False, False]]]]
    assert instance_validity(semantic, instances, masks, area_threshold=0.6).sum() == 0
    assert instance_validity(semantic, instances, masks, slot_threshold=0.8).tolist() == [
        [[[True, False], [True, False]]]
    ]


def loop_instance_loss(student, teacher, valid_s, valid_t, margin=0.5):
    """Brute-force matching over permutations, plain loops."""
    batch, frames, semantics, instances, _ = student.shape
    total, count = 0.0, 0
    for b in range(batch):
        for i in range(frames):
            for j in range(frames):
                for s in range(semantics):
                    cos = [
                        [float(student[b, i, s, p] @ teacher[b, j, s, q]) for q in range(instances)]
                        for p in range(instances)
                    ]
                    best = max(
                        itertools.permutations(range(instances)),
                        key=lambda perm: sum(cos[p][perm[p]] for p in range(instances)),
                    )
                    for p in range(instances):
                        if not valid_s[b, i, s, p]:
                            continue
                        count += 1
                        match = best[p]
                        push = sum(max(0.0, cos[p][q] - margin) for q in range(instances) if q != match)
                        total += push / (instances - 1)
                        if valid_t[b, j, s, match]:
                            total += 1.0 - cos[p][match]
    return total / count if count else 0.0


def instance_inputs(seed=0, batch=2, frames=2, semantics=2, instances=3, dim=4):
    torch.manual_seed(seed)
    student = F.normalize(torch.randn(batch, frames, semantics, instances, dim), dim=-1)
    teacher = F.normalize(torch.randn(batch, frames, semantics, instances, dim), dim=-1)
    valid_s = torch.rand(batch, frames, semantics, instances) > 0.3
    valid_t = torch.rand(batch, frames, semantics, instances) > 0.3
    return student, teacher, valid_s, valid_t


@pytest.mark.parametrize("size", [1, 4, EXHAUSTIVE_MATCHING_MAX, EXHAUSTIVE_MATCHING_MAX + 1])
def test_matching_is_the_optimal_assignment_on_both_paths(size):
    torch.manual_seed(size)
    similarity = torch.randn(3, 5, size, size)
    matched = hungarian_matches(similarity)
    assert matched.shape == similarity.shape and matched.dtype == torch.bool
    for index in itertools.product(range(3), range(5)):
        rows, cols = linear_sum_assignment(similarity[index].numpy(), maximize=True)
        expected = torch.zeros(size, size, dtype=torch.bool)
        expected[rows, cols] = True
        assert torch.equal(matched[index], expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_instance_consistency_equals_its_formula(seed):
    student, teacher, valid_s, valid_t = instance_inputs(seed)
    loss = instance_consistency(student, teacher, valid_s, valid_t)
    expected = loop_instance_loss(student, teacher, valid_s, valid_t)
    torch.testing.assert_close(loss, torch.tensor(expected), atol=1e-6, rtol=1e-5)
    # A lower margin pushes more pairs.
    low = instance_consistency(student, teacher, valid_s, valid_t, push_margin=-1.0)
    torch.testing.assert_close(low, torch.tensor(loop_instance_loss(student, teacher, valid_s, valid_t, -1.0)))


def test_the_authors_negative_cosine_pull_shifts_the_loss_and_keeps_the_gradient():
    """-cos (the authors') and 1 - cos differ by the share of valid pulls, a constant."""
    student, teacher, valid_s, valid_t = instance_inputs(seed=7)
    losses, gradients = [], []
    for offset in (PULL_OFFSETS["negative_cosine"], PULL_OFFSETS["one_minus_cosine"]):
        leaf = student.clone().requires_grad_(True)
        loss = instance_consistency(leaf, teacher, valid_s, valid_t, pull_offset=offset)
        loss.backward()
        losses.append(loss)
        gradients.append(leaf.grad)
    similarity = torch.einsum("bispd,bjsqd->bijspq", student, teacher)
    matched = hungarian_matches(similarity)
    valid_pulls = (valid_s[:, :, None, :, :, None] & matched & valid_t[:, None, :, :, None, :]).sum()
    shift = valid_pulls / (valid_s.sum() * student.shape[1])
    torch.testing.assert_close(losses[1] - losses[0], shift.float())
    torch.testing.assert_close(gradients[0], gradients[1])
    assert InstanceConsistencyLoss(pull="negative_cosine").pull_offset == 0.0
    with pytest.raises(ValueError, match="unknown instance pull"):
        InstanceConsistencyLoss(pull="cosine")


def test_instance_consistency_zero_for_consistent_orthogonal_instances():
    torch.manual_seed(4)
    batch, frames, semantics, instances, dim = 2, 3, 2, 3, 5
    basis = torch.linalg.qr(torch.randn(batch, semantics, dim, dim)).Q[..., :instances].transpose(-1, -2)
    embeddings = basis[:, None].expand(batch, frames, semantics, instances, dim)  # same in every frame
    valid = torch.ones(batch, frames, semantics, instances, dtype=torch.bool)
    assert instance_consistency(embeddings, embeddings, valid, valid) == pytest.approx(0.0, abs=1e-6)
    # Shuffling the teacher's instance order changes nothing (Hungarian matching).
    shuffled = embeddings[:, :, :, [2, 0, 1]]
    assert instance_consistency(embeddings, shuffled, valid, valid) == pytest.approx(0.0, abs=1e-6)
    # Instances too similar to each other (cos 0.8 > 0.5) are pushed.
    close = F.normalize(embeddings + 2.0 * embeddings.sum(dim=3, keepdim=True), dim=-1)
    assert instance_consistency(close, close, valid, valid) > 0.1
    # Student different from the teacher is pulled.
    other = F.normalize(embeddings + 0.3 * torch.randn_like(embeddings), dim=-1)
    assert instance_consistency(other, embeddings, valid, valid) > 0.01


def test_invalid_instances_contribute_nothing():
    student, teacher, valid_s, valid_t = instance_inputs(seed=5)
    valid_s[0, 0, 0, 0] = False
    loss = instance_consistency(student, teacher, valid_s, valid_t)
    # Replacing an invalid student instance by a far worse one (it stays in the matching).
    changed = student.clone()
    changed[0, 0, 0, 0] = -changed[0, 0, 0, 0]
    torch.testing.assert_close(instance_consistency(changed, teacher, valid_s, valid_t), loss)
    # No valid student instance: zero loss, zero gradient.
    none = torch.zeros_like(valid_s)
    student.requires_grad_(True)
    empty = instance_consistency(student, teacher, none, valid_t)
    empty.backward()
    assert empty.item() == 0.0 and student.grad.abs().sum() == 0
    # No valid teacher instance: no pull terms, only the pushes of the valid student instances.
    push_only = instance_consistency(student.detach(), teacher, valid_s, none)
    torch.testing.assert_close(push_only, torch.tensor(loop_instance_loss(student.detach(), teacher, valid_s, none)))


def test_instance_consistency_gradients_reach_only_the_student():
    student, teacher, valid_s, valid_t = instance_inputs(seed=6)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    instance_consistency(student, teacher, valid_s, valid_t).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    with pytest.raises(ValueError, match="same shape"):
        instance_consistency(student, teacher[:, :, :, :2], valid_s, valid_t)


def test_losses_keep_float64_inputs_in_float64():
    student, teacher, keys = semantic_inputs()
    s_inst, t_inst, valid_s, valid_t = instance_inputs()
    values = (
        semantic_consistency(student.double(), teacher.double(), keys.double()),
        mask_diversity(teacher.double()),
        instance_consistency(s_inst.double(), t_inst.double(), valid_s, valid_t),
        sinkhorn(torch.rand(1, 3, 4).double(), torch.ones(1, 3), torch.ones(1, 4)),
    )
    assert all(value.dtype == torch.float64 for value in values)


def test_losses_run_in_fp32_under_autocast():
    student, teacher, keys = semantic_inputs()
    s_inst, t_inst, valid_s, valid_t = instance_inputs()
    plain = (
        semantic_consistency(student, teacher, keys),
        mask_diversity(teacher),
        instance_consistency(s_inst, t_inst, valid_s, valid_t),
    )
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = (
            semantic_consistency(student, teacher, keys),
            mask_diversity(teacher),
            instance_consistency(s_inst, t_inst, valid_s, valid_t),
        )
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b)
