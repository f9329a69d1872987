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
beside the OOF CSV, which training chose on validation data; otherwise 0.5. The JSON records which (``threshold.source``). ``threshold="per-fold"`` instead
uses the OOF CSV's optional ``threshold`` column: each case called at the threshold its own
fold chose on validation data (the calls the fold models actually made); AUC, Brier score and
ECE do not depend on it.

Labels: when ``cohort.json`` beside the manifest says ``"synthetic": true`` (the phantom
generator writes it) — or ``config.json`` / ``metrics.json`` beside the OOF CSV carries a
``"synthetic": true`` key at any depth — every table and picture says SYNTHETIC data; calls
from a readers CSV with a ``simulated`` column set to yes are labelled SIMULATED readers.

Outputs in ``out_dir``: ``evaluation.json``, ``evaluation.md`` and the pictures ``roc.png``,
``calibration.png``, ``confusion.png`` and (with a manifest) ``features.png``.

This module imports nothing heavy at import time (the CLI registers its parser cheaply);
scikit-learn, scipy and matplotlib load when an evaluation runs.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinefx.runtime.errors import ManifestError

OOF_COLUMNS = ("case_id", "fold", "label", "probability")
DEFAULT_THRESHOLD = 0.5
DEFAULT_BOOTSTRAP = 2000
SYNTHETIC_NOTE = "SYNTHETIC data (phantom cohort): a pipeline demonstration, not a clinical result"
SIMULATED_NOTE = "SIMULATED readers (drawn at fixed sensitivity/specificity), not a reader study"


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
    ids, folds, ys, ps, ts, seen = [], [], [], [], [], {}
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


# ---------------------------------------------------------------------------------------------
# inputs around the OOF file: threshold, synthetic flag
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


PER_FOLD = "per-fold"


def resolve_threshold(oof_csv: str | PathLike | None,
                      threshold: float | str | None) -> tuple[float | str, str]:
    """(threshold, where it came from): the argument, sibling metrics.json, or 0.5.

    ``"per-fold"`` is passed through (source: the OOF CSV's threshold column).
    """
    if isinstance(threshold, str) and threshold.strip().lower() in (PER_FOLD, "per_fold", "fold"):
        return PER_FOLD, "each fold's own threshold (OOF threshold column)"
    if threshold is None and oof_csv is not None and _has_threshold_column(Path(oof_csv)):
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
        info = _read_json(metrics_json) if metrics_json.is_file() else None
        if isinstance(info, Mapping) and isinstance(info.get("threshold"), (int, float)) \
                and not isinstance(info.get("threshold"), bool) \
                and 0.0 <= float(info["threshold"]) <= 1.0:
            return float(info["threshold"]), str(metrics_json)
    return DEFAULT_THRESHOLD, "default 0.5"


def _has_threshold_column(oof_csv: Path) -> bool:
    try:
        with open(oof_csv, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except OSError:
        return False
    return "threshold" in [h.strip() for h in header]


def _has_synthetic_flag(data: Any, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if isinstance(data, Mapping):
        if data.get("synthetic") is True:
            return True
        return any(_has_synthetic_flag(v, depth + 1) for v in data.values())
    return False


def is_synthetic(manifest: str | PathLike | None, oof_csv: str | PathLike | None) -> bool:
    """cohort.json beside the manifest says synthetic, or the run folder's JSON does."""
    if manifest is not None:
        info = _read_json(Path(manifest).parent / "cohort.json")
        if isinstance(info, Mapping) and info.get("synthetic") is True:
            return True
    if oof_csv is not None:
        for name in ("cohort.json", "config.json", "metrics.json"):
            f = Path(oof_csv).parent / name
            if f.is_file() and _has_synthetic_flag(_read_json(f)):
                return True
    return False


# ---------------------------------------------------------------------------------------------
# the analysis
# ---------------------------------------------------------------------------------------------
def compare_with_readers(oof: OOFPredictions, threshold: Any, table: Any) -> list[dict]:
    """Per reader: its metrics, the model's on the same cases, McNemar overall/sens/spec.

    ``threshold``: one value or one per case (aligned with ``oof``).
    """
    from .metrics import call_metrics, paired_mcnemar

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
    from spinefx.runtime.features import FEATURES

    from .metrics import bonferroni, feature_test, holm

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


def evaluate(oof_csv: str | PathLike, out_dir: str | PathLike,
             readers_csv: str | PathLike | None = None, manifest: str | PathLike | None = None,
             threshold: float | None = None, *, n_bins: int = 10,
             bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """Run the analysis, write ``evaluation.json`` / ``evaluation.md`` / PNGs; return the JSON."""
    from spinefx._version import __version__

    from . import plots
    from .metrics import binary_metrics, jsonable, per_fold_summary, reliability_bins
    from .readers import read_readers_csv

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
    synthetic = is_synthetic(manifest, oof_csv)
    notes: list[str] = []

    cases = None
    if manifest is not None:
        from spinefx.runtime import read_manifest

        cases = read_manifest(manifest)
        by_id = {c.case_id: c for c in cases}
        index = oof.index()
        for cid, i in index.items():
            c = by_id.get(cid)
            if c is not None and c.label is not None and \
                    (c.label == "malignant") != bool(oof.y[i]):
                raise ManifestError(f"case {cid}: label {c.label} in the manifest but "
                                    f"{'malignant' if oof.y[i] else 'benign'} in {oof.path}",
                                    manifest)
        absent = [cid for cid in oof.case_id if cid not in by_id]
        if absent:
            notes.append(f"{len(absent)} case(s) with predictions are not in the manifest "
                         f"(e.g. {absent[0]})")

    table = None
    if readers_csv is not None:
        table = read_readers_csv(readers_csv, known_cases=oof.case_id)

    pooled = binary_metrics(oof.y, oof.prob, thr_cases, n_bins=n_bins, bootstrap=bootstrap,
                            seed=seed)
    folds = per_fold_summary(oof.fold, oof.y, oof.prob, thr_cases, n_bins=n_bins)
    readers = compare_with_readers(oof, thr_cases, table) if table is not None else []
    calls = (oof.prob >= np.asarray(thr_cases)).astype(np.int64)
    thr_text = "each fold's threshold" if thr == PER_FOLD else f"threshold {thr:.3f}"
    features = feature_analysis(cases) if cases is not None else None
    readers_simulated = bool(table is not None and table.simulated)

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

    result = {
        "spinefx_version": __version__,
        "synthetic": synthetic,
        "readers_simulated": readers_simulated,
        "labels": ([SYNTHETIC_NOTE] if synthetic else []) +
                  ([SIMULATED_NOTE] if readers_simulated else []),
        "inputs": {"oof": str(oof_csv), "readers": str(readers_csv) if readers_csv else None,
                   "manifest": str(manifest) if manifest else None},
        "positive_class": "malignant",
        "threshold": {"value": thr, "source": thr_source},
        "model": {"pooled": pooled, "per_fold": folds,
                  "reliability": reliability_bins(oof.y, oof.prob, n_bins)},
        "readers": readers,
        "features": features,
        "figures": {k: v.name for k, v in figures.items()},
        "notes": notes,
    }
    result = jsonable(result)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "evaluation.md").write_text(render_markdown(result), encoding="utf-8")
    return result


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _pct(d: Mapping | None) -> str:
    if not d or d.get("value") is None:
        return "-"
    s = f"{100 * d['value']:.1f}%"
    if d.get("ci_low") is not None:
        s += f" ({100 * d['ci_low']:.1f}-{100 * d['ci_high']:.1f})"
    if "k" in d:
        s += f", {d['k']}/{d['n']}"
    return s


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    if v is None:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
           ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(r: Mapping) -> str:
    """The evaluation report as Markdown (tables + the PNGs beside it)."""
    lines = ["# spinefx evaluation" + (" — SYNTHETIC data" if r["synthetic"] else ""), ""]
    for label in r["labels"]:
        lines += [f"> **{label}**", ""]
    pooled = r["model"]["pooled"]
    thr = r["threshold"]
    thr_s = thr["value"] if isinstance(thr["value"], str) else f"{thr['value']:.3f}"
    lines += [f"Cases: {pooled['n']} ({pooled['n_malignant']} malignant, {pooled['n_benign']} "
              f"benign). Positive class: malignant. Threshold {thr_s} "
              f"({thr['source']}); a case is called malignant when probability >= threshold.",
              "", "## Model (pooled out-of-fold predictions)", ""]
    auc = pooled["auc"]
    auc_s = "-" if auc["value"] is None else \
        f"{auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f}, DeLong)"
    if auc.get("bootstrap"):
        auc_s += f"; bootstrap {auc['bootstrap']['ci_low']:.3f}-{auc['bootstrap']['ci_high']:.3f}"

    def ci(d: Mapping) -> str:
        s = _num(d.get("value"))
        if d.get("ci_low") is not None:
            s += f" ({_num(d['ci_low'])}-{_num(d['ci_high'])}, bootstrap)"
        return s

    rows = [[name, _pct(pooled[key])] for key, name in (
        ("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
        ("ppv", "PPV"), ("npv", "NPV"))]
    rows += [["AUC", auc_s], ["Brier score", ci(pooled["brier"])],
             [f"ECE ({pooled['ece']['n_bins']} equal-width bins)", ci(pooled["ece"])]]
    lines += _table(["metric", "value (95% CI), counts"], rows)
    c = pooled["counts"]
    lines += ["", f"Confusion at the threshold: TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, "
              f"FP {c['fp']}. Proportions: Wilson 95% CI.", ""]

    per = r["model"]["per_fold"]
    lines += ["### Per fold", ""]
    keys = ("accuracy", "sensitivity", "specificity", "auc", "brier", "ece")
    rows = [[str(f["fold"]), str(f["n"]), str(f["n_malignant"]), _num(f["threshold"])] +
            [_num(f[k]) for k in keys] for f in per["folds"]]
    summ = per["summary"]
    rows.append(["**mean ± SD**", "", "", ""] + [
        "-" if summ[k]["mean"] is None else
        f"{summ[k]['mean']:.3f} ± {_num(summ[k]['sd'])}" for k in keys])
    lines += _table(["fold", "n", "malignant", "threshold", *keys], rows) + [""]

    figs = r["figures"]
    for key, caption in (("roc", "ROC curve"), ("calibration", "Reliability diagram"),
                         ("confusion", "Confusion matrix")):
        if key in figs:
            lines += [f"![{caption}]({figs[key]})", ""]

    if r["readers"]:
        lines += ["## Readers" + (" (SIMULATED)" if r["readers_simulated"] else ""), ""]
        rows = [[x["reader"] + (" (simulated)" if x["simulated"] else ""), str(x["n"]),
                 _pct(x["metrics"]["accuracy"]), _pct(x["metrics"]["sensitivity"]),
                 _pct(x["metrics"]["specificity"])] for x in r["readers"]]
        lines += _table(["reader", "cases", "accuracy", "sensitivity", "specificity"], rows)
        lines += ["", "### Model vs reader on the same cases (exact McNemar)", "",
                  "b = model right and reader wrong, c = model wrong and reader right; "
                  "two-sided exact binomial test on the discordant pairs. Sensitivity = "
                  "malignant cases only, specificity = benign cases only.", ""]
        rows = []
        for x in r["readers"]:
            model, rd = x["model_same_cases"], x["metrics"]
            for key, mk in (("overall", "accuracy"), ("sensitivity", "sensitivity"),
                            ("specificity", "specificity")):
                t = x["mcnemar"][key]
                rows.append([x["reader"], f"{key} ({t['cases']}, n={t['n']})",
                             _pct({"value": model[mk]["value"]}),
                             _pct({"value": rd[mk]["value"]}), str(t["b"]), str(t["c"]),
                             _p(t["p"])])
        lines += _table(["reader", "comparison", "model", "reader", "b", "c", "p"], rows)
        lines += [""]

    feats = r.get("features")
    if feats and feats["rows"]:
        mc = feats["multiple_comparisons"]
        lines += ["## Imaging features (Fisher's exact test)", "",
                  f"{feats['n_cases']} labelled cases from the manifest.", ""]
        rows = [[f["title"], f["leaning"],
                 f"{f['malignant_with']}/{f['malignant_n']} "
                 f"({_pct({'value': f['malignant_rate']})})",
                 f"{f['benign_with']}/{f['benign_n']} ({_pct({'value': f['benign_rate']})})",
                 _num(f["odds_ratio"], 2), _p(f["p"]), _p(f["p_bonferroni"]), _p(f["p_holm"])]
                for f in feats["rows"]]
        lines += _table(["feature", "leaning", "malignant", "benign", "odds ratio", "p",
                         "p Bonferroni", "p Holm"], rows)
        lines += ["", f"Multiple comparisons: {mc['note']} Features with p <= 0.001: "
                  f"{mc['raw_p_le_0.001']} of {mc['tests']}; below 0.05/{mc['tests']}: "
                  f"{mc['raw_p_below_bonferroni_alpha']}; Holm-adjusted p < 0.05: "
                  f"{mc['holm_p_below_0.05']}.", ""]
        if "features" in figs:
            lines += [f"![Imaging features by class]({figs['features']})", ""]
    if r["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    lines += ["---", "Research and teaching software, not a medical device.", ""]
    return "\n".join(lines)
