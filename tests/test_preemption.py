"""Preemption: a train.py run stopped by SLURM's signals leaves a checkpoint, and the same command
started again in the same folder continues from it with the losses of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, compose_config, one_thread
from script_runner import start_script

from ocl.callbacks.preemption import PreemptionCheckpoint
from ocl.cli import train
from ocl.utils.csv_logger import ContinuingCSVLogger

MAX_STEPS = 40
RUN = [
    *TINY,
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.val_check_interval=16",
    "callbacks.checkpoint.every_n_train_steps=2",
]


def logged(output_dir: Path, column: str) -> dict[int, float]:
    """``column`` per step from the CSV logger of a run (each step must appear once)."""
    with open(output_dir / "csv" / "metrics.csv") as handle:
        rows = [(int(row["step"]), float(row[column])) for row in csv.DictReader(handle) if row.get(column)]
    assert len({step for step, _ in rows}) == len(rows), f"a step of {column} was logged twice"
    return dict(rows)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    with one_thread():  # as the signalled subprocesses (OMP_NUM_THREADS=1)
        train(compose_config([*RUN, f"paths.output_dir={output_dir}"]))
    return output_dir


def start_and_signal(run_dir: Path, signum: signal.Signals) -> tuple[int, str]:
    """Start ``python train.py`` in ``run_dir``, send ``signum`` once its step-2 checkpoint exists
    (mid-run), and return its exit code and output."""
    log_path = run_dir.parent / f"{run_dir.name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = start_script("train.py", [*RUN, f"hydra.run.dir={run_dir}"], REPO, log_path, log_path, env)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints" / "step0000002.ckpt").is_file():
            assert process.exitcode is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run wrote no checkpoint in time"
            time.sleep(0.02)
        os.kill(process.pid, signum)
        process.join(timeout=240)
        code = process.exitcode
    finally:
        if process.exitcode is None:
            process.kill()
    return code, log_path.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=lambda signum: signum.name)
@pytest.mark.slow
def test_signalled_run_checkpoints_and_the_restarted_run_continues_exactly(tmp_path, uninterrupted, signum):
    run_dir = tmp_path / "run"
    code, output = start_and_signal(run_dir, signum)
    assert code == 1, output[-3000:]
    assert f"{signum.name} received: checkpoint of step" in output
    checkpoint = run_dir / "checkpoints" / "preempted.ckpt"
    stopped_at = torch.load(checkpoint, weights_only=False)["global_step"]
    assert 2 <= stopped_at < MAX_STEPS  # mid-run, after the step that was running finished
    assert not (run_dir / "metrics.json").exists()  # stopped before the final validation
    assert sorted(logged(run_dir, "train/loss")) == list(range(stopped_at))

    # The requeued job: the same config in the same folder, no ckpt_path.
    with one_thread():
        metrics = train(compose_config([*RUN, f"paths.output_dir={run_dir}"]))

    assert logged(run_dir, "train/loss") == logged(uninterrupted, "train/loss")  # all steps, bit for bit
    assert sorted(logged(run_dir, "train/loss")) == list(range(MAX_STEPS))
    assert metrics == json.loads((uninterrupted / "metrics.json").read_text())


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    callback = PreemptionCheckpoint(str(tmp_path), signals=["SIGINT"])
    callback._record(signal.SIGINT, None)  # the first: checkpoint after the step
    assert callback._received is signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        callback._record(signal.SIGINT, None)


def test_resume_candidates_are_the_folder_checkpoints_newest_first(tmp_path):
    callback = PreemptionCheckpoint(str(tmp_path))
    assert callback.resume_candidates() == []
    now = time.time()
    for age, name in ((30, "step0000002.ckpt"), (20, "last.ckpt"), (10, "preempted.ckpt"), (5, "last.ckpt.partial")):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (now - age, now - age))
    names = ["preempted.ckpt", "last.ckpt", "step0000002.ckpt"]  # a file still being written is no candidate
    assert callback.resume_candidates() == [tmp_path / name for name in names]
    os.utime(tmp_path / "last.ckpt", (now, now))
    assert callback.resume_candidates()[0] == tmp_path / "last.ckpt"
    os.utime(tmp_path / "preempted.ckpt", (now, now))  # same time: the preemption's checkpoint first
    assert callback.resume_candidates()[:2] == [tmp_path / "preempted.ckpt", tmp_path / "last.ckpt"]
    assert PreemptionCheckpoint(str(tmp_path), resume=False).resume_candidates() == []
    with pytest.raises(ValueError, match="SIGFOO"):
        PreemptionCheckpoint(str(tmp_path), signals=["SIGFOO"])


SMTC = [
    "experiment=smtc_synthetic",
    "data.train_size=8",
    "data.batch_size=2",
    "data.val_size=2",
    "data.val_frames=2",
    "model.ema_momentum=0.5",  # the teacher moves a lot per step: one update behind shows at once
    "trainer.max_steps=5",
    "trainer.val_check_interval=5",
    "trainer.log_every_n_steps=1",
    "callbacks.checkpoint.every_n_train_steps=2",
    "callbacks.progress_bar=null",
    "logger=csv",
]


def logged_as_text(output_dir: Path) -> dict[int, dict[str, str]]:
    """Every ``train/`` value per step, as written in the CSV log (compared as text: bit for bit)."""
    with open(output_dir / "csv" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    return {int(row["step"]): {k: v for k, v in row.items() if k.startswith("train/")} for row in rows}


def test_smtc_resumes_exactly_with_its_ema_teacher(tmp_path):
    """The teacher's EMA update is part of the optimiser step, so a checkpoint written after a step
    (periodic or on preemption: both in a callback's ``on_train_batch_end``) holds the teacher of
    that step, and the resumed run's teacher loss terms equal the uninterrupted run's."""
    train(compose_config([*SMTC, f"paths.output_dir={tmp_path / 'full'}"]))
    checkpoint = tmp_path / "full" / "checkpoints" / "step0000002.ckpt"
    train(compose_config([*SMTC, f"ckpt_path={checkpoint}", f"paths.output_dir={tmp_path / 'resumed'}"]))
    full, resumed = logged_as_text(tmp_path / "full"), logged_as_text(tmp_path / "resumed")
    assert sorted(resumed) == [2, 3, 4]
    assert {"train/loss/semantic_consistency", "train/loss/instance_consistency"} <= set(resumed[2])  # read the teacher
    assert {step: full[step] for step in resumed} == resumed


def test_csv_logger_keeps_the_rows_before_the_resumed_step_and_drops_the_rest(tmp_path):
    first = ContinuingCSVLogger(str(tmp_path), name="csv", version="")
    for step in range(5):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_metrics({"val/mbo": 0.5}, step=4)
    first.save()
    resumed = ContinuingCSVLogger(str(tmp_path), name="csv", version="")
    for step in range(3, 6):
        resumed.log_metrics({"train/loss": 10.0 + step, "train/lr": 0.1}, step=step)
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["step"], row["train/loss"]) for row in rows] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "13.0"),
        ("4", "14.0"),
        ("5", "15.0"),
    ]
    assert not any(row["val/mbo"] for row in rows)  # logged at step 4 by the first part: redone by the second
