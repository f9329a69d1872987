"""Out-of-fold predictions: every case scored once, by the fold model that never saw it.

The file ``oof_predictions.csv`` (written by :func:`spinefx.train.cv.train_cv`, read by
:func:`spinefx.train.evaluation.evaluate` and the report pictures of :mod:`.plots`) has the
columns ``case_id,fold,label,probability`` (label benign/malignant or 0/1; probability = the
predicted probability of malignancy) and, from training, ``threshold``: the threshold the case's
fold chose on its validation split. Extra columns are ignored.

numpy and the standard library only: evaluation imports this without loading the training stack.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinefx.runtime.errors import ManifestError

OOF_COLUMNS = ("case_id", "fold", "label", "probability")
#: what training writes: each case also carries its own fold's threshold
TRAINING_OOF_COLUMNS = (*OOF_COLUMNS, "threshold")


@dataclass
class OOFPredictions:
    """Out-of-fold predictions as arrays (``y``: 1 = malignant)."""
    case_id: list[str]
    fold: list[Any]
    y: np.ndarray
    prob: np.ndarray
    path: Path | None = None
    threshold: np.ndarray | None = None   # optional per-case (per-fold) thresholds

    def __len__(self) -> int:
        return len(self.case_id)

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.case_id)}


def _fold_value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _label_value(text: Any) -> int | None:
    s = str(text).strip().lower()
    return {"malignant": 1, "1": 1, "benign": 0, "0": 0}.get(s)


def _unit_interval(row: Mapping, column: str, line: int, path: Path) -> float:
    """``row[column]`` as a number within [0, 1], or a ManifestError naming file and line."""
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ManifestError(f"line {line}: {column} must be a number within [0, 1], got "
                            f"{row[column]!r}", path)
    return value


def read_oof(path: str | PathLike) -> OOFPredictions:
    """Parse ``oof_predictions.csv``; problems raise ManifestError naming file and line."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = list(reader)
    except FileNotFoundError:
        raise ManifestError("no such out-of-fold predictions file", path) from None
    except (UnicodeDecodeError, csv.Error, IsADirectoryError) as exc:
        raise ManifestError(f"not a readable CSV file ({exc})", path) from None
    missing = [c for c in OOF_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"missing column(s) {', '.join(missing)} (need "
                            f"{','.join(OOF_COLUMNS)})", path)
    if not rows:
        raise ManifestError("no predictions in the file", path)
    ids, folds, ys, ps, ts = [], [], [], [], []
    seen: dict[str, int] = {}  # case_id -> the line it first appeared on
    has_thr = "threshold" in columns
    for n, row in enumerate(rows, start=2):
        case_id = (row["case_id"] or "").strip()
        if not case_id:
            raise ManifestError(f"line {n}: empty case_id", path)
        if case_id in seen:
            raise ManifestError(f"line {n}: case_id {case_id!r} repeats line {seen[case_id]}",
                                path)
        seen[case_id] = n
        y = _label_value(row["label"])
        if y is None:
            raise ManifestError(f"line {n}: label must be benign or malignant, got "
                                f"{row['label']!r}", path)
        p = _unit_interval(row, "probability", n, path)
        if has_thr:
            ts.append(_unit_interval(row, "threshold", n, path))
        ids.append(case_id)
        folds.append(_fold_value((row["fold"] or "").strip()))
        ys.append(y)
        ps.append(p)
    return OOFPredictions(ids, folds, np.asarray(ys, dtype=np.int64),
                          np.asarray(ps, dtype=np.float64), path,
                          np.asarray(ts, dtype=np.float64) if has_thr else None)


def as_oof(obj: Any) -> OOFPredictions:
    """OOFPredictions from a CSV path, an OOFPredictions, a column mapping / DataFrame or rows."""
    if isinstance(obj, OOFPredictions):
        return obj
    if isinstance(obj, (str, PathLike)):
        return read_oof(obj)
    if isinstance(obj, Mapping) or hasattr(obj, "columns"):
        cols = {k: list(obj[k]) for k in ("case_id", "fold", "label", "probability")
                if (k in obj.columns if hasattr(obj, "columns") else k in obj)}
    else:
        rows = list(obj)
        cols = {k: [r[k] for r in rows] for k in ("case_id", "fold", "label", "probability")
                if rows and k in rows[0]}
    if "label" not in cols or "probability" not in cols:
        raise ValueError("out-of-fold predictions need 'label' and 'probability' columns")
    n = len(cols["label"])
    ys = [_label_value(v) for v in cols["label"]]
    if any(v is None for v in ys):
        raise ValueError("labels must be benign/malignant or 0/1")
    return OOFPredictions(
        case_id=[str(c) for c in cols.get("case_id", [f"case_{i}" for i in range(n)])],
        fold=list(cols.get("fold", [0] * n)), y=np.asarray(ys, dtype=np.int64),
        prob=np.asarray(cols["probability"], dtype=np.float64))


def has_threshold_column(oof_csv: str | PathLike) -> bool:
    """Does the CSV's header name a ``threshold`` column (each fold's own threshold)?"""
    try:
        with open(oof_csv, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except OSError:
        return False
    return "threshold" in [h.strip() for h in header]
