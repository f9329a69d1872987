"""Fixtures for the runtime tests. The DICOM writer and data paths live in rt_dicom_writer.py
(a uniquely named helper module, importable from every test file in this folder)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rt_dicom_writer  # noqa: E402


@pytest.fixture(scope="session")
def real_spine() -> Path:
    """../shared/data/real-spine beside the clone; tests using it skip cleanly without it."""
    root = rt_dicom_writer.REAL_SPINE
    if not root.is_dir():
        pytest.skip(f"real spine MRI not available ({root} is absent: a fresh clone has no "
                    "../shared)")
    return root
