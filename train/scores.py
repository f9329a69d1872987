"""What every statistic of :mod:`spinefx.train.metrics` shares: checked inputs, JSON-able output.

A statistic of a probabilistic classifier takes labels (0/1 or ``"benign"``/``"malignant"``,
:func:`spinefx.runtime.stats.as_binary`) and predicted malignancy probabilities;
:func:`labels_and_probabilities` turns both into arrays and refuses what no statistic can score
(unequal lengths, probabilities outside [0, 1]). Results are returned through :func:`jsonable`,
so they can be written to ``metrics.json`` as they are.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spinefx.runtime.stats import as_binary


def as_probabilities(prob: Any) -> np.ndarray:
    """``prob`` as float64, checked to be finite and within [0, 1]."""
    p = np.asarray(prob, dtype=np.float64)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return p


def labels_and_probabilities(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 labels, probabilities): 1-D arrays of equal length, or ValueError."""
    y, p = as_binary(y_true), as_probabilities(prob)
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
