"""ocl equals the authors' code: every fixture in tests/fixtures/golden (copied from
``../shared/golden``, numbers computed by the authors' implementations) is re-run through ocl's
component with the recipe's flags, in float64, and its outputs and gradients compared.

Tolerances (golden_checks/common.py): 1e-10 where the computation is float64 end to end, 1e-6
where ocl deliberately computes in float32 (each check says where). The checks live in
``golden_checks/`` by method family; ``pytest tests/test_golden.py -s`` prints every max |diff|.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import torch
from golden_checks import CHECKS
from golden_checks.common import CURRENT_CASE, GOLDEN, MEASURED, Fixture

SHARED = Path(__file__).resolve().parents[2] / "shared" / "golden"
"""The project's shared fixture folder, where it exists next to the checkout."""

FIXTURES = sorted(str(path.relative_to(GOLDEN)) for path in GOLDEN.rglob("*.npz"))
CASES = [(fixture, case) for fixture in FIXTURES for case in sorted(CHECKS.get(fixture, {}))]


def test_every_fixture_has_a_check():
    assert FIXTURES, f"no fixtures under {GOLDEN}"
    unchecked = [fixture for fixture in FIXTURES if not CHECKS.get(fixture)]
    assert not unchecked, f"fixtures without a golden check: {unchecked}"
    assert not set(CHECKS) - set(FIXTURES), f"checks of missing fixtures: {sorted(set(CHECKS) - set(FIXTURES))}"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/golden is not next to this checkout (CI clones alone)")
def test_the_copy_equals_the_shared_fixtures():
    shared = sorted(str(path.relative_to(SHARED)) for path in SHARED.rglob("*") if path.is_file())
    copied = sorted(str(path.relative_to(GOLDEN)) for path in GOLDEN.rglob("*") if path.is_file())
    assert shared == copied
    different = [name for name in shared if not filecmp.cmp(SHARED / name, GOLDEN / name, shallow=False)]
    assert not different, f"copy out of date: {different} (cp -r ../shared/golden/. tests/fixtures/golden/)"


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize(("fixture", "case"), CASES, ids=[f"{f}::{c}" for f, c in CASES])
def test_golden(fixture: str, case: str, capsys):
    CURRENT_CASE[0] = f"{fixture}::{case}"
    first = len(MEASURED)
    CHECKS[fixture][case](Fixture(GOLDEN / fixture))
    assert len(MEASURED) > first, "the check compared nothing"
    with capsys.disabled():
        worst = max(MEASURED[first:], key=lambda row: row[2])
        print(f"\n{fixture}::{case}: {len(MEASURED) - first} arrays, max |diff| {worst[2]:.2g} ({worst[1]})", end="")
