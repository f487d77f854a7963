"""The benchmark and conversion scripts run (tiny sizes); their numbers are in docs/benchmarks.md."""

from __future__ import annotations

from conftest import run_cli


def test_bench_data_quick_prints_every_data_module_and_the_decoder_comparison(tmp_path):
    result = run_cli("scripts/bench_data.py", ["--quick", "--workdir", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    for module in ("synthetic", "movi_c", "ytvis2021", "davis2017", "video_files"):
        assert f"| {module} |" in result.stdout
    assert "decord / PyAV" in result.stdout


def test_bench_experiments_tiny_prints_a_row_per_experiment_and_precision():
    experiments = ["smtc_ytvos", "slash_movi", "slotcurri_movi"]
    result = run_cli(
        "scripts/bench_experiments.py", ["--tiny", "--steps", "1", "--warmup", "0", "--experiments", *experiments]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for experiment in experiments:
        assert f"| {experiment} | 32-true |" in result.stdout and f"| {experiment} | bf16-mixed |" in result.stdout
