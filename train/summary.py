"""A fold's result record (``folds/<k>/metrics.json``) and the run's pooled numbers
(``metrics.json``) from its folds' results.

Every case is predicted once, by the fold model that did not see it. The pooled metrics call
each case at its own fold's threshold (chosen on that fold's validation split, never on test
data); ``pooled_at_operating_threshold`` uses the final model's operating point (the median of
the fold thresholds) instead. Per-fold metrics, their mean and SD, and temperature scaling
(fitted per fold on its validation logits, applied to its test cases) complete the record.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spinefx.runtime.provenance import manifest_provenance

from .loop import sigmoid
from .metrics import (
    FOLD_METRICS,
    binary_metrics,
    call_metrics,
    choose_threshold,
    fit_temperature,
    metric_values,
    temperature_report,
)

Indices = tuple[np.ndarray, np.ndarray, np.ndarray]


def fold_result(k: int, case_ids: Sequence[str], labels: Sequence[str], state: dict,
                threshold_rule: str, split: Indices,
                logits: tuple[np.ndarray, np.ndarray]) -> dict:
    """Fold ``k``'s record: its threshold (chosen on the validation split, never the test
    fold), test and validation predictions, and metrics. ``split``: (train, validation, test)
    indices into ``case_ids``/``labels``; ``logits``: the kept model's on (validation, test);
    ``state``: the final training state (kept epoch, epochs run, selection rule)."""
    train_idx, val_idx, test_idx = split
    zv, zt = logits
    pv, pt = sigmoid(zv), sigmoid(zt)
    y = np.array([1 if label == "malignant" else 0 for label in labels])
    threshold = choose_threshold(y[val_idx], pv, rule=threshold_rule)
    preds = [{"case_id": case_ids[i], "fold": k, "label": labels[i], "probability": float(p),
              "threshold": threshold, "logit": float(z)} for i, p, z in zip(test_idx, pt, zt)]
    val_preds = [{"case_id": case_ids[i], "label": labels[i], "probability": float(p),
                  "logit": float(z)} for i, p, z in zip(val_idx, pv, zv)]
    return {
        "fold": k, "threshold": threshold, "threshold_rule": threshold_rule,
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "selection": state["select"],
        "stopped_early": state["stopped"],
        "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx),
        "train_cases": [case_ids[i] for i in train_idx],
        "val_cases": [case_ids[i] for i in val_idx],
        "validation": binary_metrics(y[val_idx], pv, threshold),
        "test": binary_metrics(y[test_idx], pt, threshold),
        "predictions": preds, "val_predictions": val_preds,
    }


def pooled_predictions(fold_results: Sequence[dict], case_ids: Sequence[str]) -> list[dict]:
    """Every fold's test predictions, in manifest order (``case_ids``)."""
    position = {case_id: i for i, case_id in enumerate(case_ids)}
    return sorted((p for r in fold_results for p in r["predictions"]),
                  key=lambda p: position[p["case_id"]])


def _targets(rows: Sequence[dict]) -> np.ndarray:
    return np.array([1 if r["label"] == "malignant" else 0 for r in rows])


def _per_fold(fold_results: Sequence[dict]) -> tuple[list[dict], dict]:
    """(one row of test metrics per fold, mean / SD / count of each metric over the folds)."""
    per_fold = [{"fold": r["fold"], "threshold": r["threshold"], "best_epoch": r["best_epoch"],
                 "selection": r.get("selection"),
                 "n": r["test"]["n"], "n_malignant": r["test"]["n_malignant"],
                 **metric_values(r["test"])} for r in fold_results]
    summary = {}
    for key in FOLD_METRICS:
        vals = [f[key] for f in per_fold if f.get(key) is not None]
        summary[key] = {"mean": float(np.mean(vals)) if vals else None,
                        "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                        "n_folds": len(vals)}
    return per_fold, summary


def _calibration(fold_results: Sequence[dict]) -> dict | None:
    """Temperature scaling, fitted per fold on that fold's validation split and applied to the
    same fold's test cases, so no out-of-fold case's label enters the temperature that scales
    it (one temperature pooled over all validation splits would: a fold's validation cases are
    other folds' test cases). None when the logits are missing or a fit is impossible."""
    try:
        temps, logits, scaled, y = [], [], [], []
        for r in fold_results:
            val, test = r["val_predictions"], r["predictions"]
            t = fit_temperature(np.array([v["logit"] for v in val]), _targets(val))
            z = np.array([p["logit"] for p in test], dtype=np.float64)
            temps.append(float(t))
            logits.append(z)
            scaled.append(z / t)
            y.append(_targets(test))
        targets = np.concatenate(y)
        raw = temperature_report(np.concatenate(logits), targets, 1.0)
        after = temperature_report(np.concatenate(scaled), targets, 1.0)
    except (ValueError, KeyError):
        return None
    return {"method": "temperature scaling fitted per fold on that fold's validation split, "
                      "applied to the fold's test cases",
            "out_of_fold": {"temperature": float(np.median(temps)), "temperatures": temps,
                            "n": raw["n"], "before": raw["before"], "after": after["before"]}}


def summarise(fold_results: Sequence[dict], rows: Sequence[dict], *, manifest: Path,
              settings: dict, preprocess: dict, world_size: int, device: str) -> dict:
    """The content of ``metrics.json`` (``rows``: :func:`pooled_predictions`)."""
    y = _targets(rows)
    p = np.array([r["probability"] for r in rows])
    calls = np.array([int(r["probability"] >= r["threshold"]) for r in rows])
    thresholds = [r["threshold"] for r in fold_results]
    operating = float(statistics.median(thresholds))
    pooled = binary_metrics(y, p, operating)
    per_fold, summary = _per_fold(fold_results)
    return {
        "synthetic": manifest_provenance(manifest).synthetic, "manifest": str(manifest),
        "n_cases": int(len(y)), "n_malignant": int(y.sum()), "folds": settings["folds"],
        "positive_class": "malignant",
        "threshold": operating,
        "threshold_rule": (f"{settings['threshold_rule']} on each training fold's validation "
                           "split; operating threshold = median over folds"),
        "fold_thresholds": thresholds,
        "pooled": {**pooled, **call_metrics(y, calls), "threshold": None},
        "pooled_at_operating_threshold": pooled,
        "per_fold": per_fold, "per_fold_summary": summary,
        "calibration": _calibration(fold_results),
        "settings": settings,
        "preprocess": preprocess,
        "world_size": world_size, "device": device,
        "torch": torch.__version__,
    }
