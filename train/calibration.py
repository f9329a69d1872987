"""Calibration of the malignancy probability: reliability bins, ECE, Brier score, and
temperature scaling (fitted on validation data only).

**Expected calibration error** uses ``n_bins`` (default 10) **equal-width** bins of the predicted
malignancy probability over [0, 1]; bin ``i`` holds ``i/n <= p < (i+1)/n`` (the last bin
includes 1.0). ECE = sum over non-empty bins of ``(n_bin / N) * |observed malignant rate - mean
predicted probability|``. This is calibration of the positive-class probability (a reliability
diagram's gaps), not top-label confidence.

**Temperature scaling** divides the single malignancy logit by T > 0 before the sigmoid. T is
fitted on the validation split and applied to the test fold; a positive T never changes the
ranking, so AUC is unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import optimize
from sklearn.metrics import brier_score_loss

from spinefx.runtime.stats import as_binary

from .scores import jsonable, labels_and_probabilities


# ---------------------------------------------------------------------------------------------
# reliability, ECE, Brier
# ---------------------------------------------------------------------------------------------
def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def reliability_bins(y_true: Any, prob: Any, n_bins: int = 10) -> list[dict]:
    """Per equal-width bin: edges, count, mean predicted probability, observed malignant rate."""
    y, p = labels_and_probabilities(y_true, prob)
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
    y, p = labels_and_probabilities(y_true, prob)
    if len(y) == 0:
        return 0.0
    idx = _bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    nz = counts > 0
    return float(np.sum(np.abs(sum_y[nz] - sum_p[nz])) / len(y))


def brier(y_true: Any, prob: Any) -> float:
    y, p = labels_and_probabilities(y_true, prob)
    return float(brier_score_loss(y, p, pos_label=1)) if len(y) else float("nan")


# ---------------------------------------------------------------------------------------------
# temperature scaling
# ---------------------------------------------------------------------------------------------
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
