"""Metrics and CIs against reference values: scikit-learn, scipy, hand computations."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
from scipy import stats  # noqa: E402
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score  # noqa: E402

from spinefx.train import metrics as M  # noqa: E402


def _toy(n_pos=30, n_neg=70, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = rng.normal(loc=y * 1.2, scale=1.0)
    p = 1 / (1 + np.exp(-s))
    if ties:
        p = np.round(p, 1)  # many ties: exercises the midranks
    return y, p


# ---------------------------------------------------------------------------------------------
# proportions
# ---------------------------------------------------------------------------------------------
def test_wilson_matches_published_values() -> None:
    # statsmodels proportion_confint(8, 10, method="wilson") = (0.4901625, 0.9433178)
    lo, hi = M.wilson_ci(8, 10)
    assert lo == pytest.approx(0.4901625, abs=1e-6)
    assert hi == pytest.approx(0.9433178, abs=1e-6)
    # k = 0: lower bound 0, upper bound z^2 / (n + z^2)
    z2 = stats.norm.ppf(0.975) ** 2
    assert M.wilson_ci(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    lo, hi = M.wilson_ci(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + z2))
    assert M.wilson_ci(0, 0) == (None, None)
    # formula from its definition at another confidence level
    k, n, conf = 37, 52, 0.9
    z = stats.norm.ppf(0.5 + conf / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert M.wilson_ci(k, n, conf) == pytest.approx((centre - half, centre + half))
    with pytest.raises(ValueError):
        M.wilson_ci(5, 3)


def test_call_metrics_match_sklearn_confusion_matrix() -> None:
    y, p = _toy()
    pred = (p >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    m = M.call_metrics(y, pred)
    assert m["counts"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert m["accuracy"]["value"] == pytest.approx((tp + tn) / len(y))
    assert m["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert (m["sensitivity"]["k"], m["sensitivity"]["n"]) == (tp, tp + fn)
    assert m["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"]["value"] == pytest.approx(tp / (tp + fp))
    assert m["npv"]["value"] == pytest.approx(tn / (tn + fn))
    assert (m["ppv"]["ci_low"], m["ppv"]["ci_high"]) == pytest.approx(M.wilson_ci(tp, tp + fp))


def test_string_labels_are_accepted_and_bad_ones_refused() -> None:
    assert M.as_binary(["benign", "Malignant", " malignant "]).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="benign/malignant"):
        M.as_binary(["benign", "tumour"])
    with pytest.raises(ValueError):
        M.as_binary([0, 2])


# ---------------------------------------------------------------------------------------------
# AUC
# ---------------------------------------------------------------------------------------------
def _delong_bruteforce(y, p):
    """DeLong 1988 from its definition: placement values psi(x, y) in O(m n)."""
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    var = np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg)
    return auc, var


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_definition_and_sklearn(ties) -> None:
    y, p = _toy(ties=ties)
    auc, var = _delong_bruteforce(y, p)
    d = M.auc_delong(y, p)
    assert d["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert d["value"] == pytest.approx(auc, abs=1e-12)
    assert d["se"] ** 2 == pytest.approx(var, rel=1e-10)
    z = stats.norm.ppf(0.975)
    assert d["ci_low"] == pytest.approx(auc - z * math.sqrt(var))
    assert d["ci_high"] == pytest.approx(min(1.0, auc + z * math.sqrt(var)))


def test_delong_variance_agrees_with_bootstrap() -> None:
    y, p = _toy(60, 120, seed=3, ties=False)
    rng = np.random.default_rng(1)
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    aucs = [psi[np.ix_(rng.integers(0, len(pos), len(pos)), rng.integers(0, len(neg), len(neg)))]
            .mean() for _ in range(4000)]  # stratified bootstrap of the Mann-Whitney AUC
    se_boot = np.std(aucs, ddof=1)
    assert M.auc_delong(y, p)["se"] == pytest.approx(se_boot, rel=0.12)
    boot = M.bootstrap_cis(y, p, n_boot=500, seed=2)
    d = M.auc_delong(y, p)
    assert boot["auc"]["ci_low"] == pytest.approx(d["ci_low"], abs=0.03)
    assert boot["auc"]["ci_high"] == pytest.approx(d["ci_high"], abs=0.03)
    assert M.bootstrap_cis(y, p, n_boot=50, seed=2) == M.bootstrap_cis(y, p, n_boot=50, seed=2)


def test_delong_edge_cases() -> None:
    assert M.auc_delong([1, 1, 1], [0.2, 0.5, 0.9])["value"] is None
    d = M.auc_delong([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])  # perfect separation
    assert d["value"] == 1.0 and d["se"] == 0.0 and d["ci_high"] == 1.0
    y, p = _toy()
    same = M.delong_test(y, p, p)
    assert same["p"] == 1.0 and same["difference"] == 0.0
    rng = np.random.default_rng(0)
    worse = M.delong_test(y, p, rng.random(len(y)))
    assert worse["auc_a"] > worse["auc_b"] and 0 <= worse["p"] < 0.05


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------
def test_ece_hand_example() -> None:
    p = [0.05, 0.15, 0.12, 0.95, 0.85, 0.55]
    y = [0, 0, 1, 1, 1, 0]
    # bins (width 0.1): {0.05}: |0-0.05|; {0.15,0.12}: 2*|0.5-0.135|; {0.55}: 0.55;
    # {0.85}: 0.15; {0.95}: 0.05
    expected = (0.05 + 2 * 0.365 + 0.55 + 0.15 + 0.05) / 6
    assert M.expected_calibration_error(y, p, 10) == pytest.approx(expected)
    assert M.expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # p = 1 lands in the last bin
    bins = M.reliability_bins(y, p, 10)
    assert [b["n"] for b in bins] == [1, 2, 0, 0, 0, 1, 0, 0, 1, 1]
    assert bins[1]["mean_probability"] == pytest.approx(0.135)
    assert bins[1]["observed_rate"] == 0.5


def test_brier_matches_sklearn() -> None:
    y, p = _toy()
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p))


def test_binary_metrics_is_plain_json() -> None:
    y, p = _toy()
    m = M.binary_metrics(y, p, 0.4, bootstrap=100, seed=1)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m
    assert m["n"] == 100 and m["n_malignant"] == 30 and m["threshold"] == 0.4
    assert m["auc"]["value"] == pytest.approx(roc_auc_score(y, p))
    assert m["auc"]["bootstrap"]["ci_low"] <= m["auc"]["value"] <= m["auc"]["bootstrap"]["ci_high"]
    assert m["brier"]["ci_low"] <= m["brier"]["value"] <= m["brier"]["ci_high"]
    assert m["ece"]["binning"] == "equal-width"
    pred = (p >= 0.4).astype(int)
    assert m["counts"]["tp"] == int(np.sum((pred == 1) & (y == 1)))
    one_class = M.binary_metrics([0, 0, 0], [0.1, 0.6, 0.2])
    assert one_class["sensitivity"]["value"] is None and one_class["auc"]["value"] is None
    json.dumps(one_class, allow_nan=False)


def test_per_case_thresholds() -> None:
    y, p = _toy()
    thr = np.where(np.arange(len(y)) % 2, 0.3, 0.7)
    m = M.binary_metrics(y, p, thr)
    pred = (p >= thr).astype(int)
    assert m["threshold"] is None
    assert m["counts"]["tp"] == int(np.sum((pred == 1) & (y == 1)))
    assert M.binary_metrics(y, p, np.full(len(y), 0.4)) == M.binary_metrics(y, p, 0.4)
    with pytest.raises(ValueError, match="one value per case"):
        M.binary_metrics(y, p, [0.5, 0.5])


def test_per_fold_summary() -> None:
    y, p = _toy()
    folds = np.arange(len(y)) % 4
    out = M.per_fold_summary(folds, y, p, 0.5)
    accs = [np.mean((p[folds == f] >= 0.5) == y[folds == f]) for f in range(4)]
    assert [r["fold"] for r in out["folds"]] == [0, 1, 2, 3]
    assert out["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert out["summary"]["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    aucs = [roc_auc_score(y[folds == f], p[folds == f]) for f in range(4)]
    assert out["summary"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    # a fold without malignant cases: sensitivity/AUC undefined there, left out of the mean
    folds2 = np.where(y == 1, 0, np.arange(len(y)) % 2)
    out2 = M.per_fold_summary(folds2, y, p)
    assert out2["summary"]["sensitivity"]["n_folds"] == 1
    assert out2["summary"]["sensitivity"]["sd"] is None
    json.dumps(out2, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# threshold and temperature
# ---------------------------------------------------------------------------------------------
def test_choose_threshold_youden_hand_example() -> None:
    y = [0, 0, 0, 1, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9]
    # cut at 0.6: sens 3/4, spec 4/4 -> J 0.75; cut at 0.35: sens 1, spec 3/4 -> J 0.75;
    # tie goes to the more specific (higher) cut-off, midway to the next lower score 0.4
    t = M.choose_threshold(y, p, "youden")
    assert t == pytest.approx(0.5)
    pred = (np.array(p) >= t).astype(int)
    assert pred.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert M.choose_threshold(y, p, "sensitivity", min_sensitivity=1.0) == pytest.approx(0.325)
    assert M.choose_threshold([1, 1], [0.2, 0.3]) == 0.5
    with pytest.raises(ValueError, match="unknown threshold rule"):
        M.choose_threshold(y, p, "magic")


def test_temperature_scaling_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    z_true = rng.normal(0, 2, 20000)
    y = (rng.random(len(z_true)) < 1 / (1 + np.exp(-z_true))).astype(int)
    overconfident = 3.0 * z_true  # a model whose logits are 3x too large
    t = M.fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.05)
    calibrated = M.apply_temperature(overconfident, t)
    assert roc_auc_score(y, calibrated) == pytest.approx(roc_auc_score(y, overconfident))
    rep = M.temperature_report(overconfident, y, t)
    assert rep["after"]["nll"] < rep["before"]["nll"]
    assert rep["after"]["ece"] < rep["before"]["ece"]
    assert M.logit([0.5])[0] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# McNemar, Fisher, multiple comparisons
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (3, 3), (5, 2), (2, 11), (0, 17),
                                 (40, 8), (64, 4), (100, 101)])
def test_mcnemar_exact_equals_binomtest(b, c) -> None:
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert M.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_paired_mcnemar_counts() -> None:
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    a = [1, 1, 0, 1, 0, 0, 1, 0]  # wrong on cases 2, 6
    r = [0, 1, 1, 0, 1, 0, 1, 0]  # wrong on cases 0, 3, 4, 6
    t = M.paired_mcnemar(y, a, r)
    assert (t["b"], t["c"], t["both_wrong"], t["both_correct"]) == (3, 1, 1, 3)
    assert t["p"] == pytest.approx(stats.binomtest(3, 4, 0.5).pvalue)


def test_feature_test_matches_fisher_exact() -> None:
    y = np.r_[np.ones(20, int), np.zeros(40, int)]
    f = np.r_[np.ones(14, int), np.zeros(6, int), np.ones(5, int), np.zeros(35, int)]
    t = M.feature_test(f, y)
    res = stats.fisher_exact([[14, 6], [5, 35]])
    assert t["p"] == pytest.approx(res.pvalue)
    assert t["odds_ratio"] == pytest.approx(res.statistic)
    assert (t["malignant"]["k"], t["malignant"]["n"], t["benign"]["k"]) == (14, 20, 5)
    empty_cell = M.feature_test([1, 1, 0, 0], [1, 1, 0, 0])
    assert empty_cell["odds_ratio"] is None  # infinite odds ratio is not JSON


def test_holm_and_bonferroni_hand_example() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert M.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert M.bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert M.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_temperature_is_fitted_per_fold_without_the_test_labels() -> None:
    """Each fold's temperature comes from its own validation split only: fold 1 is made
    overconfident (T > 1), fold 2 underconfident (T < 1); flipping a test label changes the
    before/after scores but not the temperatures."""
    from spinefx.train.summary import _calibration

    rng = np.random.default_rng(0)

    def preds(n: int, scale: float, ids: str) -> list[dict]:
        y = rng.integers(0, 2, n)
        z = (2 * y - 1) * 1.0 + rng.normal(0, 1.0, n)   # calibrated at scale 1
        return [{"case_id": f"{ids}{i}", "label": "malignant" if t else "benign",
                 "logit": float(v * scale)} for i, (t, v) in enumerate(zip(y, z))]

    folds = [{"fold": 1, "val_predictions": preds(80, 3.0, "v1_"),
              "predictions": preds(40, 3.0, "a")},
             {"fold": 2, "val_predictions": preds(80, 0.4, "v2_"),
              "predictions": preds(40, 0.4, "b")}]
    cal = _calibration(folds)["out_of_fold"]
    t1, t2 = cal["temperatures"]
    assert t1 > 1.5 and t2 < 0.7 and cal["n"] == 80
    assert cal["after"]["ece"] < cal["before"]["ece"]
    folds[0]["predictions"][0]["label"] = ("benign" if folds[0]["predictions"][0]["label"]
                                           == "malignant" else "malignant")
    again = _calibration(folds)["out_of_fold"]
    assert again["temperatures"] == [t1, t2] and again["before"] != cal["before"]
