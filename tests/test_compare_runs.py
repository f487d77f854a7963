"""Runs carry experiment, method, dataset, seed and git commit (run.json, W&B); compare_runs.py
summarises run folders into the right table, CSV and plot, and explains bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIG_DIR, REPO, TINY, run_cli
from hydra import compose, initialize_config_dir
from PIL import Image

from ocl.results.local import read_local_runs
from ocl.results.records import ResultsError
from ocl.results.wandb_api import read_wandb_runs
from ocl.results.wandb_log import latest_local_run_log, read_local_run
from ocl.utils.run_identity import describe_run

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
METRICS = ["val/frame_fg_ari", "val/mbo", "val/miou", "val/slots_per_object", "val/video_fg_ari"]
"""The validation metrics a tiny SAVi run logs (besides val/loss and *_skipped counts)."""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def compare_runs(*args: str) -> subprocess.CompletedProcess:
    """``python scripts/compare_runs.py <args>`` in a fresh interpreter: it imports too little (0.25 s a
    run) to be worth the fork server's start (:func:`conftest.run_cli`) in the inner loop."""
    command = [sys.executable, "scripts/compare_runs.py", *args]
    return subprocess.run(command, check=False, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """The folder of a real tiny ``train.py`` run (seed 3) with W&B offline: outputs/savi_synthetic/<date_time>/."""
    folder = tmp_path_factory.mktemp("trained") / "outputs" / "savi_synthetic" / "2026-01-01_00-00-00"
    args = [o for o in TINY if o != "logger=csv"]
    args += ["logger=wandb", "trainer.max_steps=2", "trainer.val_check_interval=2", "seed=3", f"hydra.run.dir={folder}"]
    result = run_cli("train.py", args, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_a_training_run_records_who_it_is_in_run_json_and_in_wandb(trained_run):
    identity = json.loads((trained_run / "run.json").read_text())
    assert {k: identity[k] for k in ("experiment", "method", "dataset", "seed")} == {
        "experiment": "savi_synthetic",
        "method": "savi",
        "dataset": "synthetic",
        "seed": 3,
    }
    assert identity["git_commit"] == git("rev-parse", "HEAD").strip()
    assert identity["git_dirty"] == bool(git("status", "--porcelain").strip())
    assert "trainer.max_steps=2" in identity["overrides"]

    log_file = latest_local_run_log(trained_run)
    assert log_file is not None and log_file.parent.name.startswith("offline-run-")
    run = read_local_run(log_file)
    assert run.name == "savi_synthetic_seed3"
    assert run.group == "savi_synthetic"
    assert run.tags == ["savi_synthetic", "savi", "synthetic", "seed3"]
    assert run.config["run"] == identity
    assert run.config["seed"] == 3 and run.config["model"]["_target_"] == "ocl.methods.savi.SAVi"
    final = json.loads((trained_run / "metrics.json").read_text())
    assert {name: run.summary[name] for name in METRICS} == pytest.approx({name: final[name] for name in METRICS})

    torn = trained_run.parent / "torn.wandb"  # a killed run's log ends in a partial record
    torn.write_bytes(log_file.read_bytes()[:-50])
    assert read_local_run(torn).name == "savi_synthetic_seed3"
    torn.unlink()


@pytest.mark.slow
def test_every_experiment_is_named_by_its_method_and_dataset_without_edits():
    tricky = {
        "slotcurri_movi": ("slotcurri", "movi_c", "slotcurri_movi_c_seed0"),
        "slotcontrast_ytvis": ("slotcontrast", "ytvis2021", "slotcontrast_ytvis2021_seed0"),
        "slash_movi": ("slash", "movi_c", "slash_movi_c_seed0"),
        "cycle_slot_attention_synthetic": ("cycle_slot_attention", "synthetic", "cycle_slot_attention_synthetic_seed0"),
        "slotcurri_savi_synthetic": ("slotcurri_savi", "synthetic", "slotcurri_savi_synthetic_seed0"),
    }
    experiments = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
    assert set(tricky) <= set(experiments)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for experiment in experiments:
            cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=."], return_hydra_config=True)
            run = describe_run(cfg.name, cfg.seed, cfg.hydra.runtime.choices, overrides=[])
            assert run.dataset == cfg.hydra.runtime.choices.data
            suffix = experiment.removeprefix(f"{run.method}_")
            assert suffix in (run.dataset, re.match(r"[a-z]+", run.dataset).group()), experiment
            if experiment in tricky:
                assert (run.method, run.dataset, run.run_name) == tricky[experiment]
        other_data = compose("train", ["data=movi_c", "paths.output_dir=."], return_hydra_config=True)
        own_name = compose("train", ["name=my_ablation", "paths.output_dir=."], return_hydra_config=True)
    # No dataset suffix in the name: the model's config name is the method.
    assert describe_run("savi_synthetic", 1, other_data.hydra.runtime.choices, []).run_name == "savi_movi_c_seed1"
    ablation = describe_run("my_ablation", 2, own_name.hydra.runtime.choices, [])
    assert (ablation.method, ablation.run_name, ablation.tags) == (
        "savi",
        "savi_synthetic_seed2",
        ["my_ablation", "savi", "synthetic", "seed2"],
    )


def write_run(folder: Path, identity: dict, metrics: dict[str, float] | None) -> None:
    """A run folder as train.py writes it: run.json, .hydra/ and (when finished) metrics.json."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in identity["overrides"]))
    (folder / "run.json").write_text(json.dumps(identity))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def write_csv_log(folder: Path, rows: list[dict[str, float]]) -> None:
    """csv/metrics.csv as Lightning's CSVLogger writes it: one column per logged name, empty where not logged."""
    columns = sorted({name for row in rows for name in row})
    (folder / "csv").mkdir()
    with open(folder / "csv" / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_compare_runs_reports_mean_and_sample_std_over_seeds(trained_run, tmp_path):
    rng = np.random.default_rng(0)
    real = json.loads((trained_run / "run.json").read_text())
    shared = [o for o in real["overrides"] if not o.startswith("seed=")]

    def new_run(folder, experiment, method, dataset, seed, metrics, started="2026-01-02T00:00:00+00:00", extra=()):
        overrides = [*shared, *extra, f"seed={seed}"]
        changes = {"experiment": experiment, "method": method, "dataset": dataset, "seed": seed}
        write_run(folder, {**real, **changes, "started_at": started, "overrides": overrides}, metrics)
        return metrics

    def random_metrics(names=METRICS):
        values = {name: float(rng.uniform(0, 1)) for name in names}
        return {**values, "val/loss": 0.5, **{f"{name}_skipped": 0.0 for name in names}}

    outputs, sweep = tmp_path / "outputs", tmp_path / "multirun"
    expected: dict[tuple[str, str], dict[int, dict[str, float]]] = {}  # (experiment, variant) -> seed -> metrics
    shutil.copytree(trained_run, outputs / "savi_synthetic" / trained_run.name)
    real_metrics = json.loads((trained_run / "metrics.json").read_text())
    expected[("savi_synthetic", "")] = {3: real_metrics}
    for seed in (0, 1, 2):
        metrics = new_run(
            sweep / "savi_synthetic" / "d" / str(seed), "savi_synthetic", "savi", "synthetic", seed, random_metrics()
        )
        expected[("savi_synthetic", "")][seed] = metrics
    # seed 4 stopped before metrics.json: its numbers come from the W&B log (the real run's last validation)
    killed = outputs / "savi_synthetic" / "killed"
    shutil.copytree(trained_run, killed)
    (killed / "metrics.json").unlink()
    (killed / "run.json").write_text(json.dumps({**real, "seed": 4}))
    expected[("savi_synthetic", "")][4] = real_metrics
    # another variant of the experiment: its own row
    hard = new_run(
        sweep / "savi_synthetic" / "h" / "0",
        "savi_synthetic",
        "savi",
        "synthetic",
        0,
        random_metrics(),
        extra=["data.level=hard"],
    )
    expected[("savi_synthetic", "data.level=hard")] = {0: hard}
    # SlotCurri: seed 1 rerun (the later run counts), seed 2 stopped early with a CSV log lacking one metric
    slotcurri = {}
    slotcurri[0] = new_run(
        sweep / "slotcurri_movi" / "a" / "0", "slotcurri_movi", "slotcurri", "movi_c", 0, random_metrics()
    )
    new_run(sweep / "slotcurri_movi" / "a" / "1", "slotcurri_movi", "slotcurri", "movi_c", 1, random_metrics())
    slotcurri[1] = new_run(
        sweep / "slotcurri_movi" / "b" / "1",
        "slotcurri_movi",
        "slotcurri",
        "movi_c",
        1,
        random_metrics(),
        started="2026-01-03T00:00:00+00:00",
    )
    stopped = sweep / "slotcurri_movi" / "a" / "2"
    new_run(stopped, "slotcurri_movi", "slotcurri", "movi_c", 2, None)
    first, last = random_metrics(METRICS[:3] + METRICS[4:]), random_metrics(METRICS[:3] + METRICS[4:])
    write_csv_log(
        stopped,
        [{"step": 0, "train/loss": 1.0}, {"step": 9, **first}, {"step": 10, "train/loss": 0.9}, {"step": 19, **last}],
    )
    slotcurri[2] = last
    expected[("slotcurri_movi", "")] = slotcurri
    # left out: another experiment (not in --group) and an eval.py folder (metrics.json, no run.json)
    new_run(sweep / "videosaur_movi_c" / "a" / "0", "videosaur_movi_c", "videosaur", "movi_c", 0, random_metrics())
    (outputs / "eval" / "savi_synthetic" / "e").mkdir(parents=True)
    (outputs / "eval" / "savi_synthetic" / "e" / "metrics.json").write_text(json.dumps(real_metrics))

    out = tmp_path / "comparison"
    result = compare_runs(
        "--runs",
        str(outputs),
        str(sweep),
        "--group",
        "savi_synthetic",
        "slotcurri_movi",
        "slash_movi",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: no runs of slash_movi" in result.stderr  # a requested group without runs is said, not dropped

    with open(out / "results.csv", newline="") as handle:
        table = {(r["experiment"], r["variant"], r["metric"]): r for r in csv.DictReader(handle)}
    assert {(e, v) for e, v, _ in table} == set(expected)
    for (experiment, variant), runs in expected.items():
        for metric in METRICS:
            values = [runs[seed][metric] for seed in sorted(runs) if metric in runs[seed]]
            row = table[(experiment, variant, metric)]
            assert int(row["n"]) == len(values)
            assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-12)
            if len(values) > 1:
                assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            else:
                assert row["std"] == ""
            assert row["seeds"] == " ".join(map(str, sorted(runs)))
    assert table[("slotcurri_movi", "", "val/video_fg_ari")]["method"] == "slotcurri"
    assert table[("slotcurri_movi", "", "val/video_fg_ari")]["dataset"] == "movi_c"

    markdown = (out / "results.md").read_text()
    assert markdown in result.stdout
    assert f"| experiment | method | dataset | variant | n | seeds | {' | '.join(METRICS)} |" in markdown
    slotcurri_line = next(line for line in markdown.splitlines() if line.startswith("| slotcurri_movi"))
    ari = [slotcurri[s]["val/video_fg_ari"] for s in (0, 1, 2)]
    assert f"{statistics.fmean(ari):.4f} ± {statistics.stdev(ari):.4f} |" in slotcurri_line
    objects = [slotcurri[s]["val/slots_per_object"] for s in (0, 1)]
    assert f"{statistics.fmean(objects):.4f} ± {statistics.stdev(objects):.4f} (n=2)" in slotcurri_line
    hard_line = next(line for line in markdown.splitlines() if "data.level=hard" in line)
    assert f"| {hard['val/mbo']:.4f} |" in hard_line

    with open(out / "runs.csv", newline="") as handle:
        sources = {(r["experiment"], r["variant"], r["seed"]): r["source"] for r in csv.DictReader(handle)}
    assert sources[("savi_synthetic", "", "4")] == "wandb offline log"
    assert sources[("slotcurri_movi", "", "2")] == "csv/metrics.csv"
    assert sources[("savi_synthetic", "", "3")] == "metrics.json"
    assert f"{sweep / 'slotcurri_movi' / 'b' / '1'} replaces {sweep / 'slotcurri_movi' / 'a' / '1'}" in result.stderr
    assert "left out 1 folder(s) with metrics.json but no run.json" in result.stderr

    png = out / "results.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300


def test_bad_sources_get_a_clear_error(tmp_path, monkeypatch):
    missing = compare_runs("--runs", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert "run folder not found" in missing.stderr and str(tmp_path / "nope") in missing.stderr
    assert "Traceback" not in missing.stderr

    (tmp_path / "empty" / "eval" / "x").mkdir(parents=True)
    (tmp_path / "empty" / "eval" / "x" / "metrics.json").write_text("{}")
    with pytest.raises(
        ResultsError, match=r"no run folders under .*empty: .*run\.json.*1 folder\(s\) with metrics\.json"
    ):
        read_local_runs([tmp_path / "empty"])

    write_run(
        tmp_path / "runs" / "a",
        describe_run("savi_synthetic", 0, {"data": "synthetic"}, []).to_dict(),
        {"val/mbo": 0.5},
    )
    wrong_group = compare_runs("--runs", str(tmp_path / "runs"), "--group", "slotcurri_movi")
    assert wrong_group.returncode == 1 and "no runs of slotcurri_movi" in wrong_group.stderr
    assert "found: savi_synthetic" in wrong_group.stderr and "Traceback" not in wrong_group.stderr
    wrong_metric = compare_runs("--runs", str(tmp_path / "runs"), "--metrics", "fg_ari")
    assert wrong_metric.returncode == 1 and "no run logged val/fg_ari; the runs logged: val/mbo" in wrong_metric.stderr

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no `wandb login`
    with pytest.raises(ResultsError, match="no W&B credentials .* --runs outputs/ multirun/"):
        read_wandb_runs("ocl")
