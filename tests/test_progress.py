"""The training progress bar counts the run's steps (ocl/callbacks/progress.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from ocl.callbacks.progress import StepProgressBar


def train_bar_lines(tmp_path: Path, max_steps: int, max_epochs: int = -1, ckpt_path: str | None = None) -> list[str]:
    """The training bar's rendered lines of a fit of Lightning's BoringModel, 4 batches an epoch."""
    console = io.StringIO()
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=max_epochs,
        limit_train_batches=4,
        limit_val_batches=1,
        val_check_interval=2,
        callbacks=[
            StepProgressBar(console_kwargs={"file": console, "force_terminal": True, "width": 120}),
            ModelCheckpoint(
                dirpath=tmp_path,
                filename="step{step}",
                auto_insert_metric_name=False,
                every_n_train_steps=3,
                save_top_k=-1,
            ),
        ],
        logger=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel(), ckpt_path=ckpt_path)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.getvalue())
    return [line.strip() for line in re.split(r"[\r\n]", plain) if line.strip().startswith("Epoch")]


def counts(lines: list[str]) -> list[str]:
    """The ``done/total`` column of each rendered bar line."""
    return [re.search(r"\d+/-?\d+", line.split("━")[-1]).group() for line in lines]


def test_one_bar_counts_the_runs_steps_across_epochs_and_a_resume(tmp_path):
    lines = train_bar_lines(tmp_path, max_steps=6)
    assert counts(lines)[-1] == "6/6" and lines[-1].startswith("Epoch 1 ")  # 2 epochs of 4 batches, one bar
    assert "/-2" not in "".join(lines)  # Lightning's title of a run without an epoch limit
    resumed = train_bar_lines(tmp_path / "resumed", max_steps=10, ckpt_path=str(tmp_path / "step3.ckpt"))
    assert counts(resumed)[0] == "4/10" and counts(resumed)[-1] == "10/10"  # from the step after the checkpoint's


def test_a_run_bounded_by_epochs_keeps_lightnings_bar(tmp_path):
    lines = train_bar_lines(tmp_path, max_steps=-1, max_epochs=2)
    assert lines[-1].startswith("Epoch 1/1") and counts(lines)[-1] == "4/4"
