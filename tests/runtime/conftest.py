"""Fixtures for the runtime tests (the DICOM writer and data paths: tests/helpers/dicom.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.dicom import REAL_SPINE


@pytest.fixture(scope="session")
def real_spine() -> Path:
    """../shared/data/real-spine beside the clone; tests using it skip cleanly without it."""
    root = REAL_SPINE
    if not root.is_dir():
        pytest.skip(f"real spine MRI not available ({root} is absent: a fresh clone has no "
                    "../shared)")
    return root
