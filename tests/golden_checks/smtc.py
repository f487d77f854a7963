"""Golden checks: SMTC (tests/fixtures/golden/README.md, section "SMTC").

Every fixture is re-run through ocl's component with the recipe's settings (``configs/model/smtc.yaml``,
``configs/loss/smtc.yaml``) in float64; the first release's soft area (``two_stage_soft``) runs with
``hard_area=False``. The authors' q/k/v biases are zero in the fixtures and load into ocl's biased
projections (``qkv_bias=True``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from golden_checks.common import FLOAT64, Fixture, expect_close, expect_gradients, load_mapped
from ocl.eval.label_propagation import PropagationSettings, downsample_labels, hard_labels, soft_label_stream
from ocl.losses import smtc as losses
from ocl.methods.smtc import SMTC
from ocl.modules.semantic_instance import (
    CorrespondenceFusion,
    SemanticInstanceAttention,
    SemanticInstanceHead,
    SemanticInstanceSlots,
)
from ocl.modules.slot_attention import SlotAttention

DIM = 8
"""The fixtures' key and slot dimension (384 in SMTC)."""
GRID = (4, 4)
"""The fixtures' reference grid (``end_size``; 16 x 16 in SMTC)."""

_SLOT_ATTENTION_NAMES = {
    "slots_mu": "mu",
    "slots_sigma": "log_sigma",
    "norm_input": "corrector.norm_inputs",
    "norm_slots": "corrector.norm_slots",
    "norm_pre_ff": "corrector.mlp.0",
    "project_q": "corrector.to_q",
    "project_k": "corrector.to_k",
    "project_v": "corrector.to_v",
    "mlp.0": "corrector.mlp.1",
    "mlp.2": "corrector.mlp.3",
}
_HEAD_NAMES = {"transport_proj": "fusion.project", "mlp_slot.0": "projection.0", "mlp_slot.2": "projection.2"}


def _renamer(table: dict[str, str]) -> Callable[[str], str]:
    """Map an authors' parameter name through the longest prefix in ``table``."""

    def rename(name: str) -> str:
        module, _, leaf = name.rpartition(".")
        for theirs in sorted(table, key=len, reverse=True):
            if name == theirs:
                return table[theirs]
            if module == theirs:
                return f"{table[theirs]}.{leaf}"
        raise KeyError(f"no ocl name for the authors' parameter {name}")

    return rename


def _head_name(name: str) -> str:
    if name.startswith("slot_attention."):
        return "attention." + _renamer(_SLOT_ATTENTION_NAMES)(name.removeprefix("slot_attention."))
    return _renamer(_HEAD_NAMES)(name)


def _attention(num_semantic: int, num_instances: int, hard_area: bool = True) -> SemanticInstanceAttention:
    """The recipe's two-stage attention at the fixtures' size (``configs/model/smtc.yaml``)."""
    corrector = SlotAttention(
        DIM, DIM, num_iterations=3, mlp_hidden_dim=DIM, update="residual", straight_through=True, qkv_bias=True
    )
    return SemanticInstanceAttention(
        corrector, num_semantic, num_instances, DIM, learn_sigma=False, hard_area=hard_area, area_threshold=0.3
    )


def _weighted_sum(fixture: Fixture, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The fixture's differentiated scalar: ``sum over o of sum(output o * grad_weight/o)``."""
    return sum((value * fixture[f"input/grad_weight/{name}"]).sum() for name, value in outputs.items())


def _keys_as_tokens(keys: torch.Tensor, batch: int) -> torch.Tensor:
    """The ViT's ``[B*T, D, h, w]`` key maps -> ocl's ``[B, T, h*w, D]``."""
    return keys.flatten(2).transpose(1, 2).unflatten(0, (batch, -1))


# ----------------------------------------------------------------------------- fusion and slot head


def check_fusion(fixture: Fixture) -> None:
    fusion = CorrespondenceFusion(DIM, GRID)
    mapping = load_mapped(fusion, fixture.params(), lambda name: name.replace("transport_proj", "project"))
    keys = fixture["input/keys"].requires_grad_(True)
    fused = fusion(_keys_as_tokens(keys, 2), tuple(keys.shape[-2:]))
    expect_close(fused, fixture["output/fused_keys"], FLOAT64, "fused_keys")
    (fused * fixture["input/grad_weight"]).sum().backward()
    expect_gradients(fusion, fixture, mapping, "grad/param/", FLOAT64)
    expect_close(keys.grad, fixture["grad/input/keys"], FLOAT64, "grad keys")


def _check_two_stage(fixture: Fixture, hard_area: bool) -> None:
    attention = _attention(3, 2, hard_area)
    mapping = load_mapped(attention, fixture.params(), _renamer(_SLOT_ATTENTION_NAMES))
    inputs = fixture["input/inputs"].requires_grad_(True)
    slots = attention(inputs, fixture["input/instance_noise"])
    outputs = {
        "semantic_slots": slots.semantic_slots,
        "semantic_attn": slots.semantic_logits,
        "instance_slots": slots.instance_slots,
        "instance_attn": slots.instance_logits,
    }
    for name, value in outputs.items():
        expect_close(value, fixture[f"output/{name}"], FLOAT64, name)
    _weighted_sum(fixture, outputs).backward()
    expect_gradients(attention, fixture, mapping, "grad/param/", FLOAT64)
    expect_close(inputs.grad, fixture["grad/input/inputs"], FLOAT64, "grad inputs")


def check_head(fixture: Fixture) -> None:
    head = SemanticInstanceHead(CorrespondenceFusion(DIM, GRID), _attention(3, 2), projection_hidden_dim=16)
    mapping = load_mapped(head, fixture.params(), _head_name)
    keys = fixture["input/keys"].requires_grad_(True)
    tokens = _keys_as_tokens(keys, 2)
    noise = fixture["input/instance_noise"].unflatten(0, (2, 3))
    expect_close(tokens, fixture["output/frame"], FLOAT64, "frame")
    output = head(tokens, GRID, noise)
    slots = output.slots
    outputs = {
        "semantic_logits": slots.semantic_logits,
        "semantic_slots": slots.semantic_slots,
        "instance_slots": slots.instance_slots,
        "warp_instance": output.embeddings,
    }
    for name, value in outputs.items():
        expect_close(value, fixture[f"output/{name}"], FLOAT64, name)
    _weighted_sum(fixture, outputs).backward()
    expect_gradients(head, fixture, mapping, "grad/param/", FLOAT64)
    expect_close(keys.grad, fixture["grad/input/keys"], FLOAT64, "grad keys")
    # The authors' evaluation call: the same noise, no gradient.
    with torch.no_grad():
        evaluated: SemanticInstanceSlots = head.eval()(tokens, GRID, noise).slots
    expect_close(evaluated.semantic_logits.softmax(dim=2), fixture["output/eval_semantic_mask"], FLOAT64, "eval mask")
    expect_close(evaluated.instance_similarity(), fixture["output/eval_similarity"], FLOAT64, "eval similarity")
    expect_close(evaluated.instance_masks(), fixture["output/eval_instance_mask"], FLOAT64, "eval instance mask")


# ----------------------------------------------------------------------------- losses


def check_loss_semantic(fixture: Fixture) -> None:
    student = fixture["input/student_logits"].requires_grad_(True)
    term = losses.SemanticConsistencyLoss()
    loss = losses.semantic_consistency(
        student,
        fixture["input/teacher_logits"].softmax(dim=2),
        fixture["input/teacher_keys"],
        term.epsilon,
        term.iterations,
    )
    expect_close(loss, fixture["output/loss"], FLOAT64, "loss")
    (loss * fixture["input/grad_weight"]).backward()
    expect_close(student.grad, fixture["grad/input/student_logits"], FLOAT64, "grad student_logits")


def check_sinkhorn(fixture: Fixture) -> None:
    plan = losses.sinkhorn(fixture["input/cost"], fixture["input/mu_s"], fixture["input/mu_t"])
    expect_close(plan, fixture["output/plan"], FLOAT64, "plan")


def check_loss_diversity(fixture: Fixture) -> None:
    student = fixture["input/student_logits"].requires_grad_(True)
    loss = losses.mask_diversity(student.softmax(dim=2))
    expect_close(loss, fixture["output/loss"], FLOAT64, "loss")
    (loss * fixture["input/grad_weight"]).backward()
    expect_close(student.grad, fixture["grad/input/student_logits"], FLOAT64, "grad student_logits")


def check_loss_instance(fixture: Fixture) -> None:
    term = losses.InstanceConsistencyLoss(pull="negative_cosine")  # configs/loss/smtc.yaml
    valid = {
        side: losses.instance_validity(
            fixture[f"input/{side}_semantic_slots"],
            fixture[f"input/{side}_instance_slots"],
            fixture[f"input/{side}_logits"].softmax(dim=2),
            *term.thresholds,
        )
        for side in ("student", "teacher")
    }
    for side, value in valid.items():
        expect_close(value.double(), fixture[f"output/valid_{side}"], 0.0, f"valid_{side}")
    student = fixture["input/student_embeddings"].requires_grad_(True)
    teacher = fixture["input/teacher_embeddings"]
    # matched_teacher_index[i, j, b, s, p]: the teacher instance at frame j matched to student p at frame i.
    similarity = torch.einsum("bispd,bjsqd->ijbspq", student.detach(), teacher)
    matched = losses.hungarian_matches(similarity).double().argmax(dim=-1)
    expect_close(matched.double(), fixture["output/matched_teacher_index"], 0.0, "matched_teacher_index")
    loss = losses.instance_consistency(
        student, teacher, valid["student"], valid["teacher"], term.push_margin, term.pull_offset
    )
    expect_close(loss, fixture["output/loss"], FLOAT64, "loss")
    (loss * fixture["input/grad_weight"]).backward()
    expect_close(student.grad, fixture["grad/input/student_embeddings"], FLOAT64, "grad student_embeddings")


# ----------------------------------------------------------------------------- teacher


class _ToyHead(nn.Module):
    """The fixture's toy modules besides the encoder, under the authors' names."""

    def __init__(self) -> None:
        super().__init__()
        self.transport_proj = nn.Conv1d(4, 3, kernel_size=1)
        self.mlp_slot = nn.Linear(3, 3)


def check_ema(fixture: Fixture) -> None:
    """``SMTC.update_teacher`` (run after each optimiser step) on toy parts: the teacher's encoder
    (a frozen copy) is left as it is and its head moves towards the student's, as the authors'
    filter on ``encoder`` does."""
    encoder = nn.Linear(3, 2)
    encoder.trainable = True  # what SMTC requires of its student encoder
    model = SMTC(encoder, _ToyHead(), losses={"diversity": losses.MaskDiversityLoss()}, optimizer=torch.optim.AdamW)
    ours = {"encoder": model.encoder, "teacher_encoder": model.teacher_encoder}
    ours.update(head=model.head, teacher_head=model.teacher_head.average)
    for side in ("student", "teacher"):
        params = fixture.params(f"input/{side}/")
        prefix = "" if side == "student" else "teacher_"
        load_mapped(ours[prefix + "encoder"], {k[8:]: v for k, v in params.items() if k.startswith("encoder.")}, str)
        load_mapped(ours[prefix + "head"], {k: v for k, v in params.items() if not k.startswith("encoder.")}, str)
    model.update_teacher()
    teacher = {f"encoder.{k}": v for k, v in model.teacher_encoder.named_parameters()}
    teacher.update(model.teacher_head.average.named_parameters())
    for name, expected in fixture.params("output/teacher/").items():
        expect_close(teacher[name], expected, FLOAT64, f"teacher {name}")


# ----------------------------------------------------------------------------- label propagation


def check_label_propagation(fixture: Fixture) -> None:
    settings = PropagationSettings(
        topk=int(fixture["input/topk"]),
        radius=float(fixture["input/radius"]),
        temperature=float(fixture["input/temperature"]),
        n_context=int(fixture["input/n_context"]),
    )
    features = fixture["input/features"]
    first_labels = fixture["input/first_labels"].long()
    grid = tuple(features.shape[-2:])
    first_grid = downsample_labels(first_labels, grid)
    expect_close(first_grid.permute(1, 2, 0), fixture["output/first_labels_grid"], FLOAT64, "first_labels_grid")
    soft = torch.stack(list(soft_label_stream(features, first_labels, settings)))  # [T, C, h, w], frame 0 = first_grid
    expect_close(soft.permute(0, 2, 3, 1), fixture["output/soft_labels"], FLOAT64, "soft_labels")
    hard = torch.stack([hard_labels(frame, tuple(first_labels.shape)) for frame in soft])
    expect_close(hard.double(), fixture["output/hard_labels"], 0.0, "hard_labels")


CHECKS: dict[str, dict[str, Callable[[Fixture], None]]] = {
    "smtc/fusion.npz": {"outputs_and_gradients": check_fusion},
    "smtc/fusion_resize.npz": {"outputs_and_gradients": check_fusion},
    "smtc/two_stage_hard.npz": {"outputs_and_gradients": lambda fixture: _check_two_stage(fixture, hard_area=True)},
    "smtc/two_stage_soft.npz": {"outputs_and_gradients": lambda fixture: _check_two_stage(fixture, hard_area=False)},
    "smtc/head.npz": {"training_and_evaluation": check_head},
    "smtc/loss_semantic.npz": {"loss_and_gradient": check_loss_semantic},
    "smtc/sinkhorn.npz": {"plan": check_sinkhorn},
    "smtc/loss_diversity.npz": {"loss_and_gradient": check_loss_diversity},
    "smtc/loss_instance.npz": {"validity_matches_loss_gradient": check_loss_instance},
    "smtc/ema.npz": {"teacher_update": check_ema},
    "smtc/label_propagation.npz": {"soft_and_hard_labels": check_label_propagation},
    "smtc/label_propagation_masked_topk.npz": {"soft_and_hard_labels": check_label_propagation},
}
