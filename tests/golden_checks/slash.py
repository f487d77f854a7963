"""Golden checks: SLASH (tests/fixtures/golden/README.md, section "SLASH").

Every fixture is re-run through ocl's component with the recipe's settings (``configs/model/slash.yaml``,
``configs/loss/slash.yaml``: ARK ``wnconv`` re-normalised in place, IPPE matching once with the
absent rows, the point loss over all iterations and all entries of the labelled samples) in
float64, and every output and gradient compared at 1e-10.

Layout conversions (the authors' -> ocl's): attention logits ``[B, heads=1, N, K]`` -> ``[B, K, N]``;
a point table's absent rows, ``-1.5`` (their data's -1 shifted by -0.5) -> NaN; the labelled
sample of batch fusion (the first ``int(B * 0.25)``) -> the samples whose points are not all NaN.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from golden_checks.common import FLOAT64, Fixture, expect_close, expect_gradients, load_mapped
from ocl.contracts.batch import POINTS
from ocl.contracts.output import ASSIGNED_POINTS, PREDICTED_POINTS, ModelOutput
from ocl.losses.points import PointSupervision
from ocl.modules.ark import AttentionRefiningKernel
from ocl.modules.initialisers import GaussianInit
from ocl.modules.points import ABSENT_COORDINATE, PointPredictorEncoder
from ocl.modules.slot_attention import SlotAttention

SLOT_ATTENTION_NAMES = {
    "slots_mu": "initialiser.mu",
    "slots_sigma": "initialiser.log_sigma",
    "norm_input": "corrector.norm_inputs",
    "norm_slots": "corrector.norm_slots",
    "norm_mlp": "corrector.mlp.0",
    "to_q": "corrector.to_q",
    "to_k": "corrector.to_k",
    "to_v": "corrector.to_v",
    "knconv": "corrector.logit_refiner",
    "gru": "corrector.gru",
    "mlp.0": "corrector.mlp.1",
    "mlp.2": "corrector.mlp.3",
    "pos_predictor.layer_norm": "corrector.slot_refiner.predictor.0",
    "pos_predictor.mlp.0": "corrector.slot_refiner.predictor.1",
    "pos_predictor.mlp.2": "corrector.slot_refiner.predictor.3",
    "pos_predictor.mlp.4": "corrector.slot_refiner.predictor.5",
    "pos_encoder.encoder.0": "corrector.slot_refiner.encoder.0",
    "pos_encoder.encoder.2": "corrector.slot_refiner.encoder.2",
    "pos_encoder.encoder.4": "corrector.slot_refiner.encoder.4",
}
"""The authors' ``SlotAttention`` module names -> ocl's, under a module holding the initialiser
and the corrector (``model.processor`` in the recipe). ``slots_sigma`` is ``sigma`` itself, ocl
stores ``log(|sigma| + 1e-8)``; ``knconv.weight`` is a buffer in ocl (it never trains)."""

CHECKPOINT_NAMES = {
    "encoder_cnn.convs": "encoder.convs",
    "encoder_cnn.encoder_pos.embedding": "encoder.position.proj",
    "encoder_cnn.layer_norm": "encoder.mlp.0",
    "encoder_cnn.mlp.0": "encoder.mlp.1",
    "encoder_cnn.mlp.2": "encoder.mlp.3",
    "decoder_cnn.decoder_pos.embedding": "decoder.position.proj",
    "decoder_cnn.deconvs": "decoder.net",
    **{f"slot_attention.{theirs}": f"processor.{ours}" for theirs, ours in SLOT_ATTENTION_NAMES.items()},
}
"""The authors' ``SlotAttentionAutoEncoder`` state-dict names (``checkpoints/slash_movi.json``) ->
the ``slash_movi`` / ``slash_clevr6`` model's, module prefix by prefix (the conv indices are equal)."""

GRID = (8, 8)
"""The token grid of ``slot_attention_slash`` (64 inputs)."""


def rename(table: dict[str, str]) -> Callable[[str], str]:
    """Map an authors' parameter name through the longest matching module prefix of ``table``."""

    def renamed(name: str) -> str:
        for theirs in sorted(table, key=len, reverse=True):
            if name == theirs or name.startswith(theirs + "."):
                return table[theirs] + name[len(theirs) :]
        raise KeyError(f"no ocl name for the authors' parameter {name}")

    return renamed


def _logits(attention: torch.Tensor) -> torch.Tensor:
    """The authors' ``[B, heads=1, N, K]`` -> ocl's ``[B, K, N]``."""
    return attention[:, 0].transpose(1, 2)


def _theirs(logits: torch.Tensor) -> torch.Tensor:
    """ocl's ``[B, K, N]`` -> the authors' ``[B, 1, N, K]``."""
    return logits.transpose(1, 2)[:, None]


def _points(table: torch.Tensor) -> torch.Tensor:
    """An authors' point table (absent rows at -1.5 or below -1) -> ocl's (absent rows NaN)."""
    return table.masked_fill((table <= -1).any(dim=-1, keepdim=True), float("nan"))


# ----------------------------------------------------------------------------- ARK


def check_ark_wnconv(fixture: Fixture) -> None:
    ark = AttentionRefiningKernel("wnconv", size=5, learn=False).double()
    ark.weight.copy_(fixture["param/knconv.weight"])
    logits = _logits(fixture["input/attn_logits"]).requires_grad_(True)
    for call in (1, 2, 3):
        smoothed = ark(logits, (6, 6))
        expect_close(ark.weight, fixture[f"output/kernel_after_call{call}"], FLOAT64, f"kernel_after_call{call}")
        expect_close(_theirs(smoothed), fixture[f"output/smoothed_call{call}"], FLOAT64, f"smoothed_call{call}")
        if call == 1:
            (_theirs(smoothed) * fixture["input/grad_weight/smoothed_call1"]).sum().backward()
    expect_close(_theirs(logits.grad), fixture["grad/input/attn_logits"], FLOAT64, "grad attn_logits")
    assert not list(ark.parameters()), "the authors' wnconv kernel never trains"


def check_ark_conv(fixture: Fixture) -> None:
    ark = AttentionRefiningKernel("conv", size=5)
    mapping = load_mapped(ark, fixture.params(), lambda name: name.removeprefix("knconv."))
    logits = _logits(fixture["input/attn_logits"]).requires_grad_(True)
    smoothed = _theirs(ark(logits, (6, 6)))
    expect_close(smoothed, fixture["output/smoothed"], FLOAT64, "smoothed")
    (smoothed * fixture["input/grad_weight"]).sum().backward()
    expect_gradients(ark, fixture, mapping, "grad/param/", FLOAT64)
    expect_close(_theirs(logits.grad), fixture["grad/input/attn_logits"], FLOAT64, "grad attn_logits")


def check_ark_gaussian(fixture: Fixture) -> None:
    ark = AttentionRefiningKernel("gaussian", size=5, sigma=float(fixture["input/sigma"]))
    assert ark.padding == "reflect"  # the authors' GaussianBlur pads by reflection
    logits = _logits(fixture["input/attn_logits"]).requires_grad_(True)
    smoothed = _theirs(ark(logits, (6, 6)))
    expect_close(smoothed, fixture["output/smoothed"], FLOAT64, "smoothed")
    (smoothed * fixture["input/grad_weight"]).sum().backward()
    expect_close(_theirs(logits.grad), fixture["grad/input/attn_logits"], FLOAT64, "grad attn_logits")


# ----------------------------------------------------------------------------- IPPE


def check_ippe_modules(fixture: Fixture) -> None:
    ippe = PointPredictorEncoder(64)
    mapping = load_mapped(
        ippe, fixture.params(), lambda name: rename(SLOT_ATTENTION_NAMES)(name).split("slot_refiner.")[1]
    )
    slots = fixture["input/slots"].requires_grad_(True)
    points = fixture["input/points"].requires_grad_(True)
    outputs = {"predicted_points": ippe.predict(slots), "encoded_points": ippe.encoder(points)}
    for name, value in outputs.items():
        expect_close(value, fixture[f"output/{name}"], FLOAT64, name)
    sum((value * fixture[f"input/grad_weight/{name}"]).sum() for name, value in outputs.items()).backward()
    expect_gradients(ippe, fixture, mapping, "grad/param/", FLOAT64)
    expect_close(slots.grad, fixture["grad/input/slots"], FLOAT64, "grad slots")
    expect_close(points.grad, fixture["grad/input/points"], FLOAT64, "grad points")


def _slash_processor(fixture: Fixture) -> tuple[nn.Module, dict[str, str]]:
    """The recipe's initialiser and corrector (``configs/model/slash.yaml``, ``slash_128.yaml``) at
    the fixture's sizes (tokens 16, slots 64, MLP 128), with the authors' parameters."""
    processor = nn.Module()
    processor.initialiser = GaussianInit(4, 64, mean_init="normal", std_init="uniform", learn=False)
    processor.corrector = SlotAttention(
        16,
        64,
        num_iterations=3,
        mlp_hidden_dim=128,
        qkv_bias=True,
        logit_refiner=AttentionRefiningKernel("wnconv", learn=False),
        slot_refiner=PointPredictorEncoder(64, match_once=True, match_absent=True),
    )
    params = fixture.params()
    kernel = params.pop("knconv.weight")
    mapping = load_mapped(processor, params, rename(SLOT_ATTENTION_NAMES))
    with torch.no_grad():
        processor.initialiser.log_sigma.copy_((params["slots_sigma"].abs() + 1e-8).log())
        processor.corrector.logit_refiner.weight.copy_(kernel)
    return processor, mapping


def _check_slash_train(fixture: Fixture) -> None:
    processor, mapping = _slash_processor(fixture)
    corrector = processor.corrector
    inputs = fixture["input/inputs"].requires_grad_(True)
    initial = fixture["input/initial_slots"].requires_grad_(True)
    targets = _points(fixture["input/pos"])
    targets[1:] = float("nan")  # batch fusion: only the first sample is labelled
    output = corrector(initial, inputs, grid=GRID, context={"points": targets})
    expect_close(output.slots, fixture["output/train/slots"], FLOAT64, "train/slots")
    weights = output.attention + corrector.eps
    expect_close(_theirs(weights / weights.sum(-1, keepdim=True)), fixture["output/train/attn"], FLOAT64, "train/attn")
    for iteration in (1, 2, 3):
        name = f"train/pos_pred_iter{iteration}"
        expect_close(output.predictions[:, iteration - 1], fixture[f"output/{name}"], FLOAT64, name)
    assigned = output.refiner_state[:1].nan_to_num(ABSENT_COORDINATE)
    expect_close(assigned, fixture["output/train/pos_gt_aranged"], FLOAT64, "train/pos_gt_aranged")
    assert torch.isnan(output.refiner_state[1:]).all(), "unlabelled samples encode their predictions"
    (output.slots * fixture["input/grad_weight/train/slots"]).sum().backward()
    expect_gradients(processor, fixture, mapping, "grad/train/param/", FLOAT64)
    expect_close(inputs.grad, fixture["grad/train/input/inputs"], FLOAT64, "grad train inputs")
    expect_close(initial.grad, fixture["grad/train/input/initial_slots"], FLOAT64, "grad train initial_slots")


def _check_slash_eval(fixture: Fixture) -> None:
    processor, _ = _slash_processor(fixture)
    corrector = processor.corrector
    without_kernel = copy.deepcopy(corrector)
    without_kernel.logit_refiner = None
    inputs = fixture["input/inputs"].requires_grad_(True)
    initial = fixture["input/initial_slots"].requires_grad_(True)
    output = corrector(initial, inputs, grid=GRID)
    expect_close(output.slots, fixture["output/eval/slots"], FLOAT64, "eval/slots")
    for iteration in (1, 2, 3):
        name = f"eval/pos_pred_iter{iteration}"
        expect_close(output.predictions[:, iteration - 1], fixture[f"output/{name}"], FLOAT64, name)
    # The authors' per-iteration attentions: the kernel is at its fixed point (1/25), so calls of
    # 1, 2 and 3 iterations from the same slots run the same first iterations.
    with torch.no_grad():
        slots = initial
        for iteration in (1, 2, 3):
            attention = corrector(initial, inputs, grid=GRID, num_iterations=iteration).attention
            name = f"eval/attns_iter{iteration}"
            expect_close(_theirs(attention + corrector.eps), fixture[f"output/{name}"], FLOAT64, name)
            origin = without_kernel(slots, inputs, num_iterations=1).logits.softmax(dim=1) + corrector.eps
            name = f"eval/attns_origin_iter{iteration}"
            expect_close(_theirs(origin), fixture[f"output/{name}"], FLOAT64, name)
            slots = corrector(initial, inputs, grid=GRID, num_iterations=iteration).slots
    (output.slots * fixture["input/grad_weight/eval/slots"]).sum().backward()
    expect_close(inputs.grad, fixture["grad/eval/input/inputs"], FLOAT64, "grad eval inputs")
    expect_close(initial.grad, fixture["grad/eval/input/initial_slots"], FLOAT64, "grad eval initial_slots")


# ----------------------------------------------------------------------------- point loss


def check_point_loss(fixture: Fixture) -> None:
    loss = PointSupervision(weight=0.01, all_iterations=True, average="labelled")
    predicted = [fixture[f"input/pos_pred_iter{i}"].requires_grad_(True) for i in (1, 2, 3)]
    targets = _points(fixture["input/pos_gt"])[:, None]
    targets[1:] = float("nan")  # batch fusion: only the first sample is labelled
    assigned = torch.full_like(predicted[0], float("nan"))
    assigned[:1] = _points(fixture["input/pos_gt_aranged"])

    def weighted(iterations: list[torch.Tensor]) -> torch.Tensor:
        extras = {PREDICTED_POINTS: torch.stack(iterations, dim=1)[:, None], ASSIGNED_POINTS: assigned[:, None]}
        output = ModelOutput(slots=torch.zeros(1), masks=torch.zeros(1), extras=extras)
        return loss.weight * loss(output, {POINTS: targets})

    for iteration in (1, 2, 3):
        name = f"weighted_pos_loss_iter{iteration}"
        expect_close(weighted([predicted[iteration - 1]]), fixture[f"output/{name}"], FLOAT64, name)
    total = weighted(predicted)
    expect_close(total, fixture["output/total"], FLOAT64, "total")
    (total * fixture["input/grad_weight"]).backward()
    for iteration in (1, 2, 3):
        name = f"pos_pred_iter{iteration}"
        expect_close(predicted[iteration - 1].grad, fixture[f"grad/input/{name}"], FLOAT64, f"grad {name}")


CHECKS: dict[str, dict[str, Callable[[Fixture], None]]] = {
    "slash/ark_wnconv.npz": {"three_calls": check_ark_wnconv},
    "slash/ark_conv.npz": {"smoothed": check_ark_conv},
    "slash/ark_gaussian.npz": {"smoothed": check_ark_gaussian},
    "slash/ippe_modules.npz": {"predict_and_encode": check_ippe_modules},
    "slash/slot_attention_slash.npz": {"train": _check_slash_train, "eval": _check_slash_eval},
    "slash/point_loss.npz": {"loss": check_point_loss},
}
