"""Speed switches: bf16 mixed precision (losses that need fp32 keep it) and ``compile=``."""

from __future__ import annotations

import csv
import logging
import math

import pytest
import torch
from conftest import TINY, compose_config

import ocl.utils.precision
from ocl.build import build_model, build_trainer
from ocl.cli import train
from ocl.contracts.output import ModelOutput
from ocl.losses import SlotSlotContrastive, StructureSSIM3D, TemporalFeatureSimilarity
from ocl.losses.similarity import KEYS, SIMILARITY_LOGITS
from ocl.utils.compile import compile_model_parts, compile_options

SLOTCURRI_LOSSES_TINY = [
    "experiment=slotcontrast_synthetic",
    "loss=slotcurri",  # MSE + 3-D SSIM + contrastive
    "data.train_size=16",
    "data.val_size=2",
    "data.batch_size=2",
    "data.resolution=32",
    "data.train_frames=3",
    "data.val_frames=3",
    "model.processor.initialiser.num_slots=3",
    "model.processor.initialiser.dim=16",
    "model.decoder.hidden_dims=[16]",
    "model.scheduler.warmup_steps=2",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=null",
    "logger=csv",
]


def loss_outputs() -> list[tuple[torch.nn.Module, ModelOutput]]:
    """Each fp32-sensitive loss term with an output it reads (random tensors, fixed seed)."""
    torch.manual_seed(0)
    slots = torch.randn(2, 4, 5, 16)
    frames = torch.rand(2, 4, 3, 8, 8)
    pixels = ModelOutput(slots=slots, masks=torch.rand(2, 4, 5, 8, 8), reconstruction=frames + 0.1, target=frames)
    tokens = ModelOutput(
        slots=slots,
        masks=torch.rand(2, 4, 5, 4, 4),
        extras={KEYS: torch.randn(2, 4, 16, 32), SIMILARITY_LOGITS: torch.randn(2, 4, 16, 16)},
    )
    return [(SlotSlotContrastive(), pixels), (StructureSSIM3D(), pixels), (TemporalFeatureSimilarity(), tokens)]


@pytest.mark.parametrize("index", range(3), ids=["contrastive", "ssim3d", "similarity"])
def test_losses_compute_in_fp32_under_bf16_autocast(index):
    term, output = loss_outputs()[index]
    expected = term(output, {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = term(output, {})
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, expected, rtol=1e-6, atol=1e-6)  # bf16 keeps ~3 significant digits


@pytest.mark.slow
def test_bf16_mixed_training_takes_finite_steps_close_to_fp32(tmp_path):
    def step_losses(precision: str) -> dict[int, float]:
        output_dir = tmp_path / precision
        train(
            compose_config([*SLOTCURRI_LOSSES_TINY, f"trainer.precision={precision}", f"paths.output_dir={output_dir}"])
        )
        with open(output_dir / "csv" / "metrics.csv") as handle:
            return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}

    mixed, full = step_losses("bf16-mixed"), step_losses("32-true")
    assert sorted(mixed) == [0, 1, 2] and all(math.isfinite(value) for value in mixed.values())
    assert mixed != full  # the forward really ran in bf16
    assert mixed[0] == pytest.approx(full[0], rel=0.02)


@pytest.mark.parametrize(
    ("precision", "native_bf16", "warned"),
    [("bf16-mixed", False, True), ("16-mixed", False, True), ("bf16-mixed", True, False), ("32-true", False, False)],
)
def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(precision, native_bf16, warned, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ocl.utils.precision, "cpu_has_native_bf16", lambda: native_bf16)
    cfg = compose_config(
        [*TINY, f"paths.output_dir={tmp_path}", "trainer.accelerator=cpu", f"trainer.precision={precision}"]
    )
    with caplog.at_level(logging.WARNING, logger="ocl.build"):
        build_trainer(cfg)
    assert ("on a CPU without native bf16" in caplog.text) == warned


def test_compile_setting_values():
    assert compile_options(False) is None and compile_options(None) is None
    assert compile_options(True) == {}
    assert compile_options({"mode": "max-autotune"}) == {"mode": "max-autotune"}
    with pytest.raises(ValueError, match="compile must be true, false or a mapping"):
        compile_options("yes")


def test_compiled_parts_keep_parameter_names_and_outputs(tmp_path):
    model = build_model(compose_config([*TINY, f"paths.output_dir={tmp_path}"])).eval()
    names = list(model.state_dict())
    video = torch.rand(2, 2, 3, 32, 32)
    torch.manual_seed(0)
    expected = model({"video": video})
    graphs = []

    def recording_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph)
        return graph.forward

    assert compile_model_parts(model, backend=recording_backend) == ["encoder", "processor", "decoder"]
    torch.manual_seed(0)
    compiled = model({"video": video})
    assert graphs  # the parts ran through torch.compile
    assert list(model.state_dict()) == names  # checkpoints load with or without compilation
    torch.testing.assert_close(compiled.masks, expected.masks)
    torch.testing.assert_close(compiled.reconstruction, expected.reconstruction)


@pytest.mark.slow
def test_compile_switch_compiles_the_run_and_keeps_its_losses(tmp_path, caplog):
    common = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]
    with caplog.at_level(logging.INFO, logger="ocl.cli"):
        compiled = train(compose_config([*common, "compile={backend:eager}", f"paths.output_dir={tmp_path / 'c'}"]))
    assert "compiled with torch.compile: encoder, processor, decoder" in caplog.text
    plain = train(compose_config([*common, f"paths.output_dir={tmp_path / 'p'}"]))
    assert compiled == pytest.approx(plain, rel=1e-5, abs=1e-6)
