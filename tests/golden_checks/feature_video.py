"""Golden checks: VideoSAUR, SlotContrast and SlotCurri modules and losses (tests/fixtures/golden/README.md).

Every component is built with the recipe's settings (``configs/model/videosaur.yaml``,
``slotcontrast.yaml``, ``configs/loss/videosaur.yaml``, ``slotcontrast.yaml``, ``slotcurri.yaml``):
slot attention with ``gru_state="normalised"``, predictor and SlotMixer allocator with
``legacy_scale=True``, the similarity loss with ``unmatched_rows="uniform"``, the contrastive
loss with ``softmax_over="current"``. Everything runs in float64 (``FLOAT64``): the losses keep
float64 inputs in float64 and the SSIM window is built in float32 as ``pytorch_msssim`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from unittest import mock

import torch

from golden_checks.common import FLOAT64, Fixture, expect_close, expect_gradients, load_mapped
from ocl.contracts.output import ModelOutput
from ocl.losses.contrastive import SlotSlotContrastive
from ocl.losses.reconstruction import ReconstructionMSE
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS, TemporalFeatureSimilarity, similarity_targets
from ocl.losses.ssim3d import StructureSSIM3D
from ocl.modules.decoders import MLPFeatureDecoder, SlotMixerDecoder
from ocl.modules.initialisers import GaussianInit, LearnedInit
from ocl.modules.predictors import TransformerPredictor
from ocl.modules.slot_attention import SlotAttention
from ocl.modules.video import VideoSlotProcessor

Rename = Callable[[str], str]


def _substitutions(*pairs: tuple[str, str]) -> Rename:
    """A renamer applying each ``(regex, replacement)`` in order."""

    def rename(name: str) -> str:
        for pattern, replacement in pairs:
            name = re.sub(pattern, replacement, name)
        return name

    return rename


SLOT_ATTENTION_NAMES = _substitutions((r"^norm_features\.", "norm_inputs."), (r"^mlp\.layers\.", "mlp."))
PREDICTOR_NAMES = _substitutions(
    (r"^blocks\.0\.self_attn\.qkv\.", "qkv."),
    (r"^blocks\.0\.self_attn\.out_proj\.", "proj."),
    (r"^blocks\.0\.norm1\.", "norm_attention."),
    (r"^blocks\.0\.norm2\.", "norm_ffn."),
    (r"^blocks\.0\.linear1\.", "ffn.0."),
    (r"^blocks\.0\.linear2\.", "ffn.2."),
)
INITIALISER_NAMES = {"mean": "mu", "log_std": "log_sigma", "slots": "slots"}


def _slot_mixer_names(num_render_layers: int) -> Rename:
    """The authors' SlotMixerDecoder names -> ocl's (``num_render_layers`` Linear layers before the output)."""
    return _substitutions(
        (r"^pos_emb$", "position"),
        (r"^allocator\.blocks\.(\d+)\.self_attn\.qkv\.", r"allocator.\1.qkv."),
        (r"^allocator\.blocks\.(\d+)\.self_attn\.out_proj\.", r"allocator.\1.proj."),
        (r"^allocator\.blocks\.(\d+)\.norm1\.", r"allocator.\1.norm_attention."),
        (r"^allocator\.blocks\.(\d+)\.norm2\.", r"allocator.\1.norm_ffn."),
        (r"^allocator\.blocks\.(\d+)\.linear1\.", r"allocator.\1.ffn.0."),
        (r"^allocator\.blocks\.(\d+)\.linear2\.", r"allocator.\1.ffn.2."),
        (r"^norm_q\.", "norm_queries."),
        (r"^norm_k\.", "norm_slots."),
        (r"^renderer\.layers\.", "render."),
        (r"^output_transform\.", f"render.{2 * num_render_layers}."),
    )


def _processor_names(name: str) -> str:
    """The authors' video model names -> ocl's :class:`VideoSlotProcessor` names."""
    if name.startswith("initializer."):
        return "initialiser." + INITIALISER_NAMES[name.removeprefix("initializer.")]
    if name.startswith("processor.module.corrector."):
        return "corrector." + SLOT_ATTENTION_NAMES(name.removeprefix("processor.module.corrector."))
    return "predictor." + PREDICTOR_NAMES(name.removeprefix("processor.module.predictor."))


@contextmanager
def injected_randn(noise: torch.Tensor) -> Iterator[None]:
    """``torch.randn`` returns the fixture's recorded draw ``noise`` (the shapes must agree)."""

    def randn(*size: int, **kwargs: object) -> torch.Tensor:
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        assert shape == tuple(noise.shape), f"unexpected random draw of shape {shape}"
        return noise.clone()

    with mock.patch("torch.randn", randn):
        yield


# --- 1. slot attention ------------------------------------------------------------------


def _slot_attention(fixture: Fixture, mlp_hidden_dim: int, iterations: int) -> None:
    module = SlotAttention(input_dim=12, slot_dim=8, mlp_hidden_dim=mlp_hidden_dim, gru_state="normalised")
    mapping = load_mapped(module, fixture.params(), SLOT_ATTENTION_NAMES)
    slots = fixture["input/slots"].requires_grad_()
    features = fixture["input/features"].requires_grad_()
    output = module(slots, features, num_iterations=iterations)
    case = f"iters{iterations}"
    scalar = (output.slots * fixture["input/grad_weight_slots"]).sum() + (
        output.attention * fixture["input/grad_weight_masks"]
    ).sum()
    expect_close(output.slots, fixture[f"output/{case}/slots"], FLOAT64, "slots")
    expect_close(output.attention, fixture[f"output/{case}/masks"], FLOAT64, "masks")
    expect_close(scalar, fixture[f"output/{case}/scalar"], FLOAT64, "scalar")
    scalar.backward()
    expect_close(slots.grad, fixture[f"grad/{case}/input/slots"], FLOAT64, "grad input/slots")
    expect_close(features.grad, fixture[f"grad/{case}/input/features"], FLOAT64, "grad input/features")
    expect_gradients(module, fixture, mapping, f"grad/{case}/param/", FLOAT64)
    if iterations == 3:
        with torch.no_grad():
            for done in range(1, 4):
                step = module(fixture["input/slots"], fixture["input/features"], num_iterations=done)
                expected_slots = fixture["output/iters3/per_iteration_slots"][done - 1]
                expected_masks = fixture["output/iters3/per_iteration_masks"][done - 1]
                expect_close(step.slots, expected_slots, FLOAT64, f"slots after iteration {done}")
                expect_close(step.attention, expected_masks, FLOAT64, f"masks after iteration {done}")


def _slot_attention_cases(mlp_hidden_dim: int) -> dict[str, Callable[[Fixture], None]]:
    return {f"iters{n}": (lambda fixture, n=n: _slot_attention(fixture, mlp_hidden_dim, n)) for n in (1, 2, 3)}


# --- 2. initialisers ----------------------------------------------------------------------


def _init_random(fixture: Fixture) -> None:
    default = GaussianInit(4, 8, mean_init="zeros")
    expect_close(default.mu, fixture["output/default_mean"], FLOAT64, "default mean")
    expect_close(default.log_sigma, fixture["output/default_log_std"], FLOAT64, "default log_std")
    module = GaussianInit(4, 8, mean_init="zeros")
    mapping = load_mapped(module, fixture.params(), INITIALISER_NAMES.__getitem__)
    with injected_randn(fixture["input/noise"]):
        slots = module(2)
    expect_close(slots, fixture["output/slots"], FLOAT64, "slots")
    (slots * fixture["input/grad_weight"]).sum().backward()
    expect_gradients(module, fixture, mapping, "grad/param/", FLOAT64)


def _init_fixed_learned(fixture: Fixture) -> None:
    torch.manual_seed(5)
    default = LearnedInit(4, 8)
    expect_close(default.slots, fixture["output/default_slots_seed5"][0], FLOAT64, "default slots (seed 5)")
    module = LearnedInit(4, 8)
    mapping = load_mapped(module, fixture.params(), INITIALISER_NAMES.__getitem__)
    slots = module(2)
    expect_close(slots, fixture["output/slots"], FLOAT64, "slots")
    (slots * fixture["input/grad_weight"]).sum().backward()
    expect_gradients(module, fixture, mapping, "grad/param/", FLOAT64)


# --- 3. predictor -------------------------------------------------------------------------


def _predictor(fixture: Fixture) -> None:
    module = TransformerPredictor(8, num_heads=2, legacy_scale=True).eval()
    mapping = load_mapped(module, fixture.params(), PREDICTOR_NAMES)
    slots = fixture["input/slots"].requires_grad_()
    output = module(slots)
    expect_close(output, fixture["output/slots"], FLOAT64, "slots")
    (output * fixture["input/grad_weight"]).sum().backward()
    expect_close(slots.grad, fixture["grad/input/slots"], FLOAT64, "grad input/slots")
    expect_gradients(module, fixture, mapping, "grad/param/", FLOAT64)


# --- 4. decoders --------------------------------------------------------------------------


def _decoder(fixture: Fixture, module: torch.nn.Module, rename: Rename) -> None:
    module.eval()
    mapping = load_mapped(module, fixture.params(), rename)
    slots = fixture["input/slots"].requires_grad_()
    reconstruction, masks = module(slots)
    scalar = (reconstruction * fixture["input/grad_weight_reconstruction"]).sum() + (
        masks * fixture["input/grad_weight_masks"]
    ).sum()
    expect_close(reconstruction, fixture["output/reconstruction"], FLOAT64, "reconstruction")
    expect_close(masks, fixture["output/masks"], FLOAT64, "masks")
    expect_close(scalar, fixture["output/scalar"], FLOAT64, "scalar")
    scalar.backward()
    expect_close(slots.grad, fixture["grad/input/slots"], FLOAT64, "grad input/slots")
    expect_gradients(module, fixture, mapping, "grad/param/", FLOAT64)


def _decoder_mlp(fixture: Fixture) -> None:
    module = MLPFeatureDecoder(slot_dim=8, num_tokens=9, output_dim=6, hidden_dims=(16, 16, 16))
    _decoder(fixture, module, _substitutions((r"^pos_emb$", "position"), (r"^mlp\.layers\.", "mlp.")))


def _decoder_slot_mixer(fixture: Fixture, output_dim: int, num_blocks: int, num_render_layers: int) -> None:
    module = SlotMixerDecoder(
        slot_dim=8,
        num_tokens=9,
        output_dim=output_dim,
        num_blocks=num_blocks,
        num_heads=4,
        hidden_dims=(16,) * num_render_layers,
        legacy_scale=True,
    )
    _decoder(fixture, module, _slot_mixer_names(num_render_layers))


# --- 5. processors ------------------------------------------------------------------------


def _processor(
    fixture: Fixture, processor: VideoSlotProcessor, outputs: str, grads: str, noise: torch.Tensor | None = None
) -> None:
    """Run ``processor`` (eval) on ``input/features``; compare the initial, corrected and
    predicted slots, the corrector masks, the scalar and its gradients. ocl's processor returns
    no predicted states: they are the predictor applied to each frame's corrected slots."""
    processor.eval()
    mapping = load_mapped(processor, fixture.params(), _processor_names)
    features = fixture["input/features"].requires_grad_()

    def draws() -> AbstractContextManager[None]:
        return nullcontext() if noise is None else injected_randn(noise)

    with draws():
        initial = processor.initialiser(features.shape[0])
    with draws():
        slots, attention, _ = processor(features)
    expect_close(initial, fixture["output/initial_slots"], FLOAT64, "initial slots")
    expect_close(slots, fixture[f"{outputs}/state"], FLOAT64, "state")
    expect_close(slots, fixture[f"{outputs}/corrector/slots"], FLOAT64, "corrector slots")
    expect_close(attention, fixture[f"{outputs}/corrector/masks"], FLOAT64, "corrector masks")
    with torch.no_grad():
        predicted = processor.predictor(slots.flatten(0, 1)).unflatten(0, slots.shape[:2])
    expect_close(predicted, fixture[f"{outputs}/state_predicted"], FLOAT64, "predicted state")
    scalar = (slots * fixture["input/grad_weight_state"]).sum() + (attention * fixture["input/grad_weight_masks"]).sum()
    expect_close(scalar, fixture[f"{outputs}/scalar"], FLOAT64, "scalar")
    scalar.backward()
    expect_close(features.grad, fixture[f"{grads}/input/features"], FLOAT64, "grad input/features")
    expect_gradients(processor, fixture, mapping, f"{grads}/param/", FLOAT64)


def _processor_videosaur(fixture: Fixture) -> None:
    processor = VideoSlotProcessor(
        GaussianInit(4, 8, mean_init="zeros"),
        SlotAttention(8, 8, num_iterations=2, gru_state="normalised"),
        TransformerPredictor(8, num_heads=2, legacy_scale=True),
        first_frame_iterations=3,
    )
    _processor(fixture, processor, "output", "grad", fixture["input/noise"])


def _processor_slotcurri(fixture: Fixture, cycle: bool) -> None:
    processor = VideoSlotProcessor(
        LearnedInit(4, 8),
        SlotAttention(8, 8, num_iterations=2, mlp_hidden_dim=32, gru_state="normalised"),
        TransformerPredictor(8, num_heads=2, legacy_scale=True),
        first_frame_iterations=3,
    )
    processor.cyclic_inference = cycle
    case = f"cycle{int(cycle)}"
    _processor(fixture, processor, f"output/{case}", f"grad/{case}")


# --- 6. losses ----------------------------------------------------------------------------


def _similarity(fixture: Fixture, temperature: float, keys: str) -> None:
    decoded_name = "decoded_movi" if temperature == 0.075 else "decoded_ytvis"
    decoded = fixture[f"input/{decoded_name}"].requires_grad_()
    patches = decoded.shape[2]
    key_tensor = fixture[f"input/keys_{keys}"]
    output = ModelOutput(slots=torch.zeros(2, 3, 1, 1), masks=torch.zeros(2, 3, 1, 1, 1))
    # as FeatureVideoMethod: the similarity logits are the decoder's last N channels
    output.extras.update({KEYS: key_tensor, SIMILARITY_LOGITS: decoded[..., -patches:]})
    case = f"tau{temperature}_{keys}"
    loss = TemporalFeatureSimilarity(temperature=temperature, unmatched_rows="uniform")(output, {})
    targets = similarity_targets(key_tensor, temperature, "uniform")
    expect_close(targets, fixture[f"output/{case}/target"], FLOAT64, "target")
    expect_close(loss, fixture[f"output/{case}/loss"], FLOAT64, "loss")
    loss.backward()
    expect_close(decoded.grad, fixture[f"grad/{case}/input/{decoded_name}"], FLOAT64, f"grad input/{decoded_name}")


def _contrastive(fixture: Fixture) -> None:
    slots = fixture["input/slots"].requires_grad_()
    term = SlotSlotContrastive(temperature=0.1, softmax_over="current")
    loss = term(ModelOutput(slots=slots, masks=torch.zeros(0)), {})
    expect_close(loss, fixture["output/loss"], FLOAT64, "loss")
    loss.backward()
    expect_close(slots.grad, fixture["grad/input/slots"], FLOAT64, "grad input/slots")


def _ssim3d(fixture: Fixture) -> None:
    recon = fixture["input/recon"].requires_grad_()  # [B, D, T, h, w]
    batch, dim, frames, height, width = recon.shape

    def tokens(volume: torch.Tensor) -> torch.Tensor:  # -> [B, T, h*w, D], as FeatureVideoMethod outputs
        return volume.permute(0, 2, 3, 4, 1).reshape(batch, frames, height * width, dim)

    output = ModelOutput(
        slots=torch.zeros(batch, frames, 1, 1),
        masks=torch.zeros(batch, frames, 1, height, width),
        reconstruction=tokens(recon),
        target=tokens(fixture["input/orig"]),
    )
    loss = StructureSSIM3D()(output, {})
    expect_close(loss, fixture["output/loss"], FLOAT64, "loss")
    loss.backward()
    expect_close(recon.grad, fixture["grad/input/recon"], FLOAT64, "grad input/recon")


def _mse(fixture: Fixture) -> None:
    decoded = fixture["input/decoded"].requires_grad_()
    features = fixture["input/features"]
    # as FeatureVideoMethod: the reconstruction is the decoder's first D channels
    output = ModelOutput(
        slots=torch.zeros(1), masks=torch.zeros(1), reconstruction=decoded[..., : features.shape[-1]], target=features
    )
    loss = ReconstructionMSE()(output, {})
    expect_close(loss, fixture["output/loss"], FLOAT64, "loss")
    loss.backward()
    expect_close(decoded.grad, fixture["grad/input/decoded"], FLOAT64, "grad input/decoded")


CHECKS: dict[str, dict[str, Callable[[Fixture], None]]] = {
    "slot_attention_nomlp.npz": _slot_attention_cases(0),
    "slot_attention_mlp.npz": _slot_attention_cases(32),
    "init_random.npz": {"default_and_sample": _init_random},
    "init_fixed_learned.npz": {"default_and_sample": _init_fixed_learned},
    "predictor_transformer.npz": {"legacy_scale": _predictor},
    "decoder_mlp.npz": {"movi": _decoder_mlp},
    "decoder_slotmixer_movi.npz": {"movi": lambda fixture: _decoder_slot_mixer(fixture, 9, 2, 4)},
    "decoder_slotmixer_ytvis.npz": {"ytvis": lambda fixture: _decoder_slot_mixer(fixture, 15, 3, 3)},
    "processor_videosaur.npz": {"forward": _processor_videosaur},
    "processor_slotcurri_cycle.npz": {
        "cycle0": lambda fixture: _processor_slotcurri(fixture, cycle=False),
        "cycle1": lambda fixture: _processor_slotcurri(fixture, cycle=True),
    },
    "loss_videosaur_timesim.npz": {
        f"tau{tau}_{keys}": (lambda fixture, tau=tau, keys=keys: _similarity(fixture, tau, keys))
        for tau in (0.075, 0.25)
        for keys in ("normal", "negrow")
    },
    "loss_slotcontrast_slotslot.npz": {"softmax_over_current": _contrastive},
    "loss_slotcurri_ssim3d.npz": {"loss": _ssim3d},
    "loss_videosaur_mse.npz": {"loss": _mse},
}
