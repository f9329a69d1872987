"""What a training run folder records, as :func:`~spinefx.export.exporter.export_model` reads
it for ``model.json``: its JSON files, the manifest it was trained on, its operating threshold,
its cross-validated metrics and a description of its training data.

Every reader is defensive: a missing or unreadable record is ``{}`` (with a warning when
unreadable), a missing threshold is 0.5 (with a warning).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from spinefx.runtime.errors import ConfigError, SpineFXWarning
from spinefx.runtime.files import read_json
from spinefx.runtime.provenance import is_synthetic_record


def read_record(path: Path) -> dict:
    """A JSON object (``runtime.files.read_json``), or {} when the file is missing, or is
    unreadable (with a warning naming the caller of the caller: ``export_model``'s, for the
    run's config.json and metrics.json) or not an object."""
    try:
        data = read_json(path, required=False)
    except ConfigError as exc:
        warnings.warn(f"{exc}; ignored", SpineFXWarning, stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


def training_manifest(run_dir: Path, config: dict, metrics: dict) -> Path | None:
    """The manifest the run was trained on, as recorded by the trainer (if it still exists)."""
    candidates = [(config.get("training") or {}).get("manifest"), metrics.get("manifest"),
                  read_record(run_dir / "run.json").get("manifest")]
    for text in candidates:
        if isinstance(text, str) and text:
            path = Path(text)
            if not path.is_absolute():
                path = run_dir / path
            if path.is_file():
                return path
    return None


def operating_threshold(config: dict, metrics: dict) -> tuple[float, str]:
    """(threshold, where it comes from); the warning of a run that records none names the
    caller of the caller (``export_model``'s)."""
    for raw, source in ((metrics.get("threshold"), "metrics.json threshold"),
                        ((config.get("training") or {}).get("threshold"),
                         "config.json training.threshold")):
        if raw is None:  # not recorded there
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if 0.0 <= value <= 1.0:
            return value, source
    warnings.warn("the run records no operating threshold: using 0.5", SpineFXWarning,
                  stacklevel=3)
    return 0.5, "default 0.5 (the run recorded none)"


def metrics_summary(metrics: dict) -> dict:
    """The cross-validated metrics of the training report (whatever of them the run has)."""
    keys = ("n_cases", "n_malignant", "folds", "positive_class", "threshold_rule",
            "pooled", "pooled_at_operating_threshold", "per_fold_summary", "calibration",
            "mode", "n_train", "n_val", "best_epoch", "validation")
    out = {k: metrics[k] for k in keys if k in metrics}
    if out and metrics.get("folds") == 1:  # `spinefx train --folds 1`: no cross-validation
        out["source"] = ("RUN/metrics.json (the validation split of one training run: it chose "
                         "the epoch and the threshold, so it is not a test result)")
        out["synthetic"] = is_synthetic_record(metrics)
    elif out:
        out["source"] = "RUN/metrics.json (pooled out-of-fold predictions, 95% CIs)"
        out["synthetic"] = is_synthetic_record(metrics)
    return out


def training_data(manifest: Path | None, metrics: dict, config: dict) -> dict:
    """``model.json["training_data"]``: the cohort (``cohort.json`` beside the manifest) and the
    run's counts, with a one-line description."""
    cohort = read_record(manifest.parent / "cohort.json") if manifest else {}
    synthetic = is_synthetic_record(cohort) or is_synthetic_record(metrics)
    n_cases = metrics.get("n_cases", cohort.get("n_cases"))
    n_mal = metrics.get("n_malignant", cohort.get("n_malignant"))
    seed = cohort.get("seed") if cohort else None
    counts = f"{n_cases} cases" if n_cases is not None else "unknown number of cases"
    if n_mal is not None:
        counts += f" ({n_mal} malignant)"
    if synthetic:
        description = f"synthetic phantom cohort, {counts}" + (
            f", seed {seed}" if seed is not None else "")
    else:
        description = f"manifest {manifest.name if manifest else '(not recorded)'}, {counts}"
    data = {"description": description, "synthetic": synthetic, "n_cases": n_cases,
            "n_malignant": n_mal, "seed": seed,
            "training_seed": (config.get("training") or {}).get("seed")}
    if cohort:
        data["generator"] = {k: cohort[k] for k in ("generator", "generator_version",
                                                     "difficulty") if k in cohort}
    return data
