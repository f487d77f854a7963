"""The slot curriculum: allocation, splitting, growth steps, checkpoints."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_config, run_cli
from hydra.utils import instantiate

from ocl.callbacks.curriculum import allocate_children, noise_scales, split_slots
from ocl.cli import build_model, train
from ocl.modules.initialisers import LearnedInit

CURRICULUM = [
    "model.processor.initialiser._target_=ocl.modules.initialisers.LearnedInit",
    "model.processor.initialiser.num_slots=4",
    "+callbacks.curriculum._target_=ocl.callbacks.curriculum.SlotCurriculum",
    "+callbacks.curriculum.stages=[1,2,4]",
    "+callbacks.curriculum.growth_steps=[3,5]",
    "trainer.max_steps=8",
    "trainer.val_check_interval=8",
]


@pytest.mark.parametrize(
    ("errors", "num_new", "expected"),
    [
        ([3.0, 1.0], 3, [2, 1]),  # quotas 2.25, 0.75: floors [2, 0], the remainder to slot 1
        ([1.0, 1.0, 1.0], 2, [1, 1, 0]),  # equal remainders: lower index first
        ([0.0, 5.0], 2, [0, 2]),
        ([0.0, 0.0], 3, [2, 1]),  # no error anywhere: equal shares
        ([1.0, 2.0, 7.0], 6, [1, 1, 4]),  # 0.6, 1.2, 4.2 -> floors 0, 1, 4; remainders 0.6 > 0.2
    ],
)
def test_children_are_allocated_by_largest_remainders(errors, num_new, expected):
    counts = allocate_children(torch.tensor(errors), num_new)
    assert counts == expected and sum(counts) == num_new


def test_children_differ_from_parents_by_the_specified_noise_norm_and_parents_are_kept():
    torch.manual_seed(0)
    slots = torch.randn(6, 5, dtype=torch.float64)
    before = slots.clone()
    splits = split_slots(slots, 3, torch.tensor([1.0, 0.0, 3.0]), 3, 0.2, torch.Generator().manual_seed(1))
    assert [(parent, children) for parent, children, _ in splits] == [(0, [3]), (2, [4, 5])]
    assert [share for *_, share in splits] == [0.25, 0.75]
    torch.testing.assert_close(slots[:3], before[:3])
    active = before[:3]
    cosine = F.normalize(active, dim=-1) @ F.normalize(active, dim=-1).T
    cosine.fill_diagonal_(-2)
    for parent, children, _ in splits:
        nearest = active[cosine[parent].argmax()]
        sigma = 0.2 * (active[parent] - nearest).norm() * active[parent].norm() / active.norm(dim=-1).mean()
        for child in children:
            assert (slots[child] - before[parent]).norm().item() == pytest.approx(sigma.item())
    assert not torch.allclose(slots[4], slots[5])
    over_all = noise_scales(before, 3, 0.2, over_all=True)
    assert not torch.allclose(over_all, noise_scales(before, 3, 0.2, over_all=False))


def active_slots_per_step(output_dir) -> dict[int, float]:
    with open(output_dir / "csv" / "metrics.csv") as handle:
        return {
            int(r["step"]): float(r["curriculum/active_slots"])
            for r in csv.DictReader(handle)
            if r.get("curriculum/active_slots")
        }


def test_slots_grow_exactly_at_the_configured_steps_and_evaluation_uses_all(tmp_path):
    cfg = compose_config([*TINY, *CURRICULUM, f"paths.output_dir={tmp_path}"])
    train(cfg)
    assert active_slots_per_step(tmp_path) == {0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4}
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"]["processor.initialiser._extra_state"]["num_active"] == 4
    history = next(v for k, v in checkpoint["callbacks"].items() if "SlotCurriculum" in k)["history"]
    assert [(split["step"], split["parent"], split["children"]) for split in history if split["step"] == 3] == [
        (3, 0, [1])
    ]
    assert sorted(child for split in history if split["step"] == 5 for child in split["children"]) == [2, 3]
    assert sum(split["error_share"] for split in history if split["step"] == 5) == pytest.approx(1.0)
    model = build_model(cfg).eval()
    assert model.processor.initialiser(2).shape[1] == 4


def test_resuming_between_the_measurement_and_the_split_gives_the_same_slots(tmp_path):
    common = [*TINY, *CURRICULUM, "callbacks.checkpoint.every_n_train_steps=3"]
    train(compose_config([*common, f"paths.output_dir={tmp_path / 'full'}"]))
    between = tmp_path / "full" / "checkpoints" / "step0000003.ckpt"
    state = torch.load(between, weights_only=False)
    assert state["state_dict"]["processor.initialiser._extra_state"]["num_active"] == 1  # measured, not split yet
    assert next(v for k, v in state["callbacks"].items() if "SlotCurriculum" in k)["pending_errors"] is not None
    train(compose_config([*common, f"ckpt_path={between}", f"paths.output_dir={tmp_path / 'resumed'}"]))
    full, resumed = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False) for run in ("full", "resumed")
    )
    torch.testing.assert_close(
        resumed["state_dict"]["processor.initialiser.slots"], full["state_dict"]["processor.initialiser.slots"]
    )


def test_a_method_without_learned_slots_is_refused(tmp_path):
    cfg = compose_config([*TINY, *CURRICULUM[2:], f"paths.output_dir={tmp_path}"])
    with pytest.raises(TypeError, match="LearnedInit"):
        train(cfg)


def test_equal_stages_skip_a_growth_and_defaults_follow_max_steps(tmp_path):
    overrides = [*TINY, *CURRICULUM[:3], "+callbacks.curriculum.stages=[2,2,4]", "trainer.max_steps=12"]
    overrides += ["trainer.val_check_interval=12", f"paths.output_dir={tmp_path}"]
    train(compose_config(overrides))  # default growth steps [12 // 10, 12 // 4] = [1, 3]
    active = active_slots_per_step(tmp_path)
    assert [active[step] for step in (0, 1, 2, 3, 11)] == [2, 2, 2, 4, 4]


def test_two_process_ddp_run_ends_with_identical_slots_on_both_ranks(tmp_path):
    """Real DDP: two CPU processes (gloo) launched by Lightning from train.py."""
    result = run_cli(
        "train.py",
        [
            *TINY,
            *CURRICULUM,
            "data.train_frames=3",
            "data.batch_size=2",
            "+trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            f"hydra.run.dir={tmp_path}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "MEMBER: 2/2" in output
    assert output.count("initial slots identical on 2 ranks") == 2  # checked by all_gather on each rank
    assert output.count("step 3: 1 -> 2 active slots") == 2 and output.count("step 5: 2 -> 4 active slots") == 2


@pytest.mark.parametrize(
    ("experiment", "stages", "growth_steps", "batch"),
    [
        ("slotcurri_movi", [2, 5, 11], [10_000, 25_000], 128),
        ("slotcurri_movi_e", [2, 7, 15], [30_000, 75_000], 128),
        ("slotcurri_ytvis", [2, 3, 7], [10_000, 25_000], 64),
    ],
)
def test_slotcurri_experiments_carry_the_published_recipe(tmp_path, experiment, stages, growth_steps, batch):
    cfg = compose_config([f"experiment={experiment}", "model.encoder.weights=random", f"paths.output_dir={tmp_path}"])
    active = {name: term.weight for name, term in cfg.loss.items() if term.weight}  # cycle terms: listed at 0
    assert active == {"mse": 1.0, "ssim3d": 0.05, "contrastive": 0.5}
    assert (cfg.model.optimizer.lr, cfg.model.scheduler.warmup_steps, cfg.model.scheduler.decay_rate) == (
        8e-4,
        2500,
        0.5,
    )
    assert (cfg.trainer.gradient_clip_val, cfg.data.batch_size, cfg.data.train_clip_length) == (0.05, batch, 4)
    curriculum = instantiate(cfg.callbacks.curriculum)
    trainer = SimpleNamespace(max_steps=cfg.trainer.max_steps, fast_dev_run=False)
    module = SimpleNamespace(processor=SimpleNamespace(initialiser=LearnedInit(stages[-1], 4)))
    curriculum.setup(trainer, module, "fit")
    assert (curriculum.stages, curriculum.growth_steps) == (stages, growth_steps)
