"""benchmarks/ceiling.py's pure parts: the 42 statistics, out-of-fold fitting, the OOF-to-
manifest alignment and the target verdicts (the cohort run itself is a benchmark, not a test)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinefx.runtime import Case
from spinefx.runtime.errors import ManifestError
from spinefx.train.oof import as_oof
from tests.helpers.benchmarks import load_benchmark

ceiling = load_benchmark("ceiling")


def test_statistics_are_42_and_read_only_the_central_half():
    rng = np.random.default_rng(0)
    array = rng.random((6, 64, 64))
    stats = ceiling.intensity_statistics(array)
    assert stats.shape == (42,)
    centre = array[2, 16:48, 16:48]
    assert stats[2 * 7] == pytest.approx(centre.mean())
    assert stats[2 * 7 + 1] == pytest.approx(centre.std())
    assert stats[2 * 7 + 4] == pytest.approx(np.median(centre))  # 50th percentile
    array[:, :16, :] = 1e6  # the margin outside the central half changes nothing
    assert np.array_equal(ceiling.intensity_statistics(array), stats)


class _Memo:
    """Predicts the mean label it was fitted on: shows which cases a fold model saw."""
    def fit(self, x, y):
        self.p = float(np.mean(y))
        return self

    def predict_proba(self, x):
        return np.column_stack([1 - np.full(len(x), self.p), np.full(len(x), self.p)])


def test_out_of_fold_never_fits_on_the_test_fold():
    y = np.array([1, 1, 0, 0, 0, 0])
    fold_of = np.array([1, 1, 2, 2, 3, 3])  # fold 1 holds every malignant case
    prob = ceiling.out_of_fold(np.zeros((6, 1)), y, fold_of, _Memo)
    assert np.allclose(prob, [0, 0, 0.5, 0.5, 0.5, 0.5])


def _cohort(labels):
    cases = [Case(f"c{i}", lab, Path("t1"), Path("t2"), 0, patient_id=f"p{i}")
             for i, lab in enumerate(labels)]
    return ceiling.Cohort(cases, np.array([c.target for c in cases]),
                          np.array([c.patient_id for c in cases]), Path("m.csv"))


def test_oof_alignment_takes_the_run_folds_and_rejects_disagreements():
    cohort = _cohort(["benign", "malignant", "benign"])
    oof = as_oof({"case_id": ["c2", "c1"], "fold": ["b", "a"], "label": [0, 1],
                  "probability": [0.1, 0.9]})
    sub, fold_of = ceiling.restrict_to_oof(cohort, oof)
    assert [c.case_id for c in sub.cases] == ["c2", "c1"] and list(fold_of) == [2, 1]
    wrong = as_oof({"case_id": ["c0"], "fold": [1], "label": [1], "probability": [0.5]})
    with pytest.raises(ManifestError, match="c0"):
        ceiling.restrict_to_oof(cohort, wrong)
    stranger = as_oof({"case_id": ["zz"], "fold": [1], "label": [1], "probability": [0.5]})
    with pytest.raises(ManifestError, match="not in the manifest"):
        ceiling.restrict_to_oof(cohort, stranger)


def _metrics(auc, acc=0.95, sens=0.95, spec=0.95, n=190):
    return {"n": n, "auc": {"value": auc}, "accuracy": {"value": acc},
            "sensitivity": {"value": sens}, "specificity": {"value": spec}}


def test_targets_pass_miss_and_not_assessed():
    results = {"oracle_lr": _metrics(0.99), "oracle_nb": _metrics(0.996),
               "statistics": _metrics(0.94), "cnn": _metrics(0.975, sens=0.89),
               "cnn_vs_statistics": {"p": 0.01}, "held_out": _metrics(0.99, n=200)}
    verdicts = [r["verdict"] for r in ceiling.judge_targets(results)]
    # AUC ok; 0.996 - 0.975 = 0.021 within 0.03; accuracy ok; sensitivity 0.89 misses;
    # specificity ok; above the baseline; held-out too small to judge
    assert verdicts == ["pass", "pass", "pass", "miss", "pass", "pass", "n/a"]
    results["cnn"] = _metrics(0.96)
    verdicts = [r["verdict"] for r in ceiling.judge_targets(results)]
    assert verdicts[:2] == ["miss", "miss"]  # 0.996 - 0.96 = 0.036 > 0.03
    no_cnn = {k: results[k] for k in ("oracle_lr", "oracle_nb", "statistics")}
    assert {r["verdict"] for r in ceiling.judge_targets(no_cnn)} == {"n/a"}
