"""Diagnostic-accuracy metrics with confidence intervals: the one module training and
evaluation import their statistics from.

Conventions, shared by the modules this one gathers (:mod:`.delong`: AUC; :mod:`.calibration`:
ECE, Brier score, temperature scaling; :mod:`.significance`: the paper's tests; :mod:`.scores`:
checked inputs; counts and proportions: :mod:`spinefx.runtime.stats`), whose names are all
importable from here:

- The **positive class is malignant** (``1``); benign is ``0``. Labels may be given as 0/1
  or as the strings ``"benign"`` / ``"malignant"``.
- A case is called malignant when ``prob >= threshold`` (the same rule as
  :func:`sklearn.metrics.roc_curve`).
- Proportions (accuracy, sensitivity, specificity, PPV, NPV) carry a **Wilson score** 95%
  interval and their counts ``k`` / ``n``. A proportion whose denominator is 0 is ``None``.
- AUC carries a **DeLong** 95% interval (fast midrank algorithm of Sun & Xu 2014; normal
  approximation on the AUC scale, clipped to [0, 1], as pROC does). A seeded, **stratified**
  bootstrap (resampling malignant and benign cases separately, so every replicate has both
  classes) is optional and also gives intervals for the Brier score and the ECE.
- **Expected calibration error** uses ``n_bins`` (default 10) **equal-width** bins of the
  predicted malignancy probability over [0, 1] (defined in :mod:`.calibration`): calibration of
  the positive-class probability, not top-label confidence.
- Everything returned is JSON-able: plain ``float``/``int``/``None``/``dict``/``list``; values
  that are undefined (NaN) become ``None``.

Thresholds are chosen with :func:`choose_threshold` on **validation data only** (inner
validation split of each training fold), never on the test fold whose metrics are reported:
choosing it on the data being scored inflates every threshold-dependent metric.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

# The counting statistics live in the runtime (numpy only, so the demo shares them). They and
# the statistics of the sibling modules are re-exported (__all__), so that training, evaluation
# and the tests import every statistic from this one module.
from spinefx.runtime.stats import (
    NEGATIVE,
    POSITIVE,
    as_binary,
    confusion_counts,
    proportion,
    two_sided_z,
    wilson_ci,
)

from .calibration import (
    apply_temperature,
    brier,
    expected_calibration_error,
    fit_temperature,
    logit,
    reliability_bins,
    temperature_report,
)
from .delong import auc_delong, delong_components, delong_test
from .scores import jsonable, labels_and_probabilities
from .significance import (
    bonferroni,
    feature_test,
    fisher_exact_2x2,
    holm,
    mcnemar_exact,
    paired_mcnemar,
)

__all__ = [
    # defined here
    "CLASSES", "PROPORTIONS", "FOLD_METRICS", "call_metrics", "bootstrap_cis",
    "binary_metrics", "metric_values", "per_fold_summary", "choose_threshold",
    # spinefx.runtime.stats
    "NEGATIVE", "POSITIVE", "as_binary", "confusion_counts", "proportion", "two_sided_z",
    "wilson_ci",
    # .scores, .delong, .calibration, .significance
    "jsonable", "labels_and_probabilities",
    "auc_delong", "delong_components", "delong_test",
    "apply_temperature", "brier", "expected_calibration_error", "fit_temperature", "logit",
    "reliability_bins", "temperature_report",
    "bonferroni", "feature_test", "fisher_exact_2x2", "holm", "mcnemar_exact", "paired_mcnemar",
]

CLASSES = (NEGATIVE, POSITIVE)
PROPORTIONS = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
FOLD_METRICS = (*PROPORTIONS, "auc", "brier", "ece")


# ---------------------------------------------------------------------------------------------
# hard calls (proportions, counts: spinefx.runtime.stats)
# ---------------------------------------------------------------------------------------------
def call_metrics(y_true: Any, y_pred: Any, confidence: float = 0.95) -> dict:
    """Accuracy, sensitivity, specificity, PPV, NPV (Wilson CIs) of hard calls + the counts.

    Used for the model at a threshold and for human readers alike.
    """
    c = confusion_counts(y_true, y_pred)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    return {
        "counts": c,
        "accuracy": proportion(tp + tn, tp + fp + tn + fn, confidence),
        "sensitivity": proportion(tp, tp + fn, confidence),
        "specificity": proportion(tn, tn + fp, confidence),
        "ppv": proportion(tp, tp + fp, confidence),
        "npv": proportion(tn, tn + fn, confidence),
    }


# ---------------------------------------------------------------------------------------------
# bootstrap intervals (AUC, Brier score, ECE)
# ---------------------------------------------------------------------------------------------
def _auc_rank(y: np.ndarray, p: np.ndarray) -> float:
    m = int(y.sum())
    n = len(y) - m
    ranks = stats.rankdata(p)
    return float((ranks[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def bootstrap_cis(y_true: Any, prob: Any, n_boot: int = 2000, seed: int = 0,
                  confidence: float = 0.95, n_bins: int = 10) -> dict:
    """Percentile intervals for AUC, Brier score and ECE from a seeded stratified bootstrap."""
    y, p = labels_and_probabilities(y_true, prob)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    have_both = len(pos) > 0 and len(neg) > 0
    draws: dict[str, list[float]] = {"auc": [], "brier": [], "ece": []}
    for _ in range(int(n_boot)):
        idx = np.concatenate([rng.choice(pos, len(pos)) if len(pos) else pos,
                              rng.choice(neg, len(neg)) if len(neg) else neg])
        yb, pb = y[idx], p[idx]
        if have_both:
            draws["auc"].append(_auc_rank(yb, pb))
        draws["brier"].append(float(np.mean((pb - yb) ** 2)))
        draws["ece"].append(expected_calibration_error(yb, pb, n_bins))
    alpha = (1 - confidence) / 2
    out: dict[str, Any] = {}
    for key, values in draws.items():
        if values:
            lo, hi = np.quantile(values, [alpha, 1 - alpha])
            out[key] = {"ci_low": float(lo), "ci_high": float(hi)}
        else:
            out[key] = {"ci_low": None, "ci_high": None}
    out["n_boot"], out["seed"], out["stratified"] = int(n_boot), int(seed), True
    return out


# ---------------------------------------------------------------------------------------------
# the one-stop summary
# ---------------------------------------------------------------------------------------------
def _thresholds(threshold: Any, n: int) -> tuple[np.ndarray, float | None]:
    """Per-case thresholds and the scalar to report (None when they differ by case)."""
    t = np.asarray(threshold, dtype=np.float64)
    if t.ndim == 0:
        return np.full(n, float(t)), float(t)
    if t.shape != (n,):
        raise ValueError(f"per-case thresholds must have one value per case ({n}), "
                         f"got shape {t.shape}")
    return t, (float(t[0]) if n and np.all(t == t[0]) else None)


def binary_metrics(y_true: Any, prob: Any, threshold: Any = 0.5, *, confidence: float = 0.95,
                   n_bins: int = 10, bootstrap: int = 0, seed: int = 0) -> dict:
    """Every metric of a probabilistic classifier on one set of cases, JSON-able.

    Returns ``{"n", "n_malignant", "n_benign", "threshold", "positive_class", "counts",
    "accuracy", "sensitivity", "specificity", "ppv", "npv" (each a :func:`proportion` dict),
    "auc" ({"value", "ci_low", "ci_high", "se", "method": "delong"}), "brier" ({"value"}),
    "ece" ({"value", "n_bins", "binning": "equal-width"}), "confidence"}``. With
    ``bootstrap > 0`` the AUC dict gains ``"bootstrap": {"ci_low", "ci_high"}`` and Brier/ECE
    gain ``ci_low``/``ci_high`` from a seeded stratified bootstrap of that many replicates.

    ``threshold`` may also be an array with one threshold per case (e.g. each CV fold's own
    validation-chosen threshold); ``"threshold"`` in the output is then ``None`` unless they
    are all equal.
    """
    y, p = labels_and_probabilities(y_true, prob)
    thr, thr_value = _thresholds(threshold, len(y))
    pred = (p >= thr).astype(np.int64)
    out: dict[str, Any] = {
        "n": int(len(y)), "n_malignant": int(y.sum()), "n_benign": int(len(y) - y.sum()),
        "threshold": thr_value, "positive_class": POSITIVE, "confidence": confidence,
    }
    out.update(call_metrics(y, pred, confidence))
    out["auc"] = auc_delong(y, p, confidence)
    out["brier"] = {"value": brier(y, p) if len(y) else None}
    out["ece"] = {"value": expected_calibration_error(y, p, n_bins), "n_bins": int(n_bins),
                  "binning": "equal-width"}
    if bootstrap and len(y):
        boot = bootstrap_cis(y, p, bootstrap, seed, confidence, n_bins)
        if out["auc"]["value"] is not None:
            out["auc"]["bootstrap"] = {**boot["auc"], "n_boot": int(bootstrap), "seed": int(seed)}
        out["brier"].update(boot["brier"], method="bootstrap")
        out["ece"].update(boot["ece"], method="bootstrap")
    return jsonable(out)


def metric_values(metrics: Mapping) -> dict[str, float | None]:
    """Flatten :func:`binary_metrics` output to ``{name: value}`` for tables."""
    return {k: metrics[k]["value"] for k in FOLD_METRICS if k in metrics}


def per_fold_summary(folds: Any, y_true: Any, prob: Any, threshold: Any = 0.5,
                     n_bins: int = 10) -> dict:
    """Metrics per cross-validation fold and their mean +/- SD (ddof=1) across folds.

    ``folds``, ``y_true``, ``prob``: equal-length arrays (e.g. the columns of
    ``oof_predictions.csv``). Returns ``{"folds": [{"fold", "n", "n_malignant", <metric>: value}],
    "summary": {<metric>: {"mean", "sd", "n_folds"}}}``. A metric undefined in a fold (e.g.
    sensitivity or AUC in a fold without malignant cases) is ``None`` there and left out of
    that metric's mean; ``n_folds`` says how many folds contributed. ``threshold``: one value,
    or one per case (each fold's own threshold; reported per fold).
    """
    f = np.asarray(folds)
    y, p = labels_and_probabilities(y_true, prob)
    thr, thr_value = _thresholds(threshold, len(y))
    if f.shape != y.shape:
        raise ValueError("folds, labels and probabilities must have equal length")
    rows = []
    for fold in sorted(set(f.tolist()), key=lambda v: (str(type(v)), v)):
        sel = f == fold
        m = binary_metrics(y[sel], p[sel], thr[sel], n_bins=n_bins)
        rows.append({"fold": fold, "n": m["n"], "n_malignant": m["n_malignant"],
                     "threshold": m["threshold"], **metric_values(m)})
    summary = {}
    for key in FOLD_METRICS:
        vals = [r[key] for r in rows if r[key] is not None]
        summary[key] = {"mean": float(np.mean(vals)) if vals else None,
                        "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                        "n_folds": len(vals)}
    return jsonable({"threshold": thr_value, "folds": rows, "summary": summary})


# ---------------------------------------------------------------------------------------------
# operating threshold (chosen on validation data only)
# ---------------------------------------------------------------------------------------------
def choose_threshold(y_true: Any, prob: Any, rule: str = "youden",
                     min_sensitivity: float | None = None) -> float:
    """An operating threshold chosen on **validation** data (never the test fold).

    Rules: ``"youden"`` maximises sensitivity + specificity - 1 (= balanced accuracy);
    ``"accuracy"`` maximises accuracy; ``"sensitivity"`` takes the highest threshold whose
    sensitivity is at least ``min_sensitivity`` (default 0.9) — the most specific one that
    still finds that share of malignancies. Ties go to the higher threshold (more specific).
    The returned value is the midpoint between the chosen cut-off score and the next lower
    distinct score, so it classifies the validation cases exactly as the cut-off does but
    sits between them rather than on a case. Falls back to 0.5 when a class is missing.
    """
    y, p = labels_and_probabilities(y_true, prob)
    if len(y) == 0 or y.min() == y.max():
        return 0.5
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the "+inf" point (nobody positive)
    if rule == "youden":
        score = tpr - fpr
    elif rule == "accuracy":
        m = y.sum()
        score = (tpr * m + (1 - fpr) * (len(y) - m)) / len(y)
    elif rule == "sensitivity":
        target = 0.9 if min_sensitivity is None else float(min_sensitivity)
        score = np.where(tpr >= target - 1e-12, 1.0 - fpr, -np.inf)
    else:
        raise ValueError(f"unknown threshold rule {rule!r} (youden, accuracy, sensitivity)")
    best = int(np.argmax(score))  # thresholds decrease: the first maximum is the highest one
    cut = float(thr[best])
    lower = p[p < cut]
    return float((cut + lower.max()) / 2) if lower.size else cut
