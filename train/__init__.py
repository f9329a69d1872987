"""spinefx.train: the paper's 6-channel ResNet50, patient-level tenfold CV, reports, and the
reader-study statistics (PyTorch; imports preprocessing from ``spinefx.runtime``, never a copy).

Importing this package loads torch; the ``spinefx`` command line imports it only when a
training command runs (:mod:`spinefx.cli`).
"""
from __future__ import annotations

from ._torchvision_compat import import_torchvision
from .cv import TrainingError, TrainSettings, inner_split, make_folds, resolve_device, train_cv
from .data import Augment, CaseDataset, cache_key, preprocess_cases
from .evaluation import evaluate
from .metrics import (
    apply_temperature,
    auc_delong,
    binary_metrics,
    choose_threshold,
    expected_calibration_error,
    fisher_exact_2x2,
    fit_temperature,
    mcnemar_exact,
    per_fold_summary,
    wilson_ci,
)
from .model import CLASSES, PretrainedError, SpineFxNet, load_model, load_pretrained
from .readers import DEFAULT_READERS, read_readers_csv, simulate_readers, write_readers_csv

__all__ = [
    "Augment", "CLASSES", "CaseDataset", "DEFAULT_READERS", "PretrainedError", "SpineFxNet",
    "TrainSettings", "TrainingError", "apply_temperature", "auc_delong", "binary_metrics",
    "cache_key", "choose_threshold", "evaluate", "expected_calibration_error",
    "fisher_exact_2x2", "fit_temperature", "import_torchvision", "inner_split", "load_model",
    "load_pretrained", "make_folds", "mcnemar_exact", "per_fold_summary", "preprocess_cases",
    "read_readers_csv", "resolve_device", "simulate_readers", "train_cv", "wilson_ci",
    "write_readers_csv",
]
