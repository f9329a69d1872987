"""What a cohort's ground-truth features permit: the feature oracle, and simulated readers held
to it.

On a phantom cohort the 15 feature flags in the manifest are the truth the images were drawn
from, so a reader who saw every feature perfectly could do no better than a classifier on those
flags. The oracle here is a Bernoulli naive Bayes (Laplace smoothing) on the flags, scored out
of fold on patient-grouped folds; its ROC bounds what any reader can achieve on the cohort. A
simulated reader whose (sensitivity, specificity) lies above that ROC claims more than the
phantom permits: :func:`cap_readers` lowers its sensitivity onto the ROC at its specificity.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spinefx.runtime import Case
from spinefx.runtime.features import FEATURE_KEYS

from .folds import make_folds


def _naive_bayes_log_odds(x_train: np.ndarray, y_train: np.ndarray,
                          x_test: np.ndarray) -> np.ndarray:
    """Log odds of malignancy from binary features (Bernoulli naive Bayes, Laplace +1)."""
    out = np.full(len(x_test), np.log((y_train.sum() + 1) / (len(y_train) - y_train.sum() + 1)))
    for cls, sign in ((1, 1.0), (0, -1.0)):
        rows = x_train[y_train == cls]
        p = (rows.sum(axis=0) + 1) / (len(rows) + 2)
        out += sign * (x_test @ np.log(p) + (1 - x_test) @ np.log(1 - p))
    return out


def feature_oracle_roc(cases: Sequence[Case], folds: int = 10,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(FPR, TPR) of the oracle's out-of-fold ROC, from (0, 0) to (1, 1); None when a case
    lacks the 15 feature flags or a class has fewer than 2 patients."""
    labelled = [c for c in cases if c.label is not None]
    if not labelled or any(set(FEATURE_KEYS) - set(c.features) for c in labelled):
        return None
    y = np.array([c.target for c in labelled])
    groups = np.array([c.patient_id or c.case_id for c in labelled])
    per_class = min(len(set(groups[y == 1])), len(set(groups[y == 0])))
    if per_class < 2:
        return None
    x = np.array([[float(c.features[k]) for k in FEATURE_KEYS] for c in labelled])
    fold = make_folds(y, groups, min(folds, per_class), seed)
    score = np.empty(len(y))
    for k in np.unique(fold):
        test = fold == k
        score[test] = _naive_bayes_log_odds(x[~test], y[~test], x[test])
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]   # ties count as one threshold
    tpr = np.r_[0.0, np.cumsum(t)[last] / max(t.sum(), 1)]
    fpr = np.r_[0.0, np.cumsum(1 - t)[last] / max((1 - t).sum(), 1)]
    return fpr, tpr


def cap_readers(readers: Mapping[str, tuple[float, float]],
                roc: tuple[np.ndarray, np.ndarray]
                ) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Each reader's (sensitivity, specificity) with the sensitivity lowered onto the oracle's
    ROC at the reader's specificity where it lies above it (mixing two operating points
    reaches any point between them); plus one note per reader changed."""
    fpr, tpr = roc
    out, notes = {}, []
    for name, (sens, spec) in readers.items():
        permitted = float(np.interp(1.0 - float(spec), fpr, tpr))
        capped = min(float(sens), np.floor(permitted * 1000) / 1000)
        out[name] = (capped, float(spec))
        if capped < float(sens):
            notes.append(f"{name}: sensitivity {float(sens):.3f} -> {capped:.3f} (at specificity "
                         f"{float(spec):.3f} a reader who sees every feature perfectly reaches "
                         f"{permitted:.3f} on this cohort)")
    return out, notes
