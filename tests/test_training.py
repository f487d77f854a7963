"""Training behaviour: loss goes down, seeds reproduce, resume is exact, NaN stops safely, W&B offline."""

import csv
import json
import time
from pathlib import Path

import pytest
import torch
import wandb
from conftest import TINY, compose_config, run_cli
from hydra.utils import instantiate
from wandb.proto import wandb_internal_pb2

from ocl.build import build_model, build_trainer
from ocl.cli import train
from ocl.losses.base import LossTerm
from ocl.methods.base import NonFiniteLossError
from ocl.results.wandb_log import read_records


def logged_losses(output_dir: Path) -> dict[int, float]:
    """``train/loss`` per step from the CSV logger of a run."""
    losses = {}
    with open(output_dir / "csv" / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def run_training(output_dir: Path, extra: list[str]) -> dict[str, float]:
    cfg = compose_config([*TINY, f"paths.output_dir={output_dir}", *extra])
    return train(cfg)


def test_short_training_lowers_the_loss(tmp_path):
    run_training(tmp_path, ["trainer.max_steps=60", "trainer.val_check_interval=60", "model.optimizer.lr=2e-3"])
    losses = list(logged_losses(tmp_path).values())
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5


def test_seed_makes_runs_reproducible(tmp_path):
    common = ["trainer.max_steps=3", "trainer.val_check_interval=3"]
    run_training(tmp_path / "a", [*common, "seed=5"])
    run_training(tmp_path / "b", [*common, "seed=5"])
    run_training(tmp_path / "c", [*common, "seed=6"])
    a, b, c = (logged_losses(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize(("period", "validate_every"), [(4, 3), (3, 8)])
def test_resume_from_mid_run_checkpoint_reproduces_next_losses(tmp_path, period, validate_every):
    common = [
        "trainer.max_steps=8",
        f"trainer.val_check_interval={validate_every}",
        f"callbacks.checkpoint.every_n_train_steps={period}",
    ]
    run_training(tmp_path / "full", common)
    checkpoint = tmp_path / "full" / "checkpoints" / f"step{period:07d}.ckpt"
    assert checkpoint.is_file()
    run_training(tmp_path / "resumed", [*common, f"ckpt_path={checkpoint}"])
    full, resumed = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(period, 8))
    assert {step: full[step] for step in resumed} == resumed


def test_last_checkpoint_is_the_final_step(tmp_path):
    run_training(
        tmp_path, ["trainer.max_steps=5", "trainer.val_check_interval=5", "callbacks.checkpoint.every_n_train_steps=2"]
    )
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
    assert (tmp_path / "checkpoints" / "step0000004.ckpt").is_file()


class NaNOnCall(LossTerm):
    """A loss term that is 0 until its ``nan_call``-th call, then NaN."""

    def __init__(self, nan_call: int) -> None:
        super().__init__(weight=1.0)
        self.calls, self.nan_call = 0, nan_call

    def forward(self, output, batch):
        self.calls += 1
        return output.slots.sum() * (float("nan") if self.calls >= self.nan_call else 0.0)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = compose_config(
        [
            *TINY,
            f"paths.output_dir={tmp_path}",
            "trainer.max_steps=10",
            "trainer.val_check_interval=100",
            "callbacks.checkpoint.every_n_train_steps=2",
        ]
    )
    model = build_model(cfg)
    model.losses["nan"] = NaNOnCall(nan_call=4)
    trainer = build_trainer(cfg)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        trainer.fit(model, datamodule=instantiate(cfg.data))
    checkpoint = torch.load(tmp_path / "checkpoints" / "step0000002.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    assert not (tmp_path / "checkpoints" / "step0000004.ckpt").exists()


def test_wandb_offline_run_writes_its_files(tmp_path):
    overrides = [o for o in TINY if o != "logger=csv"]
    cfg = compose_config(
        [
            *overrides,
            f"paths.output_dir={tmp_path}",
            "logger=wandb",
            "logger.mode=offline",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
        ]
    )
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log_file,) = runs[0].glob("run-*.wandb")
    assert log_file.stat().st_size > 0
    assert list((runs[0] / "files" / "media" / "videos" / "val").glob("mask_overlay_*.gif"))
    assert list((tmp_path / "visualisations").glob("val_step*.gif"))
    # The final validation's video is logged at the last step (W&B drops values logged at a step
    # below its own counter: the video must go under trainer/global_step like the metrics).
    wandb.finish()  # the run's log is complete once W&B has written it
    rows = logged_history(log_file)
    assert [row["trainer/global_step"] for row in rows if "val/mask_overlay" in row] == [2, 2]  # in fit, after it
    assert any("val/video_fg_ari" in row for row in rows)


def logged_history(log_file: Path, timeout_s: float = 60) -> list[dict[str, object]]:
    """The history rows (top-level key -> value) of a finished local W&B run log; W&B's service
    writes the log after ``wandb.finish()`` returns, so this waits for its exit record."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = []
        for serialised in read_records(log_file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(serialised)
            records.append(record)
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [
        {(item.key or item.nested_key[0]): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]


@pytest.mark.slow
def test_train_then_eval_cli_report_the_same_metrics(tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    trained_run = run_cli(
        "train.py",
        [
            *TINY,
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "callbacks.checkpoint.every_n_train_steps=2",
            f"hydra.run.dir={train_dir}",
        ],
    )
    assert trained_run.returncode == 0, trained_run.stderr[-3000:]
    result = run_cli("eval.py", [f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={eval_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((train_dir / "metrics.json").read_text())
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert "val/video_fg_ari" in trained
    assert trained == pytest.approx(evaluated, abs=1e-6)
    assert "val/video_fg_ari" in result.stdout
    tested_run = run_cli(
        "eval.py",
        [
            f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}",
            "eval.split=test",
            f"hydra.run.dir={tmp_path / 'test'}",
        ],
    )
    assert tested_run.returncode == 0, tested_run.stderr[-3000:]
    tested = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert 0.0 <= tested["test/video_fg_ari"] <= 1.0 and tested["test/video_fg_ari"] != evaluated["val/video_fg_ari"]


@pytest.mark.slow
def test_eval_of_a_missing_checkpoint_says_where_it_looked(tmp_path):
    result = run_cli("eval.py", [f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path}"], timeout=120)
    assert result.returncode != 0
    assert "checkpoint not found" in result.stderr and "nope.ckpt" in result.stderr
