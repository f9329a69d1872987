"""Fixtures for the runtime tests (the DICOM writer and data paths: tests/helpers/dicom.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.dicom import REAL_SPINE
from tests.helpers.onnx_model import write_tiny_model


@pytest.fixture(scope="session")
def real_spine() -> Path:
    """../shared/data/real-spine beside the clone; tests using it skip cleanly without it."""
    root = REAL_SPINE
    if not root.is_dir():
        pytest.skip(f"real spine MRI not available ({root} is absent: a fresh clone has no "
                    "../shared)")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The hand-made ONNX model of tests/helpers/onnx_model.py (needs the dev extra's onnx)."""
    pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")
    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def malignant_study(tmp_path_factory):
    """A malignant phantom study (T1 and T2 DICOM series): (folder, t1_dir, t2_dir, case)."""
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("study")
    t1_dir, t2_dir, case = write_phantom_study(root / "study", seed=3, label="malignant",
                                               t2_variant="T2", case_id="p3")
    return root / "study", t1_dir, t2_dir, case
