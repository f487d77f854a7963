"""The benchmark and conversion scripts run (tiny sizes); their numbers are in docs/benchmarks.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from scripts import bench_experiments, compare_masks, feature_clusters, mask_ceiling
from scripts.bench_gpu import Step, run_step


@pytest.mark.slow
def test_bench_data_quick_prints_every_data_module_the_demand_table_and_the_decoder_comparison(tmp_path):
    result = run_cli("scripts/bench_data.py", ["--quick", "--workdir", str(tmp_path / "made")])  # made if missing
    assert result.returncode == 0, result.stderr[-3000:]
    for module in ("synthetic", "movi_c", "ytvis2021", "ytvos", "davis2017", "video_files"):
        assert f"| {module} |" in result.stdout
    for variant in ("config", "legacy", "reduced"):
        assert f"| data=davis2017 | {variant} |" in result.stdout
    for recipe, demand in (("slotcontrast_ytvis", 123), ("slotcurri_ytvis", 89), ("smtc_ytvos", 690)):
        assert f"| {recipe} | {demand} | {3 * demand} |" in result.stdout
    assert "decord / PyAV" in result.stdout


@pytest.mark.slow
def test_bench_experiments_tiny_prints_a_row_per_experiment_and_precision(capsys):
    experiments = ["smtc_ytvos", "slash_movi", "slotcontrast_movi_c", "slotcurri_movi"]
    bench_experiments.main(["--tiny", "--steps", "1", "--warmup", "0", "--experiments", *experiments])
    stdout = capsys.readouterr().out
    rows = {tuple(cells[:2]): cells for cells in (line.strip("| ").split(" | ") for line in stdout.splitlines())}
    for experiment in experiments:
        assert (experiment, "32-true") in rows and (experiment, "bf16-mixed") in rows
    # hours of SlotContrast's schedule (100k steps of 64 clips) at the measured clips/s, at its precision
    row = rows[("slotcontrast_movi_c", "32-true")]
    assert row[7].endswith("(its precision)")
    assert float(row[7].split()[0]) == pytest.approx(100_000 * 64 / float(row[3]) / 3600, rel=0.01)
    ratios = {  # SlotCurri / SlotContrast step time per precision, from the same run
        cells[2]: cells[3:]
        for cells in (line.strip("| ").split(" | ") for line in stdout.splitlines())
        if cells[:2] == ["slotcurri_movi", "slotcontrast_movi_c"]
    }
    assert set(ratios) == {"32-true", "bf16-mixed"}
    assert all(cells[:2] == ["no", "2 / 2"] and float(cells[2]) > 0 for cells in ratios.values())


def test_bench_gpu_stops_a_step_at_its_limit_keeps_its_log_and_skips_gpu_only_steps_when_tiny(tmp_path):
    sleeper = Step("sleeper", "-c", ("print('started', flush=True); import time; time.sleep(60)",), None, 1)
    status, seconds = run_step(sleeper, tiny=False, out=tmp_path)
    assert status == "stopped after 1 s" and seconds < 30
    assert "started" in (tmp_path / "sleeper.log").read_text()
    assert run_step(sleeper, tiny=True, out=tmp_path) == ("skipped (--tiny)", 0.0)


@pytest.mark.slow
def test_bench_gpu_tiny_runs_the_chosen_steps_and_summarises_them(tmp_path):
    result = run_cli(
        "scripts/bench_gpu.py", ["--tiny", "--out", str(tmp_path), "--steps", "slotcurri_ratio", "compiled"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[2].startswith("| slotcurri_ratio | ok |") and summary[3].startswith(
        "| compiled | skipped (--tiny) |"
    )
    assert len(summary) == 4  # the steps not chosen do not run
    assert (
        "| slotcurri_movi | slotcontrast_movi_c | 32-true | no | 2 / 2 |"
        in (tmp_path / "slotcurri_ratio.log").read_text()
    )


def test_mask_ceiling_is_perfect_at_the_label_size_and_falls_as_the_mask_grid_coarsens(capsys):
    mask_ceiling.main(["--grids", "8,16,64", "data.val_size=8"])
    stdout = capsys.readouterr().out
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in stdout.splitlines())}
    video = {grid: float(rows[f"{grid} x {grid}"][0]) for grid in (8, 16, 64)}
    assert video[64] == 1.0  # the labels themselves, through the metric's own resize and argmax
    assert video[8] < video[16] < 0.95
    assert "8 validation videos, labels (12, 64, 64)" in stdout


def test_kmeans_recovers_separated_blobs_and_repeats_itself_for_a_seed():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    truth = torch.arange(3).repeat_interleave(20)
    points = centres[truth] + torch.randn(60, 2, generator=generator, dtype=torch.float64)
    labels = feature_clusters.kmeans(points, 3, restarts=5, iterations=10, generator=torch.Generator().manual_seed(1))
    assert len(set(zip(labels.tolist(), truth.tolist(), strict=True))) == 3  # one cluster per blob
    again = feature_clusters.kmeans(points, 3, restarts=5, iterations=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(labels, again)


@pytest.mark.slow
def test_feature_clusters_scores_the_stand_in_above_one_cluster_per_video(capsys):
    def video_fg_ari(*args: str) -> float:
        feature_clusters.main([*args, "experiment=videosaur_synthetic", "data.val_size=8"])
        stdout = capsys.readouterr().out
        assert "K=" in stdout and "8 validation videos" in stdout
        return float(stdout.split("video FG-ARI ")[1].split(",")[0])

    assert video_fg_ari("--clusters", "1") < 0.05  # all foreground in one cluster
    assert video_fg_ari("--tokens", "keys") > 0.3  # the stand-in's content channels group by object


@pytest.mark.slow
def test_compare_masks_shows_frames_truth_and_each_runs_overlay_on_the_same_videos(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "masks.png"
    args = ["--out", str(out), "--videos", "2", "--frames", "0,2", "--scale", "1"]
    compare_masks.main([*args, str(tiny_checkpoint), str(tiny_checkpoint)])
    image = np.asarray(Image.open(out))
    assert image.shape == (4 * 32, 2 * 2 * 32, 3)  # frames, truth, two runs; 2 videos x 2 frames of 32 x 32
    frames, truth, first_run, second_run = np.split(image, 4, axis=0)
    assert np.array_equal(first_run, second_run)  # the evaluation seed: the same masks every time
    assert not np.array_equal(first_run, frames)  # the slots' colours are blended over the frames
    assert 2 <= len(np.unique(truth.reshape(-1, 3), axis=0)) <= 5  # background + the easy level's 2-4 objects
    assert f"row 3: {tiny_checkpoint}" in capsys.readouterr().out
