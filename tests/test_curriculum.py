"""The slot curriculum: allocation, splitting, growth steps, checkpoints."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_config, run_cli
from hydra.utils import instantiate

from ocl.build import build_model
from ocl.callbacks.curriculum import SlotCurriculum
from ocl.cli import train
from ocl.modules.initialisers import LearnedInit
from ocl.modules.slot_growth import MEAN_NORM_EPS, allocate_children, split_slots

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


def expected_sigma(slots: torch.Tensor, parent: int, pool: torch.Tensor) -> torch.Tensor:
    """0.2 ||p - nn(p)|| ||p|| / (mean pool norm + 1e-8), nn(p) the most cosine-similar other pool row."""
    cosine = F.normalize(slots[parent], dim=-1) @ F.normalize(pool, dim=-1).T
    cosine[parent] = -2
    nearest = pool[cosine.argmax()]
    return 0.2 * (slots[parent] - nearest).norm() * slots[parent].norm() / (pool.norm(dim=-1).mean() + MEAN_NORM_EPS)


@pytest.mark.parametrize("over_all", [False, True])
def test_children_differ_from_parents_by_the_specified_noise_norm_and_parents_are_kept(over_all):
    torch.manual_seed(0)
    slots = torch.randn(6, 5, dtype=torch.float64)
    before = slots.clone()
    noise = torch.randn(3, 5, dtype=torch.float64)
    splits = split_slots(slots, 3, torch.tensor([1.0, 0.0, 3.0]), noise, 0.2, over_all=over_all, from_copy=True)
    assert [(split.parent, split.children) for split in splits] == [(0, [3]), (2, [4, 5])]
    assert [split.error_share for split in splits] == [0.25, 0.75]
    torch.testing.assert_close(slots[:3], before[:3])
    pool = before if over_all else before[:3]
    for split in splits:
        sigma = expected_sigma(before, split.parent, pool)
        assert split.sigma == pytest.approx(sigma.item())
        for child in split.children:
            offset = slots[child] - before[split.parent]
            assert offset.norm().item() == pytest.approx(sigma.item())
            torch.testing.assert_close(offset / offset.norm(), F.normalize(noise[child - 3], dim=-1))


def test_the_pool_of_neighbours_is_all_rows_or_the_active_ones():
    """Row 3 (inactive) is parent 0's closest row: it is the neighbour only with ``over_all``."""
    slots = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)
    noise = torch.ones(1, 2, dtype=torch.float64)
    (over_all,) = split_slots(slots.clone(), 2, torch.tensor([1.0, 0.0]), noise, 0.2, over_all=True)
    (active,) = split_slots(slots.clone(), 2, torch.tensor([1.0, 0.0]), noise, 0.2, over_all=False)
    assert (over_all.nearest, active.nearest) == (3, 1)
    assert over_all.mean_norm == pytest.approx(slots.norm(dim=-1).mean().item() + MEAN_NORM_EPS)
    assert active.mean_norm == pytest.approx(1.0 + MEAN_NORM_EPS)


def test_later_parents_read_the_rows_written_for_earlier_ones_unless_split_from_a_copy():
    """Parent 2's nearest row (3) is overwritten by parent 0's child first: in place (the authors'
    code) its distance and the mean norm see the child; from a copy, the row before the growth."""
    slots = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.1, 1.0], [0.0, 1.0, 0.1]], dtype=torch.float64
    )
    errors, noise = torch.tensor([1.0, 0.0, 1.0]), torch.eye(3, dtype=torch.float64)[:2]
    in_place, copied = slots.clone(), slots.clone()
    first, aliased = split_slots(in_place, 3, errors, noise, 0.2, over_all=True)
    _, from_copy = split_slots(copied, 3, errors, noise, 0.2, over_all=True, from_copy=True)
    assert (first.parent, first.children, aliased.parent, aliased.children) == (0, [3], 2, [4])
    assert aliased.nearest == from_copy.nearest == 3
    assert from_copy.distance == pytest.approx((slots[2] - slots[3]).norm().item())
    assert aliased.distance == pytest.approx((slots[2] - in_place[3]).norm().item())
    assert aliased.mean_norm != pytest.approx(from_copy.mean_norm)
    torch.testing.assert_close(in_place[3], copied[3])  # the first parent's child: the same either way
    assert not torch.allclose(in_place[4], copied[4])


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
    # split off before steps 3 and 5, trained from steps 4 and 6 (the authors' code)
    assert active_slots_per_step(tmp_path) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4}
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
    after_growth = torch.load(tmp_path / "full" / "checkpoints" / "step0000006.ckpt", weights_only=False)
    assert after_growth["state_dict"]["processor.initialiser._extra_state"]["num_active"] == 4  # saved after step 5
    train(compose_config([*common, f"ckpt_path={between}", f"paths.output_dir={tmp_path / 'resumed'}"]))
    full, resumed = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False) for run in ("full", "resumed")
    )
    torch.testing.assert_close(
        resumed["state_dict"]["processor.initialiser.slots"], full["state_dict"]["processor.initialiser.slots"]
    )


@pytest.mark.slow
def test_gradient_accumulation_splits_once_per_growth_on_the_whole_steps_error(tmp_path):
    """Batch 2 x 2 accumulated micro-batches draws the clips of batch 4: the same growths, errors and slots."""
    runs = {"whole": ["data.batch_size=4"], "accumulated": ["data.batch_size=2", "+trainer.accumulate_grad_batches=2"]}
    histories, slots = {}, {}
    for name, overrides in runs.items():
        output_dir = tmp_path / name
        train(compose_config([*TINY, *CURRICULUM, *overrides, f"paths.output_dir={output_dir}"]))
        checkpoint = torch.load(output_dir / "checkpoints" / "last.ckpt", weights_only=False)
        histories[name] = next(v for k, v in checkpoint["callbacks"].items() if "SlotCurriculum" in k)["history"]
        slots[name] = checkpoint["state_dict"]["processor.initialiser.slots"]
    assert [(s["step"], s["parent"], s["children"]) for s in histories["accumulated"]] == [
        (s["step"], s["parent"], s["children"]) for s in histories["whole"]
    ]
    assert [s["error_share"] for s in histories["accumulated"]] == pytest.approx(
        [s["error_share"] for s in histories["whole"]], rel=1e-4
    )
    torch.testing.assert_close(slots["accumulated"], slots["whole"], rtol=1e-4, atol=1e-5)


def test_a_method_without_learned_slots_is_refused(tmp_path):
    cfg = compose_config([*TINY, *CURRICULUM[2:], f"paths.output_dir={tmp_path}"])
    with pytest.raises(TypeError, match="LearnedInit"):
        train(cfg)


@pytest.mark.slow
def test_equal_stages_skip_a_growth_and_defaults_follow_max_steps(tmp_path):
    overrides = [*TINY, *CURRICULUM[:3], "+callbacks.curriculum.stages=[2,2,4]", "trainer.max_steps=12"]
    overrides += ["trainer.val_check_interval=12", f"paths.output_dir={tmp_path}"]
    train(compose_config(overrides))  # default growth steps [12 // 10, 12 // 4] = [1, 3]
    active = active_slots_per_step(tmp_path)
    assert [active[step] for step in (0, 1, 2, 3, 4, 11)] == [2, 2, 2, 2, 4, 4]


@pytest.mark.slow
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
    assert output.count("step 3: 1 -> 2 slots") == 2 and output.count("step 5: 2 -> 4 slots") == 2


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
    initialiser = LearnedInit(stages[-1], 4)
    module = SimpleNamespace(slot_initialiser=lambda: initialiser)
    curriculum.setup(trainer, module, "fit")
    assert (curriculum.stages, curriculum.growth_steps) == (stages, growth_steps)
    assert (curriculum.neighbours_over_all_slots, curriculum.split_from_copy) == (True, False)  # the authors' code


@pytest.mark.parametrize("experiment", ["slotcurri_synthetic", "slotcurri_savi_synthetic"])
def test_synthetic_experiments_keep_the_active_slots_as_the_pool(tmp_path, experiment):
    cfg = compose_config([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.callbacks.curriculum.neighbours_over_all_slots is False


@pytest.mark.parametrize("growth_steps", [[0, 5], [3, 4], [5, 3]])
def test_growth_steps_need_a_step_before_each_growth_on_the_previous_stage(growth_steps):
    curriculum = SlotCurriculum(stages=[1, 2, 4], growth_steps=growth_steps)
    trainer = SimpleNamespace(max_steps=10, fast_dev_run=False)
    initialiser = LearnedInit(4, 2)
    module = SimpleNamespace(slot_initialiser=lambda: initialiser)
    with pytest.raises(ValueError, match="at least 2 apart"):
        curriculum.setup(trainer, module, "fit")


def test_learned_init_grows_children_it_activates_only_when_asked():
    torch.manual_seed(0)
    initialiser = LearnedInit(5, 4)
    initialiser.activate(2)
    before = initialiser.slots.detach().clone()
    splits = initialiser.grow(torch.tensor([0.0, 3.0]), torch.randn(2, 4, dtype=torch.float64), noise_scale=0.2)
    assert initialiser.num_active == 2 and [(s.parent, s.children) for s in splits] == [(1, [2, 3])]
    torch.testing.assert_close(initialiser.slots[:2], before[:2])  # parents keep their values
    assert not torch.allclose(initialiser.slots[2:4], before[2:4]) and torch.equal(initialiser.slots[4], before[4])
    initialiser.activate(4)
    assert initialiser(3).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="do not fit"):
        initialiser.grow(torch.ones(4), torch.randn(2, 4), noise_scale=0.2)
    with pytest.raises(ValueError, match="cannot activate"):
        initialiser.activate(6)
