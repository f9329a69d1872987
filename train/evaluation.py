"""`spinefx evaluate`: the paper's whole analysis from out-of-fold predictions.

Inputs
- ``oof_predictions.csv``: ``case_id,fold,label,probability`` (label benign/malignant or 0/1;
  probability = predicted probability of malignancy; extra columns are ignored).
- optional readers CSV (:mod:`spinefx.train.readers`): per-reader accuracy, sensitivity and
  specificity with Wilson CIs, and the model against each reader **on the same cases** with an
  exact McNemar test on the discordant pairs — over all cases, over the malignant cases only
  (a comparison of sensitivities) and over the benign cases only (specificities), as in
  Yeh et al. 2022. ``b`` = model right and reader wrong, ``c`` = model wrong and reader right.
- optional manifest: its 15 feature columns give each feature's frequency per class, Fisher's
  exact p, and Bonferroni / Holm adjusted p. Feature statistics use **all labelled manifest
  cases** (the paper scored features on its whole cohort), not only those with predictions.

Threshold: ``threshold=`` when given; otherwise, when the OOF CSV has a ``threshold`` column
(``spinefx train`` writes one), each fold's own threshold ("per-fold", the calls report.md
shows); otherwise the ``threshold`` field (a number at the top level) of ``metrics.json``
beside the OOF CSV, which training chose on validation data; otherwise 0.5. The JSON records
which (``threshold.source``). ``threshold="per-fold"`` instead
uses the OOF CSV's optional ``threshold`` column: each case called at the threshold its own
fold chose on validation data (the calls the fold models actually made); AUC, Brier score and
ECE do not depend on it.

Labels: when the manifest's folder (``cohort.json``, written by the phantom generator) or the
OOF CSV's folder (``metrics.json`` / ``config.json`` of the run) is synthetic by the one rule of
:mod:`spinefx.runtime.provenance`, every table and picture says SYNTHETIC data; calls from a
readers CSV with a ``simulated`` column set to yes are labelled SIMULATED readers.

Outputs in ``out_dir``: ``evaluation.json``, ``evaluation.md`` and the pictures ``roc.png``,
``calibration.png``, ``confusion.png`` and (with a manifest) ``features.png``.

Out-of-fold predictions are read by :mod:`.oof`, the statistics come from :mod:`.metrics`, the
pictures from :mod:`.plots`, the Markdown from :mod:`.evaluation_markdown`.
"""
from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinefx._version import __version__
from spinefx.runtime import read_manifest
from spinefx.runtime.errors import ManifestError
from spinefx.runtime.features import FEATURES
from spinefx.runtime.files import atomic_write_json, atomic_write_text, read_json
from spinefx.runtime.provenance import folder_provenance, manifest_provenance

from . import plots
from .evaluation_markdown import render_markdown
from .metrics import (
    binary_metrics,
    bonferroni,
    call_metrics,
    feature_test,
    holm,
    jsonable,
    paired_mcnemar,
    per_fold_summary,
    reliability_bins,
)
from .oof import (  # noqa: F401 (read_oof, as_oof: this module's API before oof.py existed)
    OOF_COLUMNS,
    OOFPredictions,
    as_oof,
    has_threshold_column,
    read_oof,
)
from .readers import read_readers_csv
from .run_folder import manifest_permission

DEFAULT_THRESHOLD = 0.5
DEFAULT_BOOTSTRAP = 2000
SYNTHETIC_NOTE = "SYNTHETIC data (phantom cohort): a pipeline demonstration, not a clinical result"
SIMULATED_NOTE = "SIMULATED readers (drawn at fixed sensitivity/specificity), not a reader study"
# A simulated reader's calls hit the rates chosen for it exactly, so a McNemar test against it
# only restates those rates: say so wherever its p-values are shown.
MCNEMAR_SIMULATED_NOTE = ("the readers are SIMULATED: each McNemar result is fixed by the "
                          "sensitivity/specificity chosen for the reader (spinefx readers) and "
                          "says nothing about the model against human readers")


# ---------------------------------------------------------------------------------------------
# the threshold the out-of-fold predictions are called at
# ---------------------------------------------------------------------------------------------
PER_FOLD = "per-fold"


def resolve_threshold(oof_csv: str | PathLike | None,
                      threshold: float | str | None) -> tuple[float | str, str]:
    """(threshold, where it came from): the argument, sibling metrics.json, or 0.5.

    ``"per-fold"`` is passed through (source: the OOF CSV's threshold column).
    """
    if isinstance(threshold, str) and threshold.strip().lower() in (PER_FOLD, "per_fold", "fold"):
        return PER_FOLD, "each fold's own threshold (OOF threshold column)"
    if threshold is None and oof_csv is not None and has_threshold_column(oof_csv):
        # training called each fold at its own validation-chosen threshold: report.md's calls.
        # A single pooled value (the median) was chosen on cases that are other folds' test
        # cases, so using it for the out-of-fold calls would be mildly optimistic.
        return PER_FOLD, "each fold's own threshold (OOF threshold column, as in report.md)"
    if threshold is not None:
        t = float(threshold)
        if not 0.0 <= t <= 1.0:
            raise ManifestError(f"threshold must be within [0, 1], got {threshold}")
        return t, "argument"
    if oof_csv is not None:
        metrics_json = Path(oof_csv).parent / "metrics.json"
        info = read_json(metrics_json, required=False)
        if isinstance(info, Mapping) and isinstance(info.get("threshold"), (int, float)) \
                and not isinstance(info.get("threshold"), bool) \
                and 0.0 <= float(info["threshold"]) <= 1.0:
            return float(info["threshold"]), str(metrics_json)
    return DEFAULT_THRESHOLD, "default 0.5"


# ---------------------------------------------------------------------------------------------
# the analysis
# ---------------------------------------------------------------------------------------------
def compare_with_readers(oof: OOFPredictions, threshold: Any, table: Any) -> list[dict]:
    """Per reader: its metrics, the model's on the same cases, McNemar overall/sens/spec.

    ``threshold``: one value or one per case (aligned with ``oof``).
    """
    index = oof.index()
    model_call = (oof.prob >= np.asarray(threshold, dtype=np.float64)).astype(np.int64)
    out = []
    for name in table.readers:
        calls = table.calls_of(name)
        idx = np.array([index[c] for c in calls], dtype=np.int64)
        reader = np.array([1 if calls[c] == "malignant" else 0 for c in calls], dtype=np.int64)
        y, model = oof.y[idx], model_call[idx]
        tests = {}
        for key, sel, cases in (("overall", np.ones(len(y), bool), "all"),
                                ("sensitivity", y == 1, "malignant"),
                                ("specificity", y == 0, "benign")):
            t = paired_mcnemar(y[sel], model[sel], reader[sel])
            tests[key] = {"cases": cases, **t}
        out.append({
            "reader": name, "n": int(len(idx)), "n_malignant": int(y.sum()),
            "simulated": any(c.simulated for c in table.calls if c.reader == name),
            "metrics": call_metrics(y, reader), "model_same_cases": call_metrics(y, model),
            "mcnemar": tests,
            "mcnemar_note": "b = model right & reader wrong, c = model wrong & reader right; "
                            "exact two-sided binomial test on b of b + c",
        })
    return out


def feature_analysis(cases: list) -> dict:
    """Frequency per class, Fisher's exact p, Bonferroni and Holm adjusted p per feature."""
    labelled = [c for c in cases if c.label in ("benign", "malignant")]
    rows = []
    for feat in FEATURES:
        have = [c for c in labelled if feat.key in c.features]
        if not have:
            continue
        y = np.array([1 if c.label == "malignant" else 0 for c in have])
        x = np.array([c.features[feat.key] for c in have])
        t = feature_test(x, y)
        mal, ben = t["malignant"], t["benign"]
        observed = None
        if mal["value"] is not None and ben["value"] is not None and mal["value"] != ben["value"]:
            observed = "malignant" if mal["value"] > ben["value"] else "benign"
        rows.append({"key": feat.key, "title": feat.title, "leaning": feat.leaning,
                     "n": int(len(have)),
                     "malignant_with": mal["k"], "malignant_n": mal["n"],
                     "malignant_rate": mal["value"],
                     "benign_with": ben["k"], "benign_n": ben["n"], "benign_rate": ben["value"],
                     "commoner_in": observed, "odds_ratio": t["odds_ratio"], "p": t["p"]})
    m = len(rows)
    for r, pb, ph in zip(rows, bonferroni([r["p"] for r in rows]), holm([r["p"] for r in rows])):
        r["p_bonferroni"], r["p_holm"] = pb, ph
    alpha_bonf = 0.05 / m if m else None
    return {
        "n_cases": len(labelled), "n_features": m, "rows": rows,
        "multiple_comparisons": {
            "tests": m,
            "raw_p_le_0.001": sum(r["p"] <= 0.001 for r in rows),
            "bonferroni_alpha": alpha_bonf,
            "raw_p_below_bonferroni_alpha": sum(r["p"] < alpha_bonf for r in rows) if m else 0,
            "holm_p_below_0.05": sum(r["p_holm"] < 0.05 for r in rows),
            "note": (f"{m} features tested; at alpha 0.05 Bonferroni requires p < 0.05/{m}"
                     f" = {alpha_bonf:.4g}; Holm's step-down is uniformly more powerful and "
                     "controls the same family-wise error. The paper reported features with "
                     "p <= 0.001, which also clears the Bonferroni bar.") if m else
                    "no feature columns in the manifest",
        },
    }


def _manifest_cases(manifest: str | PathLike, oof: OOFPredictions,
                    allow_outside: bool = False) -> tuple[list, list[str]]:
    """The manifest's cases, checked against the predictions' labels, and notes for the
    report (predicted cases the manifest lacks). Series outside the manifest's folder:
    ``allow_outside``, or the permission of the run beside the predictions when it was
    trained on this manifest (:func:`spinefx.train.run_folder.manifest_permission`)."""
    run_dir = Path(oof.path).parent if oof.path is not None else None
    permission = manifest_permission(run_dir, manifest, allow_outside)
    cases = read_manifest(manifest, allow_outside=permission)
    by_id = {c.case_id: c for c in cases}
    for cid, i in oof.index().items():
        c = by_id.get(cid)
        if c is not None and c.label is not None and (c.label == "malignant") != bool(oof.y[i]):
            raise ManifestError(f"case {cid}: label {c.label} in the manifest but "
                                f"{'malignant' if oof.y[i] else 'benign'} in {oof.path}",
                                manifest)
    absent = [cid for cid in oof.case_id if cid not in by_id]
    notes = [f"{len(absent)} case(s) with predictions are not in the manifest (e.g. "
             f"{absent[0]})"] if absent else []
    return cases, notes


def _draw_figures(out: Path, oof: OOFPredictions, calls: np.ndarray, thr_text: str,
                  readers: list[dict], features: dict | None, *, synthetic: bool,
                  readers_simulated: bool, n_bins: int) -> dict[str, Path]:
    """ROC (with the readers' operating points), reliability, confusion, feature bars."""
    caption_parts = [SYNTHETIC_NOTE] if synthetic else []
    tag = " [SYNTHETIC]" if synthetic else ""
    caption = "; ".join(caption_parts) or None
    reader_caption = "; ".join(caption_parts + ([SIMULATED_NOTE] if readers_simulated else []))
    reader_points = [{"name": r["reader"] + (" (simulated)" if r["simulated"] else ""),
                      "sensitivity": r["metrics"]["sensitivity"]["value"],
                      "specificity": r["metrics"]["specificity"]["value"]} for r in readers]
    figures = {
        "roc": plots.roc_plot(oof.y, oof.prob, out / "roc.png", readers=reader_points,
                              title=f"ROC, out-of-fold{tag}" + (" + SIMULATED readers"
                                                                 if readers_simulated else ""),
                              caption=reader_caption or None),
        "calibration": plots.reliability_plot(oof.y, oof.prob, out / "calibration.png",
                                              n_bins=n_bins, title=f"Reliability{tag}",
                                              caption=caption),
        "confusion": plots.confusion_from_calls(oof.y, calls, out / "confusion.png",
                                                title=f"Model at {thr_text}{tag}",
                                                caption=caption),
    }
    if features is not None and features["rows"]:
        figures["features"] = plots.feature_bars(features["rows"], out / "features.png",
                                                 title=f"Imaging features by class{tag}",
                                                 caption=caption)
    return figures


def evaluate(oof_csv: str | PathLike, out_dir: str | PathLike,
             readers_csv: str | PathLike | None = None, manifest: str | PathLike | None = None,
             threshold: float | None = None, *, n_bins: int = 10,
             bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             allow_outside: bool = False) -> dict:
    """Run the analysis, write ``evaluation.json`` / ``evaluation.md`` / PNGs; return the JSON.
    ``allow_outside``: the manifest's series may lie outside its folder (see
    :func:`_manifest_cases`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    oof = read_oof(oof_csv)
    thr, thr_source = resolve_threshold(oof_csv, threshold)
    if thr == PER_FOLD:
        if oof.threshold is None:
            raise ManifestError("threshold 'per-fold' needs a 'threshold' column in the "
                                "out-of-fold predictions", oof_csv)
        thr_cases: Any = oof.threshold
    else:
        thr_cases = float(thr)
    # the one rule: cohort.json beside the manifest, or the run folder's records, say synthetic
    synthetic = (manifest_provenance(manifest).synthetic
                 or folder_provenance(Path(oof_csv).parent).synthetic)
    cases, notes = (_manifest_cases(manifest, oof, allow_outside) if manifest is not None
                    else (None, []))
    table = (read_readers_csv(readers_csv, known_cases=oof.case_id)
             if readers_csv is not None else None)
    readers = compare_with_readers(oof, thr_cases, table) if table is not None else []
    readers_simulated = bool(table is not None and table.simulated)
    features = feature_analysis(cases) if cases is not None else None
    calls = (oof.prob >= np.asarray(thr_cases)).astype(np.int64)
    thr_text = "each fold's threshold" if thr == PER_FOLD else f"threshold {thr:.3f}"
    figures = _draw_figures(out, oof, calls, thr_text, readers, features, synthetic=synthetic,
                            readers_simulated=readers_simulated, n_bins=n_bins)
    pooled = binary_metrics(oof.y, oof.prob, thr_cases, n_bins=n_bins, bootstrap=bootstrap,
                            seed=seed)
    result = jsonable({
        "spinefx_version": __version__,
        "synthetic": synthetic,
        "readers_simulated": readers_simulated,
        "mcnemar_note": MCNEMAR_SIMULATED_NOTE if readers_simulated else None,
        "labels": ([SYNTHETIC_NOTE] if synthetic else []) +
                  ([SIMULATED_NOTE] if readers_simulated else []),
        "inputs": {"oof": str(oof_csv), "readers": str(readers_csv) if readers_csv else None,
                   "manifest": str(manifest) if manifest else None},
        "positive_class": "malignant",
        "threshold": {"value": thr, "source": thr_source},
        "model": {"pooled": pooled,
                  "per_fold": per_fold_summary(oof.fold, oof.y, oof.prob, thr_cases,
                                               n_bins=n_bins),
                  "reliability": reliability_bins(oof.y, oof.prob, n_bins)},
        "readers": readers,
        "features": features,
        "figures": {k: v.name for k, v in figures.items()},
        "notes": notes,
    })
    atomic_write_json(out / "evaluation.json", result)
    atomic_write_text(out / "evaluation.md", render_markdown(result))
    return result
