"""Shared fixtures of the training tests: tiny SYNTHETIC phantom cohorts, generated once.

The training stack (torch, torchvision, scikit-learn, matplotlib, scipy) is the optional
``spinefx[train]`` extra: without it these tests skip cleanly.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

_MISSING = [m for m in ("torch", "torchvision", "sklearn", "safetensors", "huggingface_hub",
                        "matplotlib", "scipy") if importlib.util.find_spec(m) is None]
if _MISSING:  # torchvision is only looked up: importing it goes through _torchvision_compat
    pytest.skip(f"training extra not installed ({', '.join(_MISSING)}): "
                "pip install 'spinefx[train]'", allow_module_level=True)

TINY_CASES, TINY_MALIGNANT = 16, 6


@pytest.fixture(scope="session")
def tiny_cohort(phantom_cohorts, tmp_path_factory) -> Path:
    """16 phantom cases (6 malignant). Three patients own two cases each (two benign pairs, one
    malignant pair: e.g. two fractured levels), so grouping by patient is actually exercised.
    Returns the manifest path (of a private copy: the patient ids are rewritten here)."""
    root = tmp_path_factory.mktemp("tiny_cohort")
    manifest = phantom_cohorts.private_copy(root / "cohort", n_cases=TINY_CASES,
                                            n_malignant=TINY_MALIGNANT, seed=3)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pairs = {"benign": 2, "malignant": 1}  # how many two-case patients per label
    seen = {"benign": 0, "malignant": 0}
    for row in rows:
        label = row["label"]
        if seen[label] < 2 * pairs[label]:
            row["patient_id"] = f"{label}-pair-{seen[label] // 2 + 1}"
        seen[label] += 1
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


# the settings of the tiny cross-validation runs (several tests compare runs made with them)
TINY_RUN = dict(folds=2, epochs=2, batch_size=4, image_size=64, seed=7, progress=False)


@pytest.fixture(scope="session")
def tiny_settings() -> dict:
    """Settings of the tiny runs (several tests compare runs made with them)."""
    return dict(TINY_RUN)


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory) -> tuple[Path, dict]:
    """One finished tiny cross-validation run with a final model: (run folder, metrics)."""
    from spinefx.train.cv import train_cv

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    metrics = train_cv(tiny_cohort, out, final=True, **TINY_RUN)
    return out, metrics
