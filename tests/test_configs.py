"""Every experiment composes, builds and runs one batch; bad overrides fail with Hydra's message."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, REPO, compose_config
from ocl.cli import build_model, train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert {"savi_synthetic", "slot_attention_synthetic"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.name == experiment
    OmegaConf.resolve(cfg)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    instantiate(cfg.data)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run(experiment, tmp_path):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            "debug=fast_dev_run",
            "callbacks.progress_bar=null",
            f"paths.output_dir={tmp_path}",
        ]
    )
    train(cfg)


def test_default_run_is_savi_synthetic(tmp_path):
    default = compose_config([f"paths.output_dir={tmp_path}"])
    explicit = compose_config(["experiment=savi_synthetic", f"paths.output_dir={tmp_path}"])
    assert OmegaConf.to_container(default) == OmegaConf.to_container(explicit)
    assert default.model._target_ == "ocl.methods.savi.SAVi" and default.data.level == "easy"


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.encoder.chanels=[8]", "chanels"),
        ("experiment=savi_synthetc", "savi_synthetc"),
        ("tranier.max_steps=3", "tranier"),
    ],
)
def test_bad_override_is_a_hydra_error_before_training(override, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", override, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(tmp_path) / "checkpoints").exists()
