"""AUC with a DeLong interval, and the DeLong test of two correlated AUCs.

The fast midrank algorithm of Sun & Xu (IEEE SPL 2014); the interval is the normal
approximation on the AUC scale, clipped to [0, 1], as pROC does.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from spinefx.runtime.stats import as_binary, two_sided_z

from .scores import labels_and_probabilities


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
    y, p = labels_and_probabilities(y_true, prob)
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
