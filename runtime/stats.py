"""Counting statistics of binary calls: labels, confusion counts, proportions with Wilson CIs.

numpy and the standard library only (no torch, scipy or scikit-learn), so the runtime and the
demo count and report exactly as training and evaluation do. The positive class is
**malignant** (``1``); benign is ``0``. Labels may be 0/1 numbers, booleans or the strings
``"benign"`` / ``"malignant"``.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

POSITIVE = "malignant"
NEGATIVE = "benign"


def as_binary(labels: Any) -> np.ndarray:
    """0/1 int array from 0/1 numbers, booleans or 'benign'/'malignant' strings."""
    arr = np.asarray(labels)
    if arr.dtype.kind in "US" or arr.dtype == object:
        out = np.empty(arr.shape, dtype=np.int64)
        for i, v in enumerate(arr.ravel()):
            s = str(v).strip().lower()
            if s in (POSITIVE, "1", "true"):
                out.flat[i] = 1
            elif s in (NEGATIVE, "0", "false"):
                out.flat[i] = 0
            else:
                raise ValueError(f"label must be benign/malignant or 0/1, got {v!r}")
        return out
    if arr.dtype.kind == "f" and not np.all(np.isin(arr, (0.0, 1.0))):
        raise ValueError("numeric labels must be 0 or 1")
    out = arr.astype(np.int64)
    if out.size and not np.all((out == 0) | (out == 1)):
        raise ValueError("numeric labels must be 0 or 1")
    return out


def two_sided_z(confidence: float) -> float:
    """The standard normal quantile z with P(-z <= Z <= z) = ``confidence`` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes out of n (``(None, None)`` when n == 0).

    centre = (p + z^2/2n) / (1 + z^2/n);  half-width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None, None
    z = two_sided_z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(k: int, n: int, confidence: float = 0.95) -> dict:
    """``{"value", "ci_low", "ci_high", "k", "n", "method": "wilson"}``."""
    lo, hi = wilson_ci(int(k), int(n), confidence)
    return {"value": (k / n) if n else None, "ci_low": lo, "ci_high": hi,
            "k": int(k), "n": int(n), "method": "wilson"}


def confusion_counts(y_true: Any, y_pred: Any) -> dict:
    """``{"tp", "fp", "tn", "fn"}`` of calls ``y_pred`` against truth ``y_true`` (malignant is
    the positive class)."""
    y, pred = as_binary(y_true), as_binary(y_pred)
    if y.shape != pred.shape:
        raise ValueError(f"truth and calls must have equal shapes, got {y.shape} and "
                         f"{pred.shape}")
    return {"tp": int(np.sum((y == 1) & (pred == 1))), "fp": int(np.sum((y == 0) & (pred == 1))),
            "tn": int(np.sum((y == 0) & (pred == 0))), "fn": int(np.sum((y == 1) & (pred == 0)))}
