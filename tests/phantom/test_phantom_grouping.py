"""Several cases per patient: the plan, the cohort on disk, and patient-grouped CV folds.

The grouping check uses what ``spinefx train`` uses: the manifest read by the runtime
(:func:`spinefx.runtime.read_manifest`, ``Case.patient_id``) and
:func:`spinefx.train.folds.make_folds`; a plain stratified split of the same cases is the
control that shows the check can fail.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from spinefx.phantom import iter_cases, plan_cohort
from spinefx.phantom.spine import LESION_LEVELS
from spinefx.runtime import load_series, read_manifest
from spinefx.train.folds import make_folds

N, N_MALIGNANT, K, SEED = 12, 6, 2, 5


@pytest.fixture(scope="module")
def cohort(phantom_cohorts) -> Path:
    return phantom_cohorts.manifest(n_cases=N, n_malignant=N_MALIGNANT, seed=SEED,
                                    cases_per_patient=K)


def _by_patient(cases) -> dict[str, list]:
    out = defaultdict(list)
    for case in cases:
        out[case.patient_id].append(case)
    return out


def test_patients_hold_k_cases_of_one_label_at_distinct_levels(cohort: Path) -> None:
    cases = read_manifest(cohort)
    patients = _by_patient(cases)
    assert len(cases) == N and len(patients) == N // K < len(cases)
    assert sum(c.label == "malignant" for c in cases) == N_MALIGNANT
    for members in patients.values():
        assert len(members) == K
        assert len({c.label for c in members}) == 1
        assert len({c.level for c in members}) == K
        assert {c.level for c in members} <= set(LESION_LEVELS)
    info = json.loads((cohort.parent / "cohort.json").read_text())
    assert info["cases_per_patient"] == K and info["n_patients"] == len(patients)
    seeds = {p["patient_id"]: p["patient_seed"] for p in info["plan"]}
    assert len(set(seeds.values())) == len(patients)  # one patient seed per patient


def test_a_patients_cases_share_one_spine_and_acquisition(cohort: Path) -> None:
    """patient_seed: the same anatomy and acquisition, the fracture at another level."""
    for members in _by_patient(read_manifest(cohort)).values():
        t1 = [load_series(c.t1) for c in members]
        assert len({v.data.shape for v in t1}) == 1
        assert len({tuple(v.pixel_spacing) for v in t1}) == 1
        assert not np.array_equal(t1[0].data, t1[1].data)


@pytest.mark.parametrize("seed", range(5))
def test_grouped_folds_keep_each_patient_in_one_fold(cohort: Path, seed: int) -> None:
    cases = read_manifest(cohort)
    y = np.array([c.target for c in cases])
    groups = np.array([c.patient_id for c in cases])
    fold_of = make_folds(y, groups, folds=3, seed=seed)
    for patient in set(groups.tolist()):
        assert len(set(fold_of[groups == patient].tolist())) == 1, patient
    assert set(fold_of.tolist()) == {1, 2, 3}


def test_an_ungrouped_split_would_separate_a_patient(cohort: Path) -> None:
    """The control: without groups, some seed splits a patient across folds."""
    cases = read_manifest(cohort)
    y = np.array([c.target for c in cases])
    groups = np.array([c.patient_id for c in cases])
    split = 0
    for seed in range(5):
        fold_of = np.zeros(len(y), dtype=int)
        folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed).split(y, y)
        for k, (_, test) in enumerate(folds, start=1):
            fold_of[test] = k
        split += any(len(set(fold_of[groups == p].tolist())) > 1 for p in set(groups.tolist()))
    assert split > 0


def test_the_stream_of_a_grouped_cohort_is_the_disk_cohort(cohort: Path) -> None:
    cases = read_manifest(cohort)
    for case, (row, phantom) in zip(cases, iter_cases(SEED, N, N_MALIGNANT,
                                                      cases_per_patient=K, progress=False),
                                    strict=True):
        assert (row["case_id"], row["patient_id"], row["level"]) == (
            case.case_id, case.patient_id, case.level)
        assert np.array_equal(load_series(case.t1).data, phantom.t1)


@pytest.mark.parametrize("n_cases, n_malignant, k", [
    (7, 3, 2), (190, 50, 2), (190, 50, 3), (10, 0, 3), (5, 5, 6), (13, 4, 4), (1, 1, 2)])
def test_plan_honours_n_malignant_and_patient_sizes(n_cases: int, n_malignant: int,
                                                    k: int) -> None:
    plans = plan_cohort(1, n_cases, n_malignant, cases_per_patient=k)
    assert len(plans) == n_cases
    assert sum(p.label == "malignant" for p in plans) == n_malignant
    sizes = Counter(p.patient_id for p in plans)
    by_label = Counter()
    for p in plans:
        by_label[p.label, sizes[p.patient_id] < k] += 1
    # every patient has k cases except at most one remainder patient per class
    for label, n in (("malignant", n_malignant), ("benign", n_cases - n_malignant)):
        assert by_label[label, True] == n % k
    for pid in sizes:
        members = [p for p in plans if p.patient_id == pid]
        assert len({p.label for p in members}) == 1
        assert len({p.level for p in members}) == len(members)
        assert len({p.patient_seed for p in members}) == 1
    assert len({p.seed for p in plans}) == n_cases
    assert plans == plan_cohort(1, n_cases, n_malignant, cases_per_patient=k)


def test_plan_with_one_case_per_patient_leaves_level_and_anatomy_to_the_case_seed() -> None:
    plans = plan_cohort(0, 20, 5)
    assert all(p.level is None and p.patient_seed is None for p in plans)
    assert len({p.patient_id for p in plans}) == 20


def test_plan_refuses_more_cases_per_patient_than_fracture_levels() -> None:
    with pytest.raises(ValueError, match="cases_per_patient"):
        plan_cohort(0, 10, 5, cases_per_patient=len(LESION_LEVELS) + 1)
    with pytest.raises(ValueError, match="cases_per_patient"):
        plan_cohort(0, 10, 5, cases_per_patient=0)
