"""scripts/import_checkpoint.py: the authors' released checkpoints become ocl checkpoints that eval.py and
predict.py run; files that do not fit get one clear line (tests/fixtures/golden/README.md, "Checkpoint layouts")."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import timm
import torch
from conftest import REPO, compose_config, run_cli
from golden_checks.checkpoints import EXPERIMENTS, TINY
from golden_checks.common import GOLDEN
from movi_fixtures import write_movi_tfds
from timm.layers import resample_abs_pos_embed

from ocl.build import build_model
from ocl.data.movi_convert import convert_movi
from ocl.methods.encoder_weights import FINGERPRINT_KEY
from ocl.modules.vit import ViTEncoder
from ocl.predict.model import compose_run_config, load_trained_model
from ocl.published import LAYOUTS, NameMap, convert_state_dict
from ocl.published.convert import VALUE_MAPS

CHECKPOINTS = GOLDEN / "checkpoints"
JSON_RECIPES = {
    "videosaur_movi_c.json": "videosaur_movi_c",
    "videosaur_ytvis.json": "videosaur_ytvis",
    "slotcontrast_movi_c.json": "slotcontrast_movi_c",
    "slotcontrast_ytvis2021.json": "slotcontrast_ytvis",
    "slotcurri_movi_c.json": "slotcurri_movi",
    "smtc.json": "smtc_ytvos",
    "slash_movi.json": "slash_movi",
    "slash_clevr6.json": "slash_clevr6",
}
"""Each published layout and the recipe experiment its files are imported as."""


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_checkpoint", REPO / "scripts" / "import_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_params(family: str) -> dict[str, torch.Tensor]:
    """The tiny fixture's parameters of ``family`` (their names), float32 as in a released file."""
    with np.load(CHECKPOINTS / f"tiny_{family}_movi_c.npz") as arrays:
        return {key[6:]: torch.from_numpy(arrays[key]).float() for key in arrays.files if key.startswith("param/")}


def lightning_file(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """``state`` saved as the authors' Lightning ``ModelCheckpoint`` saves it (README "Checkpoint layouts")."""
    torch.save(
        {
            "epoch": 12,
            "global_step": 100_000,
            "pytorch-lightning_version": "1.9.5",
            "state_dict": state,
            "loops": {"fit_loop": {}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "dirpath": "/logs"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": list(range(len(state)))}]}],
            "lr_schedulers": [{"base_lrs": [4e-4], "last_epoch": 100_000, "lr_lambdas": [{}]}],
        },
        path,
    )
    return path


def random_layout(name: str) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of ``checkpoints/<name>`` and random values."""
    layout = json.loads((CHECKPOINTS / name).read_text())
    assert len(layout["state_dict"]) == layout["n_keys"]
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(shape, generator=generator) for key, shape in layout["state_dict"].items()}


# --- every published layout fits its recipe's model ----------------------------------------


@pytest.mark.parametrize("name", sorted(JSON_RECIPES))
@pytest.mark.slow
def test_each_published_layout_fills_its_recipe_model_and_keeps_every_value(name: str, tmp_path: Path):
    family = name.split("_")[0].removesuffix(".json")
    layout = LAYOUTS[family]
    theirs = random_layout(name)
    cfg = compose_config([f"experiment={JSON_RECIPES[name]}", f"paths.output_dir={tmp_path}"])
    if "weights" in cfg.model.encoder:
        cfg.model.encoder.weights = "random"
    model = build_model(cfg)
    converted = convert_state_dict(layout, theirs, model)
    model.load_state_dict(converted)  # strict: every key of the model, no other
    names = NameMap(layout.renames, converted)
    value_maps, positions = dict(layout.value_maps), dict(layout.position_tables)
    unused = [key for key in theirs if key.startswith(layout.unused)]
    assert unused == (["encoder.norm.weight", "encoder.norm.bias"] if family == "smtc" else [])
    filled = set()
    for key, value in theirs.items():
        if key in unused:
            continue
        ours = names.ours(key)
        expected = VALUE_MAPS[value_maps[ours]](value) if ours in value_maps else value
        if ours in positions and value.shape != converted[ours].shape:  # e.g. DINOv2's 37x37 table at 336 px
            grid = round((converted[ours].shape[1] - positions[ours]) ** 0.5)
            expected = resample_abs_pos_embed(value, new_size=[grid, grid], num_prefix_tokens=positions[ours])
        assert torch.equal(converted[ours], expected.reshape(converted[ours].shape)), key
        filled.add(ours)
    for copy, source in layout.copies:  # parts their files lack: the converted values of other parts
        for key in [k for k in converted if k.startswith(copy)]:
            assert torch.equal(converted[key], converted[source + key[len(copy) :]])
            filled.add(key)
    tensors = {key for key, value in converted.items() if isinstance(value, torch.Tensor)}
    assert tensors - filled == {key for key in tensors if key.startswith(layout.kept)}


@pytest.mark.parametrize(
    ("experiment", "name"),
    [
        ("videosaur_movi_e", "videosaur_movi_c.json"),
        ("slotcontrast_movi_e", "slotcontrast_movi_c.json"),
        ("slotcurri_movi_e", "slotcurri_movi_c.json"),
        ("slotcurri_ytvis", "slotcurri_movi_c.json"),
    ],
)
@pytest.mark.slow
def test_the_other_recipes_of_a_family_have_the_keys_of_its_published_files(experiment: str, name: str, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "model.encoder.weights=random", f"paths.output_dir={tmp_path}"])
    target = build_model(cfg).state_dict()
    names = NameMap(LAYOUTS[experiment.split("_")[0]].renames, target)
    expected = sorted(json.loads((CHECKPOINTS / name).read_text())["state_dict"])
    assert sorted(names.theirs(key) for key, value in target.items() if isinstance(value, torch.Tensor)) == expected


# --- the script: an ocl checkpoint that eval.py and predict.py run ---------------------------


def tiny_command(family: str, theirs: Path, out: Path, *options: str) -> list[str]:
    """The script's arguments importing ``theirs`` as the recipe shrunk to the tiny fixture's sizes."""
    return ["--from", family, "--experiment", EXPERIMENTS[family], *options, str(theirs), str(out), *TINY[family]]


@pytest.fixture(scope="module")
def imported(script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny SlotContrast fixture saved as a released file, imported: ``(checkpoint, ViT file)``."""
    folder = tmp_path_factory.mktemp("imported")
    theirs = lightning_file(folder / "step=100000.ckpt", tiny_params("slotcontrast"))
    out, vit = folder / "slotcontrast.ckpt", folder / "vit.pth"
    assert script.main(tiny_command("slotcontrast", theirs, out, "--encoder-out", str(vit))) == 0
    return out, vit


def test_the_checkpoint_is_written_as_train_py_writes_one(imported: tuple[Path, Path]):
    out, vit = imported
    checkpoint = torch.load(out, weights_only=False)
    assert checkpoint["ocl"]["overrides"] == ["experiment=slotcontrast_movi_c", *TINY["slotcontrast"]]
    assert checkpoint["ocl"]["config"]["name"] == "slotcontrast_movi_c"
    assert checkpoint["global_step"] == 100_000 and checkpoint["epoch"] == 12
    # the frozen ViT is left out, with the fingerprint of the file's ViT
    assert not any(key.startswith("encoder.") for key in checkpoint["state_dict"])
    assert set(checkpoint[FINGERPRINT_KEY]) == {"encoder."}
    # --encoder-out: the file's ViT under timm's names, its own 4x4 position table, no final norm
    prefix = "encoder.module.backbone.model."
    theirs = {key[len(prefix) :]: value for key, value in tiny_params("slotcontrast").items() if key.startswith(prefix)}
    weights = torch.load(vit, weights_only=True)
    assert weights.keys() == theirs.keys() and all(torch.equal(weights[key], theirs[key]) for key in theirs)
    assert weights["pos_embed"].shape == (1, 17, 4) and "norm.weight" not in weights


def test_predict_runs_the_checkpoint_as_the_authors_model(imported: tuple[Path, Path]):
    out, vit = imported
    model = load_trained_model(compose_run_config(out, [f"model.encoder.weights={vit}"]))
    model.encoder.mean.zero_()  # the fixture's video is already normalised
    model.encoder.std.fill_(1.0)
    with np.load(CHECKPOINTS / "tiny_slotcontrast_movi_c.npz") as fixture:
        video = torch.from_numpy(fixture["input/video"]).float()
        state, masks = (torch.from_numpy(fixture[f"output/{key}"]) for key in ("processor/state", "decoder/masks"))
    with torch.no_grad():
        output = model({"video": video})
    # float32 weights and arithmetic against the authors' float64 run
    torch.testing.assert_close(output.slots.double(), state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.masks.flatten(-2).double(), masks, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_eval_runs_the_checkpoint_and_checks_the_vit_it_loads(imported: tuple[Path, Path], tmp_path: Path):
    out, vit = imported
    write_movi_tfds(tmp_path / "tfds", size=16, frames=3, shards={"val": [2]})
    convert_movi(tmp_path / "tfds", tmp_path / "movi_c", "movi_c", 16, splits=["val"], progress=False)
    common = [f"ckpt_path={out}", f"data.root={tmp_path / 'movi_c'}", "data.num_workers=0"]
    evaluated = run_cli("eval.py", [*common, f"model.encoder.weights={vit}", f"hydra.run.dir={tmp_path / 'e'}"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "val/video_fg_ari" in json.loads((tmp_path / "e" / "metrics.json").read_text())
    other = torch.load(vit, weights_only=True)
    other["pos_embed"] = other["pos_embed"] + 0.1
    torch.save(other, tmp_path / "other.pth")
    mismatched = run_cli(
        "eval.py", [*common, f"model.encoder.weights={tmp_path / 'other.pth'}", f"hydra.run.dir={tmp_path / 'm'}"]
    )
    assert mismatched.returncode != 0
    assert "encoder weights" in mismatched.stderr and "differ" in mismatched.stderr


def test_a_vit_file_without_the_final_norm_loads(tmp_path: Path):
    sizes = {"embed_dim": 4, "patch_size": 4, "num_heads": 2, "mlp_ratio": 1, "depth": 2}
    reference = timm.create_model("vit_small_patch14_dinov2", img_size=12, **sizes)
    state = {key: value for key, value in reference.state_dict().items() if not key.startswith("norm.")}
    torch.save(state, tmp_path / "vit.pth")
    encoder = ViTEncoder("vit_small_patch14_dinov2.lvd142m", image_size=12, weights=str(tmp_path / "vit.pth"), **sizes)
    assert all(torch.equal(value, state[key]) for key, value in encoder.vit.state_dict().items())


@pytest.mark.slow
def test_a_fine_tuned_vit_stays_in_the_checkpoint_and_needs_no_download(script: ModuleType, tmp_path: Path):
    theirs, out = tmp_path / "checkpoint_10000_loss_1.234.pth", tmp_path / "smtc.ckpt"
    state = random_layout("smtc.json")
    torch.save({"iteration": 10_000, "model_state_dict": state, "loss": torch.ones(())}, theirs)
    assert script.main(["--from", "smtc", "--experiment", "smtc_ytvos", str(theirs), str(out)]) == 0
    checkpoint = torch.load(out, weights_only=False)
    assert checkpoint["ocl"]["overrides"] == ["experiment=smtc_ytvos", "model.encoder.weights=random"]
    assert checkpoint["global_step"] == 10_000 and FINGERPRINT_KEY not in checkpoint
    qkv = state["encoder.blocks.3.attn.qkv.weight"]
    assert torch.equal(checkpoint["state_dict"]["encoder.vit.blocks.3.attn.qkv.weight"], qkv)
    model = load_trained_model(compose_run_config(out))  # what eval.py's SMTC protocols load; no download
    assert torch.equal(model.encoder.vit.blocks[3].attn.qkv.weight, qkv)


def test_a_cnn_model_is_imported_whole(script: ModuleType, tmp_path: Path, capsys):
    theirs = tmp_path / "checkpoint-latest.pth"
    state = random_layout("slash_movi.json")
    torch.save({"model_state_dict": state, "epoch": 500, "total_step": 250_000, "elapsed_time": 1.0}, theirs)
    command = ["--from", "slash", "--experiment", "slash_movi", str(theirs), str(tmp_path / "slash.ckpt")]
    assert script.main(command) == 0
    checkpoint = torch.load(tmp_path / "slash.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 250_000 and len(checkpoint["state_dict"]) == len(state)
    assert checkpoint["ocl"]["overrides"] == ["experiment=slash_movi"]
    model = load_trained_model(compose_run_config(tmp_path / "slash.ckpt"))
    assert torch.equal(model.encoder.mlp[0].weight, state["encoder_cnn.layer_norm.weight"])
    assert "hold no ViT" in one_line_error(script, capsys, [*command[:4], "--encoder-out", "vit.pth", *command[4:]])


# --- files that do not fit: one line each ---------------------------------------------------


def one_line_error(script: ModuleType, capsys: pytest.CaptureFixture, command: list[str]) -> str:
    """The script's error for ``command``: exit status 1 and one line on stderr."""
    capsys.readouterr()
    assert script.main(command) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_a_file_of_another_family_names_its_first_key_that_does_not_fit(script, tmp_path, capsys):
    theirs = lightning_file(tmp_path / "videosaur.ckpt", tiny_params("videosaur"))
    err = one_line_error(script, capsys, tiny_command("slotcontrast", theirs, tmp_path / "o.ckpt"))
    assert "'initializer.mean' is not a key of a SlotContrast" in err and "expected 'initializer.slots'" in err


def test_a_wrong_shape_names_the_key_its_shape_and_the_expected_one(script, tmp_path, capsys):
    state = tiny_params("slotcontrast")
    state["initializer.slots"] = torch.randn(1, 7, 8)  # the experiment has 4 slots
    theirs = lightning_file(tmp_path / "seven.ckpt", state)
    err = one_line_error(script, capsys, tiny_command("slotcontrast", theirs, tmp_path / "o.ckpt"))
    assert "'initializer.slots' has shape (1, 7, 8); this model expects (1, 4, 8)" in err
    assert not (tmp_path / "o.ckpt").exists()


def test_a_renamed_or_missing_key_is_named(script, tmp_path, capsys):
    state = tiny_params("slotcontrast")
    state["processor.module.corrector.to_query.weight"] = state.pop("processor.module.corrector.to_q.weight")
    theirs = lightning_file(tmp_path / "renamed.ckpt", state)
    err = one_line_error(script, capsys, tiny_command("slotcontrast", theirs, tmp_path / "o.ckpt"))
    assert "'processor.module.corrector.to_query.weight' maps to ocl's 'processor.corrector.to_query.weight'" in err
    assert "expected 'processor.module.corrector.to_q.weight'" in err
    state.pop("processor.module.corrector.to_query.weight")
    theirs = lightning_file(tmp_path / "missing.ckpt", state)
    err = one_line_error(script, capsys, tiny_command("slotcontrast", theirs, tmp_path / "o.ckpt"))
    assert "the file has no 'processor.module.corrector.to_q.weight' (shape (8, 8)" in err


def test_a_file_without_the_familys_container_says_what_it_holds(script, tmp_path, capsys):
    theirs = tmp_path / "checkpoint-latest.pth"
    torch.save({"model_state_dict": tiny_params("slotcontrast"), "epoch": 3}, theirs)
    err = one_line_error(script, capsys, tiny_command("slotcontrast", theirs, tmp_path / "o.ckpt"))
    assert "has no 'state_dict'" in err and "epoch, model_state_dict" in err


def test_a_missing_or_unreadable_file_and_an_unknown_experiment(script, tmp_path, capsys):
    out = tmp_path / "o.ckpt"
    err = one_line_error(script, capsys, tiny_command("videosaur", tmp_path / "none.ckpt", out))
    assert "checkpoint not found" in err
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    err = one_line_error(script, capsys, tiny_command("videosaur", tmp_path / "broken.ckpt", out))
    assert "torch cannot read" in err
    theirs = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": tiny_params("videosaur"), "hparams": argparse.Namespace(lr=1e-4)}, theirs)
    err = one_line_error(script, capsys, tiny_command("videosaur", theirs, out))
    assert "Unsupported global: GLOBAL argparse.Namespace" in err and "--trust-pickle" in err
    assert script.main([*tiny_command("videosaur", theirs, out), "--trust-pickle"]) == 0
    theirs = lightning_file(tmp_path / "videosaur.ckpt", tiny_params("videosaur"))
    command = ["--from", "videosaur", "--experiment", "videosaur_nowhere", str(theirs), str(out)]
    assert "cannot compose experiment=videosaur_nowhere" in one_line_error(script, capsys, command)


@pytest.mark.slow
def test_the_entry_point_prints_one_line_and_no_traceback(tmp_path: Path):
    result = run_cli("scripts/import_checkpoint.py", tiny_command("slotcurri", tmp_path / "none.ckpt", tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'none.ckpt'}"]
