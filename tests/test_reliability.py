"""What a demanding user tries (issue 15's reliability findings): reruns in a used run folder,
broken and foreign checkpoints, bad values, divergence, W&B without network, a run folder that
cannot be made. Each failure is one clear line; each resume is exact or refused."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import wandb
from conftest import TINY, compose_config, run_cli

from ocl.build import UsageError, with_training_overrides
from ocl.callbacks.preemption import PreemptionCheckpoint
from ocl.cli import evaluate, train
from ocl.data.datamodule import NOT_RESUMABLE_WARNING
from ocl.utils.checkpoints import AtomicCheckpointIO, CheckpointError, read_checkpoint
from ocl.utils.config_values import ConfigValueError
from ocl.utils.loggers import make_wandb_logger
from ocl.utils.resume import resume_point

RUN = [*TINY, "trainer.max_steps=6", "trainer.val_check_interval=6", "callbacks.checkpoint.every_n_train_steps=2"]
"""A finished 6-step run with checkpoints at steps 2, 4, 6 and ``last.ckpt``."""


def config(output_dir: Path, *overrides: str, name: str = "train"):
    return compose_config([*RUN, *overrides, f"paths.output_dir={output_dir}"], name=name)


def logged(output_dir: Path, column: str) -> dict[int, str]:
    """``column`` per step from the run's CSV log, as written (text: compared bit for bit)."""
    with open(output_dir / "csv" / "metrics.csv") as handle:
        return {int(row["step"]): row[column] for row in csv.DictReader(handle) if row.get(column)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The run folder of :data:`RUN` (seed 0), trained once per module; tests that change a
    folder work on a copy (:func:`copy_of`)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    train(config(folder), RUN)
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "run"))


def checkpoints(folder: Path) -> list[Path]:
    """The checkpoints a run in ``folder`` may resume from, newest first."""
    return PreemptionCheckpoint(str(folder / "checkpoints")).resume_candidates()


# ----------------------------------------------------------------------------- 2. reruns in a used folder


def test_a_rerun_with_another_config_is_refused_before_anything_is_written(finished_run, tmp_path):
    folder = copy_of(finished_run, tmp_path)
    identity = (folder / "run.json").read_text()
    with pytest.raises(CheckpointError, match=r"another config \(seed: 0 -> 1\).*hydra\.run\.dir.*ckpt_path=\S+\.ckpt"):
        train(config(folder, "seed=1"))
    assert (folder / "run.json").read_text() == identity  # the seed-0 run's record is untouched
    with pytest.raises(CheckpointError, match="model.optimizer.lr: 0.001 -> 0.0001"):
        resume_point(config(folder, "model.optimizer.lr=1e-4"), checkpoints(folder))
    # Resume-safe: the run's length (and the schedule that follows it); a new lr with reset_schedule.
    for safe in (["trainer.max_steps=8"], ["model.optimizer.lr=1e-4", "resume.reset_schedule=true"]):
        path, _ = resume_point(config(folder, *safe), checkpoints(folder))
        assert path is not None


def test_a_longer_rerun_continues_without_lightnings_not_resumable_warning(finished_run, tmp_path):
    folder = copy_of(finished_run, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(folder, "trainer.max_steps=8"))
    assert not [w for w in caught if NOT_RESUMABLE_WARNING in str(w.message)]
    losses = logged(folder, "train/loss")
    assert len(losses) == 8  # two more steps
    assert {step: losses[step] for step in range(6)} == logged(finished_run, "train/loss")


# ----------------------------------------------------------------------------- 3. fallback, atomic writes


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(finished_run, tmp_path, caplog):
    folder = copy_of(finished_run, tmp_path)
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # killed while writing (without atomic writes)
    (folder / "checkpoints" / "step0000006.ckpt").write_bytes(b"")
    os.utime(last)  # the newest
    with caplog.at_level(logging.INFO, logger="ocl.utils.resume"):
        train(config(folder))
    assert "last.ckpt cannot be read: truncated" in caplog.text
    assert "step0000006.ckpt is empty" in caplog.text
    assert "resuming from" in caplog.text and "step0000004.ckpt" in caplog.text
    assert logged(folder, "train/loss") == logged(finished_run, "train/loss")  # steps 4 and 5 redone exactly

    for path in (folder / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"none of the \d+ checkpoints in .* can be read"):
        resume_point(config(folder), checkpoints(folder))


def test_a_failed_checkpoint_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(TypeError, match="pickle"):  # fails half-way through the write
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "unpicklable": threading.Lock()}, path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no partial file left


# ----------------------------------------------------------------------------- 4. unreadable and foreign checkpoints


def test_unreadable_and_foreign_checkpoints_are_named_in_one_line(finished_run, tmp_path):
    good = finished_run / "checkpoints" / "last.ckpt"
    empty, truncated = tmp_path / "empty.ckpt", tmp_path / "truncated.ckpt"
    empty.write_bytes(b"")
    truncated.write_bytes(good.read_bytes()[:-100])
    for path, message in (
        (tmp_path / "missing.ckpt", "checkpoint not found"),
        (empty, "is empty"),
        (truncated, "cannot be read: truncated"),
    ):
        with pytest.raises(CheckpointError, match=message) as error:
            train(config(tmp_path / "run", f"ckpt_path={path}"))
        assert path.name in str(error.value) and "\n" not in str(error.value)
        with pytest.raises(SystemExit, match=message):  # eval.py / predict.py
            with_training_overrides(["eval.py", f"ckpt_path={path}"])
    # A checkpoint of SAVi given to a Slot Attention run (no predictor): named with its experiment.
    with pytest.raises(CheckpointError, match=r"written by experiment 'savi_synthetic'.*'slot_attention_synthetic'"):
        train(config(tmp_path / "foreign", "experiment=slot_attention_synthetic", f"ckpt_path={good}"))


def test_a_quoted_checkpoint_path_with_a_space_is_read_as_hydra_reads_it(finished_run, tmp_path):
    spaced = tmp_path / "with space" / "last.ckpt"
    spaced.parent.mkdir()
    shutil.copy(finished_run / "checkpoints" / "last.ckpt", spaced)
    argv = with_training_overrides(["eval.py", f"ckpt_path='{spaced}'"])
    assert argv[-1] == f"ckpt_path='{spaced}'" and "trainer.max_steps=6" not in argv  # training-only: not replayed
    assert [o for o in argv[1:-1] if o.startswith("data.")] == [o for o in RUN if o.startswith("data.")]


# ----------------------------------------------------------------------------- 5. values checked first


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.processor.initialiser.num_slots=0", "model.processor.initialiser.num_slots must be an integer >= 1"),
        ("trainer.max_steps=abc", "trainer.max_steps must be an integer >= 1, got 'abc'"),
        ("model.optimizer.lr=-1", "model.optimizer.lr must be a number > 0"),
        ("model.decoder.output_size=abc", "model.decoder.output_size must be an integer >= 1, got 'abc'"),
        ("model.encoder.output_dim=0", "model.encoder.output_dim must be an integer >= 1, got 0"),
    ],
)
def test_bad_values_stop_the_run_before_any_work(tmp_path, override, message):
    with pytest.raises(ConfigValueError, match=message):
        train(config(tmp_path, override))
    assert not tmp_path.joinpath("run.json").exists()


# ----------------------------------------------------------------------------- 6. divergence


def test_reset_schedule_gives_the_new_lr_from_the_resumed_step(finished_run, tmp_path):
    checkpoint = finished_run / "checkpoints" / "step0000002.ckpt"
    train(config(tmp_path / "fresh", "model.optimizer.lr=1e-4"))
    train(
        config(tmp_path / "reset", "model.optimizer.lr=1e-4", "resume.reset_schedule=true", f"ckpt_path={checkpoint}")
    )
    train(config(tmp_path / "kept", "model.optimizer.lr=1e-4", f"ckpt_path={checkpoint}"))
    fresh, reset, kept = (logged(tmp_path / name, "train/lr") for name in ("fresh", "reset", "kept"))
    assert sorted(reset) == [2, 3, 4, 5]
    assert reset == {step: fresh[step] for step in reset}  # the schedule of a run with the new lr
    assert kept == {step: lr for step, lr in logged(finished_run, "train/lr").items() if step >= 2}  # the checkpoint's


def test_eval_of_a_diverged_checkpoint_warns_and_marks_its_metrics(finished_run, tmp_path, caplog):
    checkpoint = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=False)
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))
    diverged = tmp_path / "diverged.ckpt"
    torch.save(checkpoint, diverged)
    with caplog.at_level(logging.WARNING, logger="ocl.cli"):
        evaluate(config(tmp_path / "eval", f"ckpt_path={diverged}", name="eval"))
    assert "looks diverged" in caplog.text and name in caplog.text
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["diverged"] is True and name in written["diverged_because"]


def test_eval_refuses_a_checkpoint_of_another_model_and_a_mistyped_split_in_one_line(finished_run, tmp_path):
    last = finished_run / "checkpoints" / "last.ckpt"
    other_model = config(tmp_path / "eval", f"ckpt_path={last}", "model.encoder.output_dim=24", name="eval")
    with pytest.raises(CheckpointError, match="does not fit this run's model: it was written by experiment"):
        evaluate(other_model)
    with pytest.raises(UsageError, match="eval.split must be val or test, got 'tset'"):
        evaluate(config(tmp_path / "eval", f"ckpt_path={last}", "eval.split=tset", name="eval"))


# ----------------------------------------------------------------------------- 7. W&B


def test_an_empty_wandb_mode_counts_as_unset(tmp_path, monkeypatch):
    wandb.finish()
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no credentials, so offline
    logger = make_wandb_logger("ocl-test", str(tmp_path), experiment="savi_synthetic", seed=0)
    assert "WANDB_MODE" not in os.environ
    assert logger.experiment.settings.mode == "offline"
    wandb.finish()


def test_an_unreachable_wandb_server_means_offline_with_one_warning(tmp_path, monkeypatch, caplog):
    wandb.finish()
    with socket.socket() as probe:  # a local port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ocl.utils.loggers"):
        logger = make_wandb_logger("ocl-test", str(tmp_path), experiment="savi_synthetic", seed=0)
        assert logger.experiment.settings.mode == "offline"
    assert time.monotonic() - started < 30
    (warning,) = [record.getMessage() for record in caplog.records if record.name == "ocl.utils.loggers"]
    assert f"W&B server http://127.0.0.1:{port} cannot be reached" in warning and "logging offline" in warning
    wandb.finish()


# ----------------------------------------------------------------------------- the entry points: one line each


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_steps=abc"], "error: trainer.max_steps must be an integer >= 1, got 'abc'"),
        (["ckpt_path={tmp}/missing.ckpt"], "error: checkpoint not found: {tmp}/missing.ckpt"),
        (["hydra.run.dir={tmp}/file/run"], "error: cannot create the run folder {tmp}/file/run (hydra.run.dir)"),
        (["model.optimizer.lr=20", "trainer.max_steps=30"], "error: non-finite training loss at step"),
    ],
    ids=["bad value", "missing checkpoint", "run folder", "nan"],
)
def test_train_py_failures_are_one_message_without_traceback(tmp_path, overrides, message):
    (tmp_path / "file").write_text("a file where a folder should be")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    folder = [] if any(o.startswith("hydra.run.dir=") for o in overrides) else [f"hydra.run.dir={tmp_path}/run"]
    result = run_cli("train.py", [*RUN, *folder, *overrides])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[start].startswith(message.format(tmp=tmp_path))
    assert all(line.startswith("  ") for line in lines[start + 1 :])  # one block: the message's own lines
