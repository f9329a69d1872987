"""No hidden class signal: at ``difficulty=2`` the 15 features carry no label information, so
nothing else a model could see may carry it either.

A simple model (cross-validated logistic regression) on simple image statistics in and around
the manifest box on the lesion slice of T1 and T2, plus the header fields, must score an AUC
within chance bounds (3 null standard deviations of the AUC). The positive controls show the
pipeline is not blind, so a leak would fail the test rather than hide: the same pipeline on the
same cases finds a painted feature flag (``diffuse_low_t1``), and at ``difficulty=0`` (features
nearly deterministic) it finds the label.

Cost: the cases are rendered in memory once per module (cached) with ``n_slices=5`` (the
statistics use the lesion slice only), ~0.35 s each on one core with the v2 renderer:
200 + 40 cases, ~85 s for the module on an idle core.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spinefx.phantom import PhantomCase, iter_cases
from spinefx.phantom.contact_sheet import variant_names
from spinefx.phantom.spine import LESION_LEVELS

N_NULL, N_CONTROL = 200, 40  # cases (half malignant) at difficulty 2 and 0
RING = 12                      # px of surrounding tissue around the box


def _region_stats(img: np.ndarray, box: tuple[int, int, int, int]) -> list[float]:
    """Mean, spread and percentiles inside the box, in the ring around it and on the slice."""
    x0, y0, x1, y1 = box
    inside = img[y0:y1, x0:x1].astype(np.float64)
    around = np.zeros(img.shape, dtype=bool)
    around[max(0, y0 - RING):y1 + RING, max(0, x0 - RING):x1 + RING] = True
    around[y0:y1, x0:x1] = False
    ring = img[around].astype(np.float64)
    whole = img.astype(np.float64)
    eps = 1e-6
    p10, p50, p90 = np.percentile(inside, [10, 50, 90])
    return [inside.mean(), inside.std(), p10, p50, p90, ring.mean(), ring.std(), whole.mean(),
            whole.std(), inside.mean() / (whole.mean() + eps), inside.mean() / (ring.mean() + eps),
            inside.std() / (ring.std() + eps), (p90 - p10) / (p50 + eps)]


def _features(case: PhantomCase) -> tuple[list[float], list[str]]:
    """Image statistics of T1 and T2 plus header fields; the variant names separately."""
    box = case.box
    scale = case.pixel_spacing[0] / case.t2_pixel_spacing[0]   # T1 px -> T2 px
    box_t2 = (int(box[0] * scale), int(box[1] * scale), int(np.ceil(box[2] * scale)),
              int(np.ceil(box[3] * scale)))
    stats = (_region_stats(case.t1[case.slice], box)
             + _region_stats(case.t2[case.slice], box_t2))
    header = [case.pixel_spacing[0], case.t2_pixel_spacing[0], case.slice_thickness,
              case.spacing_between_slices, case.n_slices, case.t1.shape[1], case.t2.shape[1],
              list(LESION_LEVELS).index(case.level), case.slice, box[2] - box[0],
              box[3] - box[1], float(case.t2_same_grid)]
    return stats + header, variant_names(case)


@lru_cache(maxsize=None)
def _design(difficulty: float, n_cases: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, the diffuse_low_t1 flag) of a balanced in-memory cohort; rendered once per
    module run."""
    rows, names, labels, flags = [], [], [], []
    for row, case in iter_cases(seed, n_cases, n_cases // 2, difficulty=difficulty, workers=1,
                                progress=False, n_slices=5):
        values, variants = _features(case)
        rows.append(values)
        names.append(variants)
        labels.append(int(row["label"] == "malignant"))
        flags.append(int(row["diffuse_low_t1"]))
    vocabulary = sorted({v for case_names in names for v in case_names})
    one_hot = [[float(v in case_names) for v in vocabulary] for case_names in names]
    x = np.hstack([np.asarray(rows), np.asarray(one_hot).reshape(n_cases, -1)])
    return x, np.asarray(labels), np.asarray(flags)


def _cv_auc(x: np.ndarray, y: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    p = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def _null_sd(y: np.ndarray) -> float:
    """SD of the AUC of an uninformative score (Hanley & McNeil under H0)."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float(np.sqrt((n0 + n1 + 1) / (12 * n0 * n1)))


def test_no_class_signal_outside_the_features_at_difficulty_2() -> None:
    x, y, _ = _design(2.0, N_NULL, 11)
    auc = _cv_auc(x, y)
    bound = 3 * _null_sd(y)
    assert abs(auc - 0.5) < bound, (
        f"image statistics + header fields predict the label at difficulty 2: AUC {auc:.3f} "
        f"(chance 0.5 +/- {bound:.3f}); something outside the feature table sees the label")


def test_positive_control_the_same_pipeline_sees_a_painted_flag_in_the_same_cases() -> None:
    x, _, flag = _design(2.0, N_NULL, 11)
    auc = _cv_auc(x, flag)
    assert auc > 0.5 + 3 * _null_sd(flag), f"the pipeline misses diffuse_low_t1: AUC {auc:.3f}"


def test_positive_control_the_same_pipeline_finds_the_label_at_difficulty_0() -> None:
    x, y, _ = _design(0.0, N_CONTROL, 12)
    auc = _cv_auc(x, y)
    assert auc > 0.5 + 3 * _null_sd(y), f"the leak test's pipeline is blind: AUC {auc:.3f}"
