"""Golden checks: feature_video."""

from __future__ import annotations

from collections.abc import Callable

from golden_checks.common import Fixture

CHECKS: dict[str, dict[str, Callable[[Fixture], None]]] = {}
