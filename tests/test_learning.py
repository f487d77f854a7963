"""Each method family learns on the embedded videos: a short run lifts its validation metric above
a floor that the same model untrained does not reach.

The floors and the runs that calibrate them are in docs/benchmarks.md ("Learning tests"): each
floor sits under the trained value and above the untrained value of every calibrated seed (three
seeds, one thread), with margins of at least 0.19 / 0.21 under / over them for SAVi, 0.14 / 0.14
for SLASH, 0.055 / 0.032 for VideoSAUR on the stand-in encoder and 0.12 for SMTC (seed 0), for the
run-to-run change a thread count brings (float sums differ, so do the trajectories). The tests use
seed 0 and pass at one and two threads. Plain Slot Attention has no case of its own: SLASH's run is
Slot Attention with two modules added, and SAVi's corrector is the same slot attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import compose_config

from ocl.cli import train


@dataclass(frozen=True)
class LearningCase:
    """A short run of one experiment and the floor its final validation metric must pass.

    ``overrides``: what shortens the run (steps, validation size) or makes a step cheaper;
    ``metric``: the key in ``train``'s returned metrics; ``floor``: the value to pass.
    """

    name: str
    overrides: tuple[str, ...]
    metric: str
    floor: float


QUIET = ("logger=csv", "callbacks.progress_bar=null", "callbacks.visualisation=null")


def first_steps(steps: int, schedule_length_key: str, val_size: int, schedule_steps: int = 2500) -> tuple[str, ...]:
    """Overrides for the first ``steps`` steps of a ``schedule_steps``-step schedule (``schedule_length_key``:
    the scheduler option that sets its length), validated once, at the end, on ``val_size`` videos."""
    return (
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"{schedule_length_key}={schedule_steps}",
        f"data.val_size={val_size}",
    )


SMALL_FRAMES = ("data.resolution=32", "model.decoder.output_size=8", "model.decoder.broadcast_size=8")
"""32 x 32 frames decoded at 8 x 8 (the experiments: 64 x 64 decoded at 16 x 16): the pixel models'
step at under half the cost, with video FG-ARI 0.44-0.53 at step 900 (0.47-0.55 at 1,000; 0.55-0.58 at 64 x 64)."""

CASES = [
    LearningCase(  # the default run (SAVi on pixels), its encoder at kernel 3, on small frames
        name="savi_pixels",
        overrides=(
            "model.encoder.kernel_size=3",
            *SMALL_FRAMES,
            *first_steps(900, "model.scheduler.decay_steps", val_size=32),
        ),
        metric="val/video_fg_ari",
        floor=0.25,
    ),
    LearningCase(  # the image family: Slot Attention + ARK and IPPE with point labels, on small frames
        name="slash_images",
        overrides=(
            "experiment=slash_synthetic",
            *SMALL_FRAMES,
            *first_steps(800, "model.scheduler.decay_steps", val_size=64),
        ),
        metric="val/frame_fg_ari",
        floor=0.33,
    ),
    LearningCase(  # the feature-reconstruction family on the stand-in patch encoder (SlotMixer decoder: its
        name="videosaur_features",  # cheapest step), the decoder's render MLP 64 wide (the experiment's: 256)
        overrides=(
            "experiment=videosaur_synthetic",
            "model.decoder.hidden_dims=[64,64]",
            *first_steps(500, "model.scheduler.decay_steps", val_size=32, schedule_steps=3000),
        ),
        metric="val/video_fg_ari",
        floor=0.05,
    ),
    LearningCase(  # instance masks; its cosine schedule
        name="smtc_instances",
        overrides=("experiment=smtc_synthetic", *first_steps(300, "model.scheduler.total_steps", val_size=32)),
        metric="val/video_fg_ari",
        floor=0.25,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_short_run_lifts_the_metric_above_a_floor_the_untrained_model_misses(
    case: LearningCase, tmp_path: Path
) -> None:
    untrained = run(case, tmp_path / "untrained", ["trainer.max_steps=1", "trainer.val_check_interval=1"])
    assert untrained < case.floor, f"{case.name}: {case.metric} {untrained:.3f} after one step, floor {case.floor}"
    trained = run(case, tmp_path / "trained", [])
    assert trained > case.floor, f"{case.name}: {case.metric} {trained:.3f} after training, floor {case.floor}"


def run(case: LearningCase, output_dir: Path, extra: list[str]) -> float:
    """``case``'s final validation metric after ``python train.py <case overrides> <extra> seed=0``."""
    overrides = [*QUIET, *case.overrides, *extra, "seed=0"]
    metrics = train(compose_config([*overrides, f"paths.output_dir={output_dir}"]), overrides)
    return metrics[case.metric]
