"""Which cases train, validate and test: stratified by label, grouped by patient.

Grouping by ``patient_id`` keeps every case of a patient (e.g. two fractured levels) on one side
of every split, so a fold model is never tested on a patient it trained on. A run records its
test folds in ``splits.json``; a resumed run must find the same ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from spinefx.runtime import Case
from spinefx.runtime.files import atomic_write_json, read_json

from .errors import TrainingError


def _groups_per_class(y: np.ndarray, groups: np.ndarray) -> tuple[int, int]:
    """(benign patients, malignant patients)."""
    pos = len(set(groups[y == 1].tolist()))
    neg = len(set(groups[y == 0].tolist()))
    return neg, pos


def make_folds(y: ArrayLike, groups: ArrayLike, folds: int, seed: int) -> np.ndarray:
    """Test-fold number (1..folds) of every case: stratified by label (``y``: 0/1), grouped by
    patient (``groups``: patient ids)."""
    labels, patients = np.asarray(y), np.asarray(groups)
    neg, pos = _groups_per_class(labels, patients)
    if folds < 2:
        raise TrainingError(f"--folds must be at least 2, got {folds}")
    if min(neg, pos) < folds:
        raise TrainingError(f"{folds} folds need at least {folds} patients of each class; "
                            f"this cohort has {pos} malignant and {neg} benign")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = np.zeros(len(labels), dtype=int)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, patients),
                                  start=1):
        out[test] = k
    return out


def inner_split(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, val_fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices out of ``idx``: stratified by label, grouped by patient."""
    neg, pos = _groups_per_class(y[idx], groups[idx])
    if min(neg, pos) < 2:
        raise TrainingError(f"a training fold has {pos} malignant and {neg} benign patients: "
                            "too few for a validation split; use fewer folds or more cases")
    n_splits = max(2, min(round(1 / max(val_fraction, 1e-3)), neg, pos))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(idx)), y[idx], groups[idx]))
    return idx[train], idx[val]


def subset(cases: list[Case], max_cases: int | None, seed: int) -> list[Case]:
    """A seeded, label-stratified subset of ``max_cases`` cases in manifest order (all cases
    when ``max_cases`` is None or not smaller)."""
    if not max_cases or max_cases >= len(cases):
        return cases
    y = [c.target for c in cases]
    keep, _ = train_test_split(np.arange(len(cases)), train_size=max_cases, stratify=y,
                               random_state=seed)
    return [cases[i] for i in sorted(keep.tolist())]


def save_splits(path: Path, cases: Sequence[Case], fold_of: np.ndarray, folds: int,
                seed: int) -> None:
    """Write ``splits.json`` (every case's test fold), or check that a resumed run's folds
    are still the saved ones."""
    splits = {"folds": folds, "seed": seed,
              "cases": [{"case_id": c.case_id, "patient_id": c.patient_id, "label": c.label,
                         "fold": int(k)} for c, k in zip(cases, fold_of)]}
    saved = read_json(path, required=False)
    if saved is None:
        atomic_write_json(path, splits)
    elif saved["cases"] != splits["cases"]:
        raise TrainingError("cannot resume: the folds differ from the saved ones (manifest "
                            "changed?)", path)
