"""DDP gives one process's results: evaluation sharding, the gathered contrastive loss, and
real two-process gloo runs of train.py / eval.py against one process on the same data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import TINY, compose_config, run_cli

from ocl.cli import train
from ocl.contracts.output import ModelOutput
from ocl.data.sampling import RoundRobinBatchSampler, ShardingError
from ocl.losses.contrastive import SlotSlotContrastive

SLOTCONTRAST_TINY = [
    "experiment=slotcontrast_synthetic",
    "data.train_size=16",
    "data.val_size=6",
    "+data.val_batch_size=2",  # 3 validation batches: 2 on rank 0, 1 on rank 1
    "data.resolution=32",
    "data.train_frames=2",
    "data.val_frames=3",
    "model.processor.initialiser.num_slots=3",
    "model.processor.initialiser.dim=16",
    "model.decoder.hidden_dims=[16]",
    "model.scheduler.warmup_steps=2",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "logger=csv",
]
"""SlotContrast (learned initial slots, MSE + the batch-pooled contrastive loss) on tiny data."""

TWO_PROCESSES = ["trainer=ddp", "trainer.devices=2"]


def logged_losses(output_dir: Path) -> dict[int, float]:
    with open(output_dir / "csv" / "metrics.csv") as handle:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")}


@pytest.mark.parametrize(("size", "batch_size", "world_size"), [(6, 2, 2), (7, 2, 3), (10, 4, 2), (5, 5, 1)])
def test_round_robin_batches_are_the_one_process_batches_each_on_one_rank(size, batch_size, world_size):
    one_process = list(RoundRobinBatchSampler(size, batch_size))
    assert one_process == [list(range(i, min(i + batch_size, size))) for i in range(0, size, batch_size)]
    per_rank = [list(RoundRobinBatchSampler(size, batch_size, rank, world_size)) for rank in range(world_size)]
    assert [len(RoundRobinBatchSampler(size, batch_size, r, world_size)) for r in range(world_size)] == [
        len(batches) for batches in per_rank
    ]
    dealt = {
        rank + local * world_size: batch for rank, batches in enumerate(per_rank) for local, batch in enumerate(batches)
    }
    assert sorted(dealt) == list(range(len(one_process)))  # every batch on exactly one rank
    assert [dealt[g] for g in range(len(one_process))] == one_process  # no padding, no repeats


def test_a_rank_without_evaluation_batch_is_refused_with_the_setting_to_change():
    with pytest.raises(
        ShardingError, match=r"fill 1 batch\(es\), fewer than the 2 DDP ranks: set data.val_batch_size to at most 2"
    ):
        RoundRobinBatchSampler(4, 4, rank=1, world_size=2)


def _contrastive_on_rank(
    rank: int,
    world_size: int,
    init_file: str,
    slots: torch.Tensor,
    out_dir: str,
    softmax_over: str,
    pool_videos: int | None,
) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        per_rank = slots.shape[0] // world_size
        local = slots[rank * per_rank : (rank + 1) * per_rank].clone().requires_grad_(True)
        term = SlotSlotContrastive(temperature=0.1, softmax_over=softmax_over, pool_videos=pool_videos).train()
        loss = term(ModelOutput(slots=local, masks=torch.zeros(0)), {})
        loss.backward()
        term.eval()
        evaluation = term(ModelOutput(slots=local.detach(), masks=torch.zeros(0)), {})
        torch.save({"loss": loss.detach(), "grad": local.grad, "eval": evaluation}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("softmax_over", "pool_videos"),
    [("current", None), ("next", None), ("current", 2)],
    ids=["current", "next", "pools_of_2"],
)
@pytest.mark.slow
def test_gathered_contrastive_loss_and_gradients_on_two_ranks_equal_one_process(tmp_path, softmax_over, pool_videos):
    """pools_of_2: 3 videos per rank in pools {0, 1}, {2, 3}, {4, 5}; the middle one spans both ranks."""
    torch.manual_seed(0)
    slots = torch.randn(6, 3, 5, 8, dtype=torch.float64).float()  # [B, T, K, d]
    full = slots.clone().requires_grad_(True)
    term = SlotSlotContrastive(temperature=0.1, softmax_over=softmax_over, pool_videos=pool_videos).train()
    expected = term(ModelOutput(slots=full, masks=torch.zeros(0)), {})
    expected.backward()
    # forkserver, not fork: a fork of a process whose OpenMP thread pool already ran (earlier tests in
    # the same pytest session) can deadlock in the child's first parallel operation; the fork server
    # (script_runner's, with the framework imported) never ran one
    mp.start_processes(
        _contrastive_on_rank,
        args=(2, str(tmp_path / "init"), slots, str(tmp_path), softmax_over, pool_videos),
        nprocs=2,
        start_method="forkserver",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # DDP averages over ranks: the mean of the rank losses and of the rank gradients is one process's.
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, expected.detach())
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]) / 2, full.grad)
    # Without the gather the negatives would be the rank's half batch only: a different loss.
    half = term(ModelOutput(slots=slots[:3], masks=torch.zeros(0)), {})
    assert not torch.allclose(half, ranks[0]["loss"])
    torch.testing.assert_close(ranks[0]["eval"], half)  # evaluation pools the rank's own (whole) batch


@pytest.mark.slow
def test_two_process_training_gives_the_losses_and_metrics_of_one_process(tmp_path):
    one = train(compose_config([*SLOTCONTRAST_TINY, "data.batch_size=4", f"paths.output_dir={tmp_path / 'one'}"]))
    result = run_cli(
        "train.py", [*SLOTCONTRAST_TINY, *TWO_PROCESSES, "data.batch_size=2", f"hydra.run.dir={tmp_path / 'two'}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert sorted(two) == sorted(one) and "val/video_fg_ari" in two and "val/loss" in two
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    one_losses, two_losses = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert sorted(two_losses) == list(range(6))
    assert two_losses == pytest.approx(one_losses, rel=1e-5)
    assert len(set(one_losses.values())) == 6  # the losses change from step to step: the comparison means something


@pytest.mark.slow
def test_two_process_evaluation_of_random_initial_slots_gives_one_process_metrics(tmp_path):
    """SAVi draws its initial slots from a seed per evaluation batch: each rank must use the
    seed of the one-process batch it evaluates."""
    overrides = [
        *TINY,
        "data.val_size=6",
        "+data.val_batch_size=2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    ]
    one = train(compose_config([*overrides, f"paths.output_dir={tmp_path / 'train'}"]), overrides)
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    result = run_cli(
        "eval.py",
        [f"ckpt_path={checkpoint}", *TWO_PROCESSES, "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'eval'}"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
