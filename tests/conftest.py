"""Shared fixtures. Tests mirror the package layout: tests/runtime, tests/phantom, ..."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_SPINE = REPO.parent / "shared" / "data" / "real-spine"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def real_spine() -> Path:
    """../shared/data/real-spine beside the clone; tests using it skip cleanly without it."""
    if not REAL_SPINE.is_dir():
        pytest.skip(f"real spine MRI not present at {REAL_SPINE} (a fresh clone has no ../shared)")
    return REAL_SPINE
