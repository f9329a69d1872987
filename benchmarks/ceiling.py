"""How close the CNN comes to the ceiling on a SYNTHETIC phantom cohort, side by side.

On the same patient-grouped CV folds for every method:

- **feature oracle**: logistic regression and Bernoulli naive Bayes on the manifest's 15
  ground-truth feature columns (a reader who sees every feature perfectly);
- **intensity statistics**: logistic regression on 42 numbers (mean, std, 5/25/50/75/95th
  percentiles of each of the 6 channels) of the central half of the 64 px six-channel input
  that the runtime's own preprocessing (:func:`spinefx.runtime.prepare_case`) builds from
  the manifest's slice and box;
- **the CNN**: a training run's out-of-fold predictions (``--oof``), called at the run's
  threshold(s);
- optionally a model folder on a **fresh held-out cohort** rendered in memory
  (``--held-out-model``; new seed, never used for training or selection).

    python benchmarks/ceiling.py --manifest cohort/manifest.csv --oof run/oof_predictions.csv
    python benchmarks/ceiling.py --manifest cohort/manifest.csv --held-out-model  # bundled

The folds: the OOF file's own ``fold`` column when ``--oof`` is given (the run's splits), else
:func:`spinefx.train.folds.make_folds` with ``--folds``/``--seed``. The baselines are called
at P >= 0.5. Pass/miss is judged on point estimates; the intervals are 95% (AUC: DeLong;
proportions: Wilson). Synthetic phantoms only: the numbers say nothing about real MRI.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from spinefx.runtime import Case, PreprocessConfig, prepare_case, read_manifest
from spinefx.runtime.errors import ManifestError, SpineFXError, SpineFXWarning
from spinefx.runtime.features import FEATURE_KEYS

SYNTHETIC = "SYNTHETIC phantom cohort: these numbers say nothing about real MRI"
STAT_PERCENTILES = (5, 25, 50, 75, 95)
STATS_IMAGE_SIZE = 64
BASELINE_THRESHOLD = 0.5
#: the issue's targets ("A model worth showing")
TARGET_AUC, TARGET_GAP, TARGET_ACCURACY, TARGET_SENS_SPEC = 0.97, 0.03, 0.92, 0.90
MIN_HELD_OUT = 500
CLEARLY_ABOVE_P = 0.05   # "clearly above the statistics baseline": paired DeLong p below this


@dataclass
class Cohort:
    cases: list[Case]
    y: np.ndarray          # 1 = malignant
    groups: np.ndarray     # patient ids (a patient never spans two folds)
    path: Path


def load_cohort(manifest: str | Path, allow_outside: bool = False) -> Cohort:
    """The labelled cases of a manifest; unlabelled cases or missing features are errors."""
    path = Path(manifest)
    cases = read_manifest(path, allow_outside=allow_outside)
    unlabelled = [c.case_id for c in cases if c.label is None]
    if unlabelled:
        raise ManifestError(f"every case needs a label; {len(unlabelled)} have none "
                            f"(first: {unlabelled[0]})", path)
    no_features = [c.case_id for c in cases if set(FEATURE_KEYS) - set(c.features)]
    if no_features:
        raise ManifestError(f"the feature oracle needs all {len(FEATURE_KEYS)} feature columns "
                            f"({', '.join(FEATURE_KEYS)}); case {no_features[0]} lacks some",
                            path)
    y = np.array([c.target for c in cases], dtype=np.int64)
    groups = np.array([c.patient_id or c.case_id for c in cases])
    return Cohort(cases, y, groups, path)


def restrict_to_oof(cohort: Cohort, oof: Any) -> tuple[Cohort, np.ndarray]:
    """The cohort's cases the OOF file scored (in OOF order) and their folds from its ``fold``
    column: exactly the run's splits. Cases or labels that disagree are errors."""
    index = {c.case_id: i for i, c in enumerate(cohort.cases)}
    missing = [c for c in oof.case_id if c not in index]
    if missing:
        raise ManifestError(f"{len(missing)} case(s) of the OOF predictions are not in the "
                            f"manifest {cohort.path} (first: {missing[0]})", oof.path)
    rows = np.array([index[c] for c in oof.case_id])
    if np.any(cohort.y[rows] != oof.y):
        bad = oof.case_id[int(np.flatnonzero(cohort.y[rows] != oof.y)[0])]
        raise ManifestError(f"case {bad}: its OOF label differs from the manifest's "
                            f"{cohort.path}", oof.path)
    fold_names = sorted({str(f) for f in oof.fold})
    fold_of = np.array([fold_names.index(str(f)) + 1 for f in oof.fold])
    sub = Cohort([cohort.cases[i] for i in rows], cohort.y[rows], cohort.groups[rows],
                 cohort.path)
    return sub, fold_of


def run_settings(oof_csv: Path) -> dict:
    """``folds``/``seed`` from the run folder's run.json next to the OOF file ({} if absent)."""
    from spinefx.runtime.files import read_json

    record = read_json(oof_csv.parent / "run.json", required=False)
    settings = record.get("settings", {}) if isinstance(record, dict) else {}
    return {k: settings[k] for k in ("folds", "seed") if k in settings}


# ---------------------------------------------------------------------------------------------
# inputs of the baselines
# ---------------------------------------------------------------------------------------------
def feature_matrix(cases: list[Case]) -> np.ndarray:
    """(N, 15) 0/1: the manifest's ground-truth feature flags, in FEATURE_KEYS order."""
    return np.array([[c.features[k] for k in FEATURE_KEYS] for c in cases], dtype=np.float64)


def intensity_statistics(array: np.ndarray) -> np.ndarray:
    """(7 * C,) mean, std and STAT_PERCENTILES of each channel of a (C, S, S) input, over its
    central half (S/4 .. 3S/4 each way: inside the vertebral body, the ROI margin left out)."""
    s = array.shape[-1]
    centre = array[:, s // 4: s - s // 4, s // 4: s - s // 4].reshape(array.shape[0], -1)
    pct = np.percentile(centre, STAT_PERCENTILES, axis=1).T
    return np.column_stack([centre.mean(axis=1), centre.std(axis=1), pct]).ravel()


def statistics_matrix(cases: list[Case], image_size: int = STATS_IMAGE_SIZE) -> np.ndarray:
    """(N, 42) intensity statistics of each case's runtime-built six-channel input."""
    config = PreprocessConfig(image_size=image_size)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpineFXWarning)  # edge slices replicate a neighbour
        for case in tqdm(cases, desc="six-channel inputs", unit="case", disable=None):
            rows.append(intensity_statistics(prepare_case(case, config).array))
    return np.array(rows)


# ---------------------------------------------------------------------------------------------
# out-of-fold fitting and metrics
# ---------------------------------------------------------------------------------------------
def logistic_regression() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def naive_bayes() -> Any:
    from sklearn.naive_bayes import BernoulliNB

    return BernoulliNB()


def out_of_fold(x: np.ndarray, y: np.ndarray, fold_of: np.ndarray,
                make_model: Callable[[], Any]) -> np.ndarray:
    """P(malignant) of every case from a model fitted on the other folds only."""
    prob = np.full(len(y), np.nan)
    for k in np.unique(fold_of):
        test = fold_of == k
        model = make_model().fit(x[~test], y[~test])
        prob[test] = model.predict_proba(x[test])[:, 1]
    return prob


def summary(y: np.ndarray, prob: np.ndarray, threshold: Any) -> dict:
    """AUC (DeLong CI), accuracy, sensitivity, specificity (Wilson CIs) at ``threshold``."""
    from spinefx.train.metrics import binary_metrics

    m = binary_metrics(y, prob, threshold)
    return {"n": m["n"], "n_malignant": m["n_malignant"], "threshold": m["threshold"],
            **{k: m[k] for k in ("auc", "accuracy", "sensitivity", "specificity")}}


def cnn_threshold(oof: Any, oof_csv: Path) -> tuple[Any, str]:
    """The run's operating point: each fold's own threshold, metrics.json's, or 0.5."""
    from spinefx.train.evaluation import PER_FOLD, resolve_threshold

    threshold, source = resolve_threshold(oof_csv, None)
    return (oof.threshold if threshold == PER_FOLD else threshold), source


def cohort_variation(manifest: Path) -> float:
    """The phantom ``variation`` the manifest's cohort was drawn with (its cohort.json), so
    the held-out cohort comes from the same distribution; 1.0 (the generator's default) when
    the folder has none."""
    from spinefx.runtime.files import read_json

    record = read_json(manifest.parent / "cohort.json", required=False)
    value = record.get("variation") if isinstance(record, dict) else None
    return float(value) if isinstance(value, (int, float)) else 1.0


def held_out(model: str | None, n_cases: int, seed: int, variation: float,
             workers: int) -> dict:
    """A model folder (None: the bundled model) on a fresh in-memory cohort, half malignant,
    at the model's own threshold."""
    from spinefx.phantom import iter_cases
    from spinefx.phantom.case import case_volumes
    from spinefx.runtime.inference import Predictor

    predictor = Predictor(model) if model else Predictor()
    y, p = [], []
    for row, case in iter_cases(seed=seed, n_cases=n_cases, n_malignant=n_cases // 2,
                                variation=variation, workers=workers, progress=True):
        t1, t2 = case_volumes(case)
        y.append(int(row["label"] == "malignant"))
        p.append(predictor.predict_volumes(t1, t2, case.slice, box=case.box).probability)
    out = summary(np.array(y), np.array(p), predictor.threshold)
    return {**out, "model": model or "bundled", "model_id": predictor.model_id, "seed": seed,
            "variation": variation}


# ---------------------------------------------------------------------------------------------
# targets and the table
# ---------------------------------------------------------------------------------------------
def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "miss")


def _value(metric: dict | None, key: str) -> float | None:
    return None if metric is None else metric[key]["value"]


def judge_targets(results: dict) -> list[dict]:
    """One row per target of the issue: what it asks, the measured value, pass/miss/n/a."""
    cnn, stats, held = results.get("cnn"), results["statistics"], results.get("held_out")
    oracle_auc = max(results["oracle_lr"]["auc"]["value"], results["oracle_nb"]["auc"]["value"])
    cnn_auc = _value(cnn, "auc")
    rows: list[dict] = []

    def add(target: str, value: float | None, ok: bool | None, note: str = "") -> None:
        rows.append({"target": target, "value": value, "verdict": _verdict(ok), "note": note})

    no_oof = "" if cnn else "no --oof given"
    add(f"CNN OOF AUC >= {TARGET_AUC}", cnn_auc,
        None if cnn_auc is None else cnn_auc >= TARGET_AUC, no_oof)
    gap = None if cnn_auc is None else oracle_auc - cnn_auc
    add(f"CNN AUC within {TARGET_GAP} of the feature oracle ({oracle_auc:.3f})", gap,
        None if gap is None else gap <= TARGET_GAP, no_oof)
    for key, target in (("accuracy", TARGET_ACCURACY), ("sensitivity", TARGET_SENS_SPEC),
                        ("specificity", TARGET_SENS_SPEC)):
        v = _value(cnn, key)
        add(f"CNN {key} >= {target:g}", v, None if v is None else v >= target, no_oof)
    p = results.get("cnn_vs_statistics", {}).get("p")
    above = None if cnn_auc is None or p is None else (
        cnn_auc > stats["auc"]["value"] and p < CLEARLY_ABOVE_P)
    add(f"CNN clearly above the statistics baseline (DeLong p < {CLEARLY_ABOVE_P})", p, above,
        no_oof)
    held_auc = _value(held, "auc")
    small = held is not None and held["n"] < MIN_HELD_OUT
    add(f"held-out AUC >= {TARGET_AUC} on >= {MIN_HELD_OUT} fresh cases", held_auc,
        None if held_auc is None or small else held_auc >= TARGET_AUC,
        "no --held-out-model given" if held is None else
        (f"only {held['n']} cases (< {MIN_HELD_OUT}): not assessed" if small else ""))
    return rows


def _ci(metric: dict | None, pct: bool = False) -> str:
    if metric is None or metric.get("value") is None:
        return "-"
    fmt = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    lo, hi = metric.get("ci_low"), metric.get("ci_high")
    band = f" ({fmt(lo)}-{fmt(hi)})" if lo is not None and hi is not None else ""
    return fmt(metric["value"]) + band


def markdown(results: dict) -> str:
    """The methods side by side, then the targets, under a SYNTHETIC banner."""
    lines = [f"**{SYNTHETIC}.**", "", f"Folds: {results['folds_source']}.", "",
             "| method | n (malignant) | AUC (95% CI) | threshold | accuracy | sensitivity | "
             "specificity |", "|---|---|---|---|---|---|---|"]
    for key, name in (("oracle_lr", "feature oracle: logistic regression (15 features)"),
                      ("oracle_nb", "feature oracle: naive Bayes (15 features)"),
                      ("statistics", "intensity statistics: logistic regression (42)"),
                      ("cnn", results.get("cnn_label", "CNN (out-of-fold)")),
                      ("held_out", "CNN on fresh held-out cohort")):
        m = results.get(key)
        if m is None:
            continue
        if key == "held_out":
            name += f" ({m['model']}, seed {m['seed']}, variation {m['variation']:g})"
        thr = "per fold" if m["threshold"] is None else f"{m['threshold']:.3f}"
        lines.append(f"| {name} | {m['n']} ({m['n_malignant']}) | {_ci(m['auc'])} | {thr} | "
                     + " | ".join(_ci(m[k], pct=True)
                                  for k in ("accuracy", "sensitivity", "specificity")) + " |")
    lines += ["", "| target (issue) | measured | verdict | note |", "|---|---|---|---|"]
    for row in results["targets"]:
        v = "-" if row["value"] is None else f"{row['value']:.3f}"
        lines.append(f"| {row['target']} | {v} | {row['verdict']} | {row['note']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> dict:
    from spinefx.train.folds import make_folds
    from spinefx.train.metrics import delong_test
    from spinefx.train.oof import read_oof

    cohort = load_cohort(args.manifest, args.allow_outside)
    results: dict[str, Any] = {"synthetic": SYNTHETIC, "manifest": str(args.manifest),
                               "cnn_label": args.cnn_label}
    oof = None
    if args.oof:
        oof = read_oof(args.oof)
        cohort, fold_of = restrict_to_oof(cohort, oof)
        results["folds_source"] = (f"the {len(set(fold_of.tolist()))} folds of {args.oof} "
                                   f"(run settings {run_settings(Path(args.oof)) or 'unknown'})")
    else:
        fold_of = make_folds(cohort.y, cohort.groups, args.folds, args.seed)
        results["folds_source"] = (f"make_folds(folds={args.folds}, seed={args.seed}), patient-"
                                   "grouped; no --oof given, so no CNN row")
    features = feature_matrix(cohort.cases)
    stats_x = statistics_matrix(cohort.cases)
    probs = {"oracle_lr": out_of_fold(features, cohort.y, fold_of, logistic_regression),
             "oracle_nb": out_of_fold(features, cohort.y, fold_of, naive_bayes),
             "statistics": out_of_fold(stats_x, cohort.y, fold_of, logistic_regression)}
    for key, prob in probs.items():
        results[key] = summary(cohort.y, prob, BASELINE_THRESHOLD)
    if oof is not None:
        threshold, source = cnn_threshold(oof, Path(args.oof))
        results["cnn"] = {**summary(cohort.y, oof.prob, threshold), "threshold_source": source}
        results["cnn_vs_statistics"] = delong_test(cohort.y, oof.prob, probs["statistics"])
    if args.held_out_model is not None:
        model = None if args.held_out_model == BUNDLED else args.held_out_model
        variation = (cohort_variation(args.manifest) if args.held_out_variation is None
                     else args.held_out_variation)
        results["held_out"] = held_out(model, args.held_out_cases, args.held_out_seed,
                                       variation, args.workers)
    results["targets"] = judge_targets(results)
    return results


BUNDLED = "bundled"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, type=Path, help="the cohort's manifest.csv")
    ap.add_argument("--oof", type=Path, help="a run's oof_predictions.csv (the CNN row)")
    ap.add_argument("--folds", type=int, default=10, help="folds without --oof (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="fold seed without --oof (default 0)")
    ap.add_argument("--held-out-model", nargs="?", const=BUNDLED, default=None, metavar="DIR",
                    help="score a model folder on a fresh cohort (flag alone: bundled model)")
    ap.add_argument("--held-out-cases", type=int, default=MIN_HELD_OUT)
    ap.add_argument("--held-out-seed", type=int, default=9001,
                    help="never used for training or selection (default 9001)")
    ap.add_argument("--held-out-variation", type=float, default=None,
                    help="phantom --variation of the fresh cohort (default: the manifest "
                         "folder's cohort.json, else 1 as `spinefx phantom`)")
    ap.add_argument("--workers", type=int, default=2, help="phantom render processes")
    ap.add_argument("--allow-outside", action="store_true",
                    help="the manifest's series may lie outside its folder")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--cnn-label", default="CNN (out-of-fold)",
                    help="the CNN row's name, e.g. for predictions of a model trained on another "
                         "cohort (every case held out) whose fold column is only the split the "
                         "baselines use")
    args = ap.parse_args(argv)
    if args.held_out_cases < 2:
        ap.error(f"--held-out-cases must be at least 2, got {args.held_out_cases}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = measure(args)
    except (SpineFXError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
