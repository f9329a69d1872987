"""Diagnostic-accuracy metrics with confidence intervals, calibration, and the paper's tests.

Conventions used everywhere in this module:

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
  predicted malignancy probability over [0, 1]; bin ``i`` holds ``i/n <= p < (i+1)/n`` (the last
  bin includes 1.0). ECE = sum over non-empty bins of ``(n_bin / N) * |observed malignant rate
  - mean predicted probability|``. This is calibration of the positive-class probability (a
  reliability diagram's gaps), not top-label confidence.
- Everything returned is JSON-able: plain ``float``/``int``/``None``/``dict``/``list``; values
  that are undefined (NaN) become ``None``.

Thresholds are chosen with :func:`choose_threshold` on **validation data only** (inner
validation split of each training fold), never on the test fold whose metrics are reported:
choosing it on the data being scored inflates every threshold-dependent metric.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats
from sklearn.metrics import brier_score_loss, roc_curve

# The counting statistics live in the runtime (numpy only, so the demo shares them); they are
# re-exported here so that training and evaluation import every statistic from one module.
from spinefx.runtime.stats import (
    NEGATIVE,
    POSITIVE,
    as_binary,
    confusion_counts,
    proportion,
    two_sided_z,
    wilson_ci,  # noqa: F401 (re-exported: spinefx.train.wilson_ci)
)

CLASSES = (NEGATIVE, POSITIVE)
PROPORTIONS = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
FOLD_METRICS = (*PROPORTIONS, "auc", "brier", "ece")


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _probabilities(prob: Any) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float64)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return p


def _check(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = as_binary(y_true), _probabilities(prob)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"labels and probabilities must be 1-D of equal length, got "
                         f"{y.shape} and {p.shape}")
    return y, p


def jsonable(obj: Any) -> Any:
    """Plain Python types for json.dump: numpy scalars -> int/float, NaN/inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


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
# AUC: DeLong (fast, midrank) and bootstrap
# ---------------------------------------------------------------------------------------------
def _midrank(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span (midranks)."""
    order = np.argsort(x, kind="mergesort")
    z = x[order]
    n = len(x)
    ranks = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and z[j] == z[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1  # mean of 1-based ranks i+1 .. j
        i = j
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks
    return out


def delong_components(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for one or more score vectors on the same cases.

    ``scores``: shape (n,) or (k, n). Returns ``(aucs (k,), cov (k, k))``. Fast algorithm of
    Sun & Xu (IEEE SPL 2014): with m malignant and n benign cases, midranks among positives
    (tx), among negatives (ty) and overall (tz) give the structural components
    ``V10_i = (tz_i - tx_i) / n`` (positives) and ``V01_j = 1 - (tz_j - ty_j) / m``
    (negatives); ``AUC = mean(V10)``; ``Var = S10/m + S01/n``.
    """
    y = as_binary(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.shape[0]:
        raise ValueError("scores and labels differ in length")
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 1 or n < 1:
        raise ValueError("DeLong needs at least one malignant and one benign case")
    k = s.shape[0]
    tx = np.vstack([_midrank(pos[r]) for r in range(k)])
    ty = np.vstack([_midrank(neg[r]) for r in range(k)])
    tz = np.vstack([_midrank(np.concatenate([pos[r], neg[r]])) for r in range(k)])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((k, k))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((k, k))
    return aucs, s10 / m + s01 / n


def auc_delong(y_true: Any, prob: Any, confidence: float = 0.95) -> dict:
    """``{"value", "ci_low", "ci_high", "se", "method": "delong"}`` (None when one class only)."""
    y, p = _check(y_true, prob)
    if y.min(initial=1) == y.max(initial=0):
        return {"value": None, "ci_low": None, "ci_high": None, "se": None, "method": "delong"}
    aucs, cov = delong_components(y, p)
    auc, se = float(aucs[0]), math.sqrt(max(float(cov[0, 0]), 0.0))
    z = two_sided_z(confidence)
    return {"value": auc, "ci_low": max(0.0, auc - z * se), "ci_high": min(1.0, auc + z * se),
            "se": se, "method": "delong"}


def delong_test(y_true: Any, prob_a: Any, prob_b: Any) -> dict:
    """Two-sided DeLong test for two correlated AUCs (two models scored on the same cases)."""
    aucs, cov = delong_components(y_true, np.vstack([prob_a, prob_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(diff) / math.sqrt(var)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "p": p}


def _auc_rank(y: np.ndarray, p: np.ndarray) -> float:
    m = int(y.sum())
    n = len(y) - m
    ranks = stats.rankdata(p)
    return float((ranks[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def bootstrap_cis(y_true: Any, prob: Any, n_boot: int = 2000, seed: int = 0,
                  confidence: float = 0.95, n_bins: int = 10) -> dict:
    """Percentile intervals for AUC, Brier score and ECE from a seeded stratified bootstrap."""
    y, p = _check(y_true, prob)
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
# calibration
# ---------------------------------------------------------------------------------------------
def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def reliability_bins(y_true: Any, prob: Any, n_bins: int = 10) -> list[dict]:
    """Per equal-width bin: edges, count, mean predicted probability, observed malignant rate."""
    y, p = _check(y_true, prob)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    idx = _bin_index(p, n_bins)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        rows.append({"bin_low": b / n_bins, "bin_high": (b + 1) / n_bins, "n": n,
                     "mean_probability": float(p[sel].mean()) if n else None,
                     "observed_rate": float(y[sel].mean()) if n else None})
    return rows


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = 10) -> float:
    """ECE over equal-width bins (see the module docstring); 0 for an empty input."""
    y, p = _check(y_true, prob)
    if len(y) == 0:
        return 0.0
    idx = _bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    nz = counts > 0
    return float(np.sum(np.abs(sum_y[nz] - sum_p[nz])) / len(y))


def brier(y_true: Any, prob: Any) -> float:
    y, p = _check(y_true, prob)
    return float(brier_score_loss(y, p, pos_label=1)) if len(y) else float("nan")


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
    y, p = _check(y_true, prob)
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
    y, p = _check(y_true, prob)
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
# thresholds and temperature scaling (fit on validation data only)
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
    y, p = _check(y_true, prob)
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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    # mean binary cross-entropy, numerically stable: log(1 + e^z) - y z
    return float(np.mean(np.logaddexp(0.0, logits) - y * logits))


def logit(prob: Any, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def fit_temperature(logits: Any, y_true: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature T > 0 minimising the NLL of ``sigmoid(logit / T)`` on validation data.

    ``logits``: the model's single malignancy logit per case (for a two-logit head pass
    ``logit_malignant - logit_benign``). T > 1 softens over-confident predictions. Fit on the
    validation split, apply to the test fold with :func:`apply_temperature`; scaling by a
    positive T never changes the ranking, so AUC is unchanged.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = as_binary(y_true).astype(np.float64)
    if z.shape != y.shape or z.ndim != 1 or len(z) == 0:
        raise ValueError("logits and labels must be non-empty 1-D arrays of equal length")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = optimize.minimize_scalar(lambda lt: _nll(z / np.exp(lt), y), bounds=(lo, hi),
                                   method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated malignancy probabilities ``sigmoid(logit / T)``."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return _sigmoid(np.asarray(logits, dtype=np.float64) / float(temperature))


def temperature_report(logits: Any, y_true: Any, temperature: float, n_bins: int = 10) -> dict:
    """NLL, Brier score and ECE before (T = 1) and after temperature scaling, on given cases."""
    z = np.asarray(logits, dtype=np.float64)
    y = as_binary(y_true)
    out: dict[str, Any] = {"temperature": float(temperature), "n": int(len(y))}
    for name, t in (("before", 1.0), ("after", float(temperature))):
        p = apply_temperature(z, t)
        out[name] = {"nll": _nll(z / t, y), "brier": brier(y, p),
                     "ece": expected_calibration_error(y, p, n_bins)}
    return jsonable(out)


# ---------------------------------------------------------------------------------------------
# paired and per-feature tests (the paper's statistics)
# ---------------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c.

    Under H0 the b + c discordant pairs split Binomial(b + c, 1/2);
    p = min(1, 2 * P(X <= min(b, c))) — equal to ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``.
    No discordant pairs: p = 1.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), n, 0.5)))


def paired_mcnemar(y_true: Any, pred_a: Any, pred_b: Any) -> dict:
    """McNemar on the same cases: ``b`` = A right & B wrong, ``c`` = A wrong & B right.

    Returns ``{"n", "both_correct", "both_wrong", "b", "c", "p", "accuracy_a", "accuracy_b"}``.
    """
    y, a, bb = as_binary(y_true), as_binary(pred_a), as_binary(pred_b)
    if not (y.shape == a.shape == bb.shape):
        raise ValueError("truth and both sets of calls must have equal length")
    ra, rb = a == y, bb == y
    b = int(np.sum(ra & ~rb))
    c = int(np.sum(~ra & rb))
    n = int(len(y))
    return {"n": n, "both_correct": int(np.sum(ra & rb)), "both_wrong": int(np.sum(~ra & ~rb)),
            "b": b, "c": c, "p": mcnemar_exact(b, c),
            "accuracy_a": float(ra.mean()) if n else None,
            "accuracy_b": float(rb.mean()) if n else None}


def fisher_exact_2x2(a: int, b: int, c: int, d: int) -> dict:
    """Two-sided Fisher's exact test on ``[[a, b], [c, d]]`` -> ``{"odds_ratio", "p"}``."""
    res = stats.fisher_exact([[int(a), int(b)], [int(c), int(d)]], alternative="two-sided")
    return jsonable({"odds_ratio": float(res.statistic), "p": float(res.pvalue)})


def feature_test(present: Any, y_true: Any) -> dict:
    """A binary feature's frequency in each class and Fisher's exact p.

    Table ``[[malignant with, malignant without], [benign with, benign without]]``;
    the odds ratio is > 1 when the feature is commoner in malignant cases (inf / 0 -> None
    when a cell is empty).
    """
    f, y = as_binary(present), as_binary(y_true)
    mal_with = int(np.sum((f == 1) & (y == 1)))
    mal_n = int(np.sum(y == 1))
    ben_with = int(np.sum((f == 1) & (y == 0)))
    ben_n = int(np.sum(y == 0))
    fisher = fisher_exact_2x2(mal_with, mal_n - mal_with, ben_with, ben_n - ben_with)
    return {"malignant": proportion(mal_with, mal_n), "benign": proportion(ben_with, ben_n),
            "odds_ratio": fisher["odds_ratio"], "p": fisher["p"]}


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    m = len(pvalues)
    return [min(1.0, float(p) * m) for p in pvalues]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as the input)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()
