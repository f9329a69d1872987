"""spinefx.train: the paper's 6-channel ResNet50, patient-level tenfold CV, reports, and the
reader-study statistics (PyTorch; imports preprocessing from ``spinefx.runtime``, never a copy).

Names load on first use (module ``__getattr__``), so ``spinefx --help`` and the argparse hooks in
``spinefx.train.cli`` never import torch, scikit-learn or matplotlib.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "model": ("SpineFxNet", "load_model", "load_pretrained", "PretrainedError", "CLASSES"),
    "cv": ("train_cv", "TrainSettings", "TrainingError", "make_folds", "inner_split",
           "resolve_device"),
    "data": ("Augment", "CaseDataset", "preprocess_cases", "cache_key"),
    "metrics": ("binary_metrics", "per_fold_summary", "wilson_ci", "auc_delong",
                "choose_threshold", "fit_temperature", "apply_temperature", "mcnemar_exact",
                "fisher_exact_2x2", "expected_calibration_error"),
    "readers": ("simulate_readers", "read_readers_csv", "write_readers_csv", "DEFAULT_READERS"),
    "evaluation": ("evaluate",),
    "_torchvision_compat": ("import_torchvision",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
