"""Real-data entry points from the command line: a user's own video, and bad data reported cleanly."""

from __future__ import annotations

import pytest
from conftest import TINY, compose_config, run_cli
from video_fixtures import block_frames, write_davis, write_mp4

from ocl.build import input_size_warning, load_checkpoint_info
from ocl.cli import train

MODEL_TINY = [o for o in TINY if not o.startswith("data.")]
"""The tiny SAVi of conftest.TINY without its synthetic-data sizes."""


@pytest.mark.slow
def test_eval_runs_a_trained_model_on_a_users_mp4(tmp_path):
    overrides = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]
    train(compose_config([*overrides, f"paths.output_dir={tmp_path / 'train'}"]), overrides)
    video = write_mp4(tmp_path / "my clip.mp4", block_frames(3, 6), lossless=False)
    result = run_cli(
        "eval.py",
        [
            f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}",
            "data=video_files",
            f"data.paths=['{video}']",
            "data.eval_transform.size=32",
            "data.num_workers=0",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "eval" / "visualisations").glob("val_step*.gif"))
    # trained at data.resolution=32: video_files' default 224 would feed it another size, and says so
    checkpoint = str(tmp_path / "train" / "checkpoints" / "last.ckpt")
    record = load_checkpoint_info(checkpoint)
    assert "trained and validated on" not in result.stderr
    assert input_size_warning(checkpoint, record, {"eval_transform": {"size": 32}}) is None
    warning = input_size_warning(checkpoint, record, {"eval_transform": {"size": 224}})
    assert "32x32" in warning and "224x224" in warning and "data.eval_transform.size=32" in warning


@pytest.mark.slow
def test_a_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    result = run_cli(
        "train.py", ["data=movi_c", f"paths.data_root={tmp_path / 'nowhere'}", *MODEL_TINY, f"hydra.run.dir={tmp_path}"]
    )
    assert result.returncode != 0
    assert "data error:" in result.stderr and str(tmp_path / "nowhere" / "movi_c") in result.stderr
    assert "convert_movi.py" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_missing_video_file_is_a_data_error_not_a_hydra_trace(tmp_path):
    result = run_cli(
        "train.py", ["data=video_files", f"data.paths=[{tmp_path / 'nope.mp4'}]", f"hydra.run.dir={tmp_path}"]
    )
    assert result.returncode != 0
    assert "data error:" in result.stderr and "nope.mp4" in result.stderr
    assert "Traceback" not in result.stderr and "Error in call to target" not in result.stderr


@pytest.mark.slow
def test_a_corrupt_frame_read_in_a_loader_worker_is_one_clear_message(tmp_path):
    fixture = write_davis(tmp_path / "data" / "davis2017")
    corrupt = fixture.root / "JPEGImages" / "480p" / "bear" / "00001.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    result = run_cli(
        "train.py",
        [
            "data=davis2017",
            f"paths.data_root={tmp_path / 'data'}",
            "data.num_workers=1",
            "data.batch_size=2",
            "data.train_clip_length=2",
            "data.train_transform.size=32",
            "data.eval_transform.size=32",
            *MODEL_TINY,
            "trainer.max_steps=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert result.returncode != 0
    assert "data error:" in result.stderr and str(corrupt) in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "worker process" not in result.stderr
