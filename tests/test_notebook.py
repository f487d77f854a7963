"""notebooks/explore_slots.ipynb runs top to bottom (nbclient, a real IPython kernel) on the tests' checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import torch.nn.functional as F
from conftest import REPO
from hydra.utils import instantiate
from nbclient import NotebookClient
from video_fixtures import block_frames, write_mp4

from ocl.data.transforms import VideoTransform
from ocl.metrics.classes import MeanBestOverlap, VideoFGARI
from ocl.predict.clips import file_clip
from ocl.predict.model import compose_run_config, load_trained_model
from ocl.utils.rng import seeded

NOTEBOOK = REPO / "notebooks" / "explore_slots.ipynb"
METRICS = ("video_fg_ari", "frame_fg_ari", "mbo", "miou", "slots_per_object")


def execute_notebook(checkpoint: Path, video: str) -> tuple[str, int]:
    """Run the notebook as ``jupyter`` would (from ``notebooks/``) with its parameters set through the
    environment; -> (all text it printed, number of images it showed)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {"OCL_EXPLORE_CHECKPOINT": str(checkpoint), "OCL_EXPLORE_VIDEO": video, "OMP_NUM_THREADS": "1"}
    client.execute(env={**os.environ, **env, "PYTHONPATH": python_path})  # raises CellExecutionError on failure
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    text = "".join(output.get("text", "") for output in outputs)
    return text, sum("image/png" in output.get("data", {}) for output in outputs)


@pytest.mark.slow
def test_the_notebook_shows_a_validation_clips_masks_and_metrics(tiny_checkpoint):
    text, images = execute_notebook(tiny_checkpoint, "val")
    assert images == 2  # the frames x slots grid and the slot sizes over time
    assert "on val_000000: 3 frames, 3 slots" in text
    printed = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.split()[:1] in ([m] for m in METRICS)
    }
    assert sorted(printed) == sorted(METRICS)

    # The clip is validation video 0, whole: its scores are those eval.py computes for batch 0 (batch size 1).
    cfg = compose_run_config(tiny_checkpoint)
    model = load_trained_model(cfg)
    item = instantiate(cfg.data).val_set[0]
    with seeded(model.eval_seed):
        masks = model({"video": item["video"][None]}).masks.detach()
    for name, metric in (("video_fg_ari", VideoFGARI()), ("mbo", MeanBestOverlap())):
        metric.update(masks, item["masks"][None])
        assert printed[name] == pytest.approx(float(metric.compute()), abs=1e-4)


def test_a_video_file_clip_is_its_first_frames_resized_as_the_model_needs(tiny_checkpoint, tmp_path):
    # The notebook's other source (VIDEO = a file path): one kernel run is enough for the test budget.
    video = write_mp4(tmp_path / "walk.mp4", block_frames(2, 10), lossless=False)
    clip = file_clip(video, instantiate(compose_run_config(tiny_checkpoint).transform), max_frames=8)
    assert clip.name == "walk" and clip.masks is None
    assert clip.video.shape == (8, 3, 32, 32)  # the tiny run's data.resolution
    whole = file_clip(video, VideoTransform(48, "none"))
    assert whole.video.shape == (10, 3, 48, 64)
    assert (
        clip.video - F.interpolate(whole.video[:8], size=(32, 32), mode="bilinear", antialias=True)
    ).abs().max() < 0.02
