"""Sweeps through hydra-submitit-launcher: two jobs of a local multirun (submitit's local mode
stands in for SLURM), a preempted job requeued by submitit, and the SLURM launcher config."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import yaml
from conftest import CONFIG_DIR, REPO, TINY, compose_config, one_thread
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ocl.cli import train

MAX_STEPS = 40
SWEEP = [*TINY, f"trainer.max_steps={MAX_STEPS}", f"trainer.val_check_interval={MAX_STEPS}"]
SWEEP += ["callbacks.checkpoint.every_n_train_steps=2"]


def logged_losses(output_dir: Path) -> dict[int, float]:
    with open(output_dir / "csv" / "metrics.csv") as handle:
        rows = [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len({step for step, _ in rows}) == len(rows), "a step was logged twice"
    return dict(rows)


def submitit_task(job_dir: Path) -> int:
    """Process id of the submitit task running the Hydra job of ``job_dir``: Hydra records the
    submitit job id in the job's ``.hydra/hydra.yaml``; the local task carries it in its environment."""
    job_id = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            environment = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"submitit.core._submit" in command and f"SUBMITIT_LOCAL_JOB_ID={job_id}".encode() in environment:
            return int(proc.name)
    raise AssertionError(f"no running submitit task for job {job_id}")


@pytest.mark.slow
def test_local_multirun_runs_both_jobs_and_a_preempted_job_is_requeued_and_resumes_exactly(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "seed=0,1", *SWEEP]
    log_path = tmp_path / "sweep.log"
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(
            [*command, f"hydra.sweep.dir={sweep}"],
            cwd=REPO,
            stdout=log,
            stderr=log,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            deadline = time.monotonic() + 240
            while not (sweep / "0" / "checkpoints" / "step0000002.ckpt").is_file():
                assert launcher.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "job 0 wrote no checkpoint in time"
                time.sleep(0.02)
            os.kill(submitit_task(sweep / "0"), signal.SIGUSR2)  # what SLURM sends before the time limit
            assert launcher.wait(timeout=240) == 0, log_path.read_text()[-3000:]
        finally:
            if launcher.poll() is None:
                launcher.kill()

    results = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in (0, 1)]
    assert all("val/video_fg_ari" in metrics for metrics in results)
    assert results[0] != results[1]  # seeds 0 and 1
    submitit_logs = "".join(path.read_text() for path in (sweep / ".submitit").glob("*/*_log.*"))
    assert "Requeued job" in submitit_logs
    assert (sweep / "0" / "checkpoints" / "preempted.ckpt").is_file()
    assert not (sweep / "1" / "checkpoints" / "preempted.ckpt").exists()
    reference = tmp_path / "uninterrupted"
    with one_thread():  # as the jobs (OMP_NUM_THREADS=1)
        assert train(compose_config([*SWEEP, "seed=0", f"paths.output_dir={reference}"])) == results[0]
    assert logged_losses(sweep / "0") == logged_losses(reference)
    assert sorted(logged_losses(sweep / "0")) == list(range(MAX_STEPS))


def test_slurm_launcher_asks_one_task_per_gpu_and_the_preemption_signal(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "experiment=slotcurri_movi",
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=lab",
                "hydra.launcher.setup=[module load cuda]",
                "trainer=ddp",
                "trainer.devices=4",
                "paths.output_dir=/unused",
            ],
            return_hydra_config=True,
        )
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 1)
    assert (cfg.trainer.max_steps, cfg.trainer.precision) == (100_000, "16-mixed")  # the recipe is kept
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    # Render the sbatch script as the launcher's executor would (submitit only checks that srun exists).
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    shared = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name"}
    params = {k: v for k, v in launcher.params.items() if k not in ("submitit_folder", "max_num_timeout")}
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for flag in (
        "--partition=gpu",
        "--account=lab",
        "--nodes=1",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--signal=USR2@120",
        "--time=1440",
        "--job-name=slotcurri_movi",
    ):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "module load cuda" in script
    assert launcher.params["max_num_timeout"] > 0  # timed-out jobs are requeued


@pytest.mark.parametrize("nodes", ["1", "3"])
def test_ddp_trainer_takes_the_number_of_nodes_from_slurm(monkeypatch, nodes):
    monkeypatch.setenv("SLURM_NNODES", nodes)
    cfg = compose_config(["trainer=ddp", "paths.output_dir=/unused"])
    assert cfg.trainer.num_nodes == int(nodes)
