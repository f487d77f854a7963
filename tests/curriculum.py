"""Golden checks: the learning-rate schedule and SlotCurri's slot curriculum.

``lr_schedule.npz``: the scheduler a recipe run builds (its composed ``model.optimizer`` and
``model.scheduler`` through the method's ``configure_optimizers``), stepped as Lightning steps it.
``curriculum_slotcurri_split.npz``: :class:`~ocl.callbacks.curriculum.SlotCurriculum` from the
SlotCurri recipe's config, driven through its Lightning hooks step by step on a stand-in trainer,
with the fixture's noise rows in place of its random draws. All float64 end to end.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace

import torch
from conftest import compose_config
from golden_checks.common import FLOAT64, Fixture, expect_close, load_mapped
from hydra.utils import instantiate

from ocl.callbacks.curriculum import SlotCurriculum
from ocl.contracts.output import ModelOutput
from ocl.methods.base import ObjectCentricMethod
from ocl.modules.initialisers import LearnedInit


def composed(experiment: str, max_steps: int):
    return compose_config([f"experiment={experiment}", f"trainer.max_steps={max_steps}", "paths.output_dir=/unused"])


def check_lr_schedule(fixture: Fixture, experiment: str) -> None:
    """The lr of the optimiser step ``steps[i]`` (after that many scheduler steps) and the schedule
    factor there; the fixture's base lr, as the recipes' lrs are set elsewhere."""
    cfg = composed(experiment, max_steps=100_000)
    base_lr = float(fixture[f"output/{experiment}/base_lr"])
    method = SimpleNamespace(  # the parts of ObjectCentricMethod that configure_optimizers reads
        optimizer_factory=functools.partial(instantiate(cfg.model.optimizer), lr=base_lr),
        scheduler_factory=instantiate(cfg.model.scheduler),
        parameter_groups=lambda: [{"params": [torch.nn.Parameter(torch.zeros(1))]}],
    )
    configured = ObjectCentricMethod.configure_optimizers(method)
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    steps = [int(step) for step in fixture["input/steps"]]
    lrs = []
    optimizer.step()  # no gradients: changes nothing, but the scheduler expects a step first
    for step in range(max(steps) + 1):
        if step in steps:
            lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    factors = [scheduler.lr_lambdas[0](step) for step in steps]
    expect_close(torch.tensor(lrs), fixture[f"output/{experiment}/lr"], FLOAT64, "lr")
    expect_close(torch.tensor(factors), fixture[f"output/{experiment}/factor"], FLOAT64, "factor")


def error_output(errors: torch.Tensor) -> ModelOutput:
    """A training output whose per-slot error (:func:`~ocl.callbacks.curriculum.per_slot_error_sums`
    over its count) is ``errors [K]``: one token per slot, each slot's mask on its own token."""
    num_slots = errors.numel()
    reconstruction = (errors * num_slots).sqrt().reshape(1, 1, num_slots, 1)  # [B, T, N, D]
    masks = torch.eye(num_slots).reshape(1, 1, num_slots, 1, num_slots)  # [B, T, K, h, w]
    return ModelOutput(
        slots=torch.zeros(1, 1, num_slots, 1),
        masks=masks,
        reconstruction=reconstruction,
        target=torch.zeros_like(reconstruction),
    )


def check_curriculum(fixture: Fixture, variant: str) -> None:
    """The recipe's curriculum (``cloned``: ``split_from_copy=True``) over the fixture's 100 steps:
    the errors measured on the step before each growth, the split, the slots each step trains."""
    cfg = composed("slotcurri_movi", max_steps=100)
    curriculum: SlotCurriculum = instantiate(cfg.callbacks.curriculum, split_from_copy=variant == "cloned")
    curriculum.noise = lambda growth, num_new, dim: fixture[f"input/noise_growth{growth + 1}"]
    initialiser = LearnedInit(11, 8)
    load_mapped(initialiser, fixture.params(), lambda name: name)
    trainer = SimpleNamespace(
        global_step=0,
        max_steps=100,
        fast_dev_run=False,
        world_size=1,
        strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor, broadcast=lambda obj, src: obj),
    )
    module = SimpleNamespace(slot_initialiser=lambda: initialiser, log=lambda *args, **kwargs: None)
    curriculum.setup(trainer, module, "fit")
    assert curriculum.growth_steps == [10, 25]
    errors = {10: fixture["input/errors_growth1"], 25: fixture["input/errors_growth2"]}
    probes = [int(step) for step in fixture["input/probe_steps"]]
    active, grown = [], {}
    curriculum.on_train_start(trainer, module)
    for step in range(max(probes) + 1):
        trainer.global_step = step
        curriculum.on_train_batch_start(trainer, module, None, step)
        if step in errors:
            grown[step] = initialiser.slots.detach().clone()
        if step in probes:
            active.append(initialiser(1).shape[1])
        trainer.global_step = step + 1  # the optimiser step
        output = error_output(errors.get(step + 1, torch.ones(initialiser.num_active)))
        curriculum.on_train_batch_end(trainer, module, {"output": output}, None, step)

    prefix = f"output/{variant}/"
    expect_close(torch.tensor(active), fixture[prefix + "active_slots_per_probe_step"], 0, "active slots")
    for growth, step in enumerate(errors, start=1):
        expected = fixture[f"{prefix}slots_after_growth{growth}"]
        expect_close(grown[step].reshape(expected.shape), expected, FLOAT64, f"slots after growth {growth}")
        splits = {split["parent"]: split for split in curriculum.history if split["step"] == step}
        parents = range(len(errors[step]))
        assert sorted(splits) == list(parents), f"growth {growth}: parents with children {sorted(splits)}"
        children = [len(splits[p]["children"]) if p in splits else 0 for p in parents]
        expected_children = fixture[f"{prefix}children_per_parent_growth{growth}"]
        expect_close(torch.tensor(children), expected_children, 0, f"children growth {growth}")
        for ours, theirs in [
            ("nearest", "nn_idx"),
            ("distance", "d_l2"),
            ("parent_norm", "norm_i"),
            ("mean_norm", "mean_norm"),
            ("sigma", "noise_scale"),
        ]:
            values = torch.tensor([float(splits[p][ours]) for p in parents])
            expect_close(values, fixture[f"{prefix}{theirs}_growth{growth}"], FLOAT64, f"{theirs} growth {growth}")


def case(check: Callable[[Fixture, str], None], name: str) -> Callable[[Fixture], None]:
    return lambda fixture: check(fixture, name)


CHECKS: dict[str, dict[str, Callable[[Fixture], None]]] = {
    "lr_schedule.npz": {name: case(check_lr_schedule, name) for name in ("videosaur_movi_c", "slotcontrast_movi_c")},
    "curriculum_slotcurri_split.npz": {name: case(check_curriculum, name) for name in ("aliased", "cloned")},
}
