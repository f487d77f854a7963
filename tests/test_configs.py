"""Every experiment composes, builds and runs one batch; bad overrides fail with Hydra's message.

Experiments on real datasets run on fixtures written in the published formats
(tests/movi_fixtures.py, tests/video_fixtures.py) with random encoder weights at a tiny size.
"""

import math
from pathlib import Path

import pytest
from clevr_fixtures import write_clevr_tfrecord
from conftest import CONFIG_DIR, TINY, compose_config, compose_with_hydra, run_cli
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from movi_fixtures import write_movi_tfds
from omegaconf import OmegaConf
from video_fixtures import write_ytvis, write_ytvos_train

from ocl.build import build_model
from ocl.cli import train
from ocl.data.clevr_convert import convert_clevr
from ocl.data.movi_convert import convert_movi

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
SYNTHETIC = [name for name in EXPERIMENTS if name.endswith("_synthetic")]
REAL = [name for name in EXPERIMENTS if name not in SYNTHETIC]


def offline_overrides(experiment: str) -> list[str]:
    """Random encoder weights for experiments whose frozen encoder would come from the hub."""
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=/unused"])
    encoder = cfg.model.get("encoder", {})
    return ["model.encoder.weights=random"] if encoder.get("weights") == "hub" else []


def test_there_are_experiments():
    assert {"savi_synthetic", "slot_attention_synthetic"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.slow
def test_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", *offline_overrides(experiment), f"paths.output_dir={tmp_path}"])
    assert cfg.name == experiment
    OmegaConf.resolve(cfg)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    instantiate(cfg.data)


def assert_validated(metrics: dict[str, float], scored: bool) -> None:
    """The run validated: finite validation values and, where the data have masks (``scored``),
    a video FG-ARI in [-1, 1]."""
    assert metrics and all(math.isfinite(value) for value in metrics.values()), metrics
    if scored:
        assert -1.0 <= metrics["val/video_fg_ari"] <= 1.0, metrics


@pytest.mark.parametrize("experiment", SYNTHETIC)
@pytest.mark.slow
def test_fast_dev_run(experiment, tmp_path):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            "debug=fast_dev_run",
            "callbacks.progress_bar=null",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert_validated(train(cfg), scored=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """``data.root`` folders of every real dataset, written as published (MOVi converted from TFDS)."""
    root = tmp_path_factory.mktemp("data")
    tfds = tmp_path_factory.mktemp("tfds")
    for variant in ("movi_c", "movi_e"):
        write_movi_tfds(tfds, variant=variant, size=32, frames=5)
        convert_movi(tfds / variant / "32x32" / "1.0.0", root / variant, variant, 32, progress=False)
    write_ytvis(root / "ytvis2021", 2021)
    write_ytvos_train(root / "ytvos" / "train")
    download = tmp_path_factory.mktemp("clevr") / "clevr_with_masks_train.tfrecords"
    write_clevr_tfrecord(download, [3, 4, 5, 6])
    convert_clevr(download, root / "clevr6", 6, train_size=2, val_size=1, progress=False)
    return root


def tiny_model_overrides(experiment: str) -> list[str]:
    """Shrink a real-data experiment's model to a few tokens (fixture frames are 32 x 32)."""
    model = compose_config([f"experiment={experiment}", "paths.output_dir=/unused"]).model
    if "head" in model:  # SMTC: a 2 x 2 token grid, 2 semantic slots with 2 instances each
        return [
            f"model.encoder.image_size={2 * model.encoder.patch_size}",
            "model.head.fusion.reference_grid=[2,2]",
            "model.head.attention.num_semantic=2",
            "model.head.attention.num_instances=2",
            "model.eval_losses=true",
        ]
    if "patch_size" in model.encoder:  # frozen ViT: a 3 x 3 token grid (the 3-D SSIM window)
        size = 3 * model.encoder.patch_size
        return [f"model.encoder.image_size={size}", "model.decoder.hidden_dims=[16]", "data.frame_stride=1"]
    return [  # pixel models (SLASH): 16 x 16 frames, 8 x 8 tokens
        "data.train_transform.size=16",
        "data.eval_transform.size=16",
        "model.encoder.channels=[8,8]",
        "model.encoder.strides=[2,1]",
        "model.encoder.joint_norm_tokens=64",  # SLASH's LayerNorm over all 8 x 8 tokens
        "model.decoder.channels=[8]",
        "model.decoder.output_size=16",
    ]


def short_chunk_overrides(experiment: str) -> list[str]:
    """Chunked evaluation (videosaur_ytvis: whole 6-frame chunks only) in 2-frame chunks: the
    fixture videos have 3 to 5 frames, so 6-frame chunks would leave nothing to validate."""
    data = compose_config([f"experiment={experiment}", "paths.output_dir=/unused"]).data
    return ["data.eval_clip_length=2"] if data.get("eval_chunked") else []


@pytest.mark.parametrize("experiment", REAL)
@pytest.mark.slow
def test_real_data_experiment_runs_on_published_format_fixtures(experiment, data_root, tmp_path):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            *offline_overrides(experiment),
            *tiny_model_overrides(experiment),
            *short_chunk_overrides(experiment),
            f"paths.data_root={data_root}",
            "data.batch_size=2",
            "data.val_batch_size=1",
            "data.num_workers=0",
            *(["data.num_val_videos=1"] if "ytvis" in experiment or "ytvos" in experiment else []),
            "trainer.precision=32-true",
            "debug=fast_dev_run",
            "callbacks.progress_bar=null",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert_validated(train(cfg), scored="ytvos" not in experiment)  # YT-VOS has no labels (SMTC trains on frames)


def test_default_run_is_savi_synthetic(tmp_path):
    default = compose_config([f"paths.output_dir={tmp_path}"])
    explicit = compose_config(["experiment=savi_synthetic", f"paths.output_dir={tmp_path}"])
    assert OmegaConf.to_container(default) == OmegaConf.to_container(explicit)
    assert default.model._target_ == "ocl.methods.savi.SAVi" and default.data.level == "easy"


@pytest.mark.parametrize(
    "overrides",
    [
        TINY,
        [
            "experiment=slotcurri_movi",
            "model.encoder.weights=random",
            "+model.encoder.num_heads=2",
            "data.batch_size=3",
        ],
        ["experiment=savi_synthetic", "+model/ark@model.processor.corrector.logit_refiner=wnconv", "seed=5"],
        [
            "data=davis2017",
            "~callbacks.progress_bar",
            "trainer.max_steps=7",
            "model.optimizer.lr=${model.scheduler.warmup_steps}",
        ],
    ],
)
def test_the_tests_cached_composition_equals_hydras(overrides, tmp_path):
    overrides = [*overrides, f"paths.output_dir={tmp_path}"]
    composed = OmegaConf.to_yaml(compose_with_hydra(overrides))
    for _ in range(2):  # the second call comes from the cached tree
        cached = compose_config(overrides)
        assert OmegaConf.to_yaml(cached) == composed and OmegaConf.is_struct(cached)
        cached.trainer.max_steps = -1  # a test's edits stay in its copy
    with pytest.raises(ConfigCompositionException, match="Could not override 'trainer.max_stesp'"):
        compose_config([*overrides, "trainer.max_stesp=3"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.encoder.chanels=[8]", "chanels"),
        ("experiment=savi_synthetc", "savi_synthetc"),
        ("tranier.max_steps=3", "tranier"),
    ],
)
@pytest.mark.slow
def test_bad_override_is_a_hydra_error_before_training(override, message, tmp_path):
    result = run_cli("train.py", [override, f"hydra.run.dir={tmp_path}"], timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(tmp_path) / "checkpoints").exists()
