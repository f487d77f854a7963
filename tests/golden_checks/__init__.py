"""Golden checks: ocl's components against the authors' outputs (tests/test_golden.py).

Each module lists ``CHECKS = {fixture path relative to the golden folder: {case: check}}``; a
check gets the :class:`~golden_checks.common.Fixture` and asserts through
:func:`~golden_checks.common.expect_close`.
"""

from __future__ import annotations

from golden_checks import checkpoints, curriculum, feature_video, slash, smtc

CHECKS = {**feature_video.CHECKS, **curriculum.CHECKS, **smtc.CHECKS, **slash.CHECKS, **checkpoints.CHECKS}
