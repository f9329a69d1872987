"""``spinefx evaluate``: metrics, reader comparison and feature statistics from out-of-fold
predictions (:func:`spinefx.train.evaluation.evaluate`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EPILOG, UsageError, add_allow_outside

# The stage's values (spinefx.train.evaluation; tests/test_cli.py keeps them equal), spelled
# here so that `spinefx evaluate --help` loads no stage.
PER_FOLD = "per-fold"
DEFAULT_BOOTSTRAP = 2000


def _threshold_arg(text: str) -> float | str:
    if text.strip().lower() in (PER_FOLD, "per_fold", "fold"):
        return PER_FOLD
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'per-fold', got {text!r}") \
            from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be within [0, 1], got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", help="metrics, reader comparison and feature statistics from OOF predictions",
        description="Evaluate out-of-fold predictions (case_id,fold,label,probability): "
                    "accuracy, sensitivity, specificity, PPV, NPV (Wilson CIs), AUC (DeLong "
                    "CI), Brier score, ECE, per-fold mean ± SD; with --readers, each reader's "
                    "performance and an exact McNemar test against the model on the same cases "
                    "(overall, malignant cases, benign cases); with --manifest, Fisher's exact "
                    "test for each of the 15 imaging features. Writes evaluation.json, "
                    "evaluation.md and PNG figures into --out.",
        epilog=EPILOG)
    p.add_argument("--oof", required=True, type=Path, help="oof_predictions.csv from training")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--readers", type=Path, help="readers CSV (case_id,reader,call[,simulated])")
    p.add_argument("--manifest", type=Path, help="manifest.csv (feature columns; cohort.json "
                   "beside it marks synthetic data)")
    p.add_argument("--threshold", type=_threshold_arg, metavar="T|per-fold",
                   help="malignant when probability >= T (default: 'per-fold' = each fold's "
                        "own threshold when the OOF CSV has a threshold column, as spinefx "
                        "train writes; else 'threshold' in metrics.json beside --oof; else 0.5)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"stratified bootstrap replicates for AUC/Brier/ECE CIs (default "
                        f"{DEFAULT_BOOTSTRAP}; 0 = DeLong/Wilson only)")
    p.add_argument("--bins", type=int, default=10, help="equal-width calibration bins (10)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_allow_outside(p, "--manifest", " (not needed for the manifest the run beside --oof "
                      "was trained on with --allow-outside: its run.json grants it)")
    p.set_defaults(run=run)
    return p


def _num(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    if v is None:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def run(args: argparse.Namespace) -> int:
    if args.bins < 1 or args.bootstrap < 0:
        raise UsageError("--bins must be >= 1 and --bootstrap >= 0")
    from spinefx.train.evaluation import evaluate

    result = evaluate(args.oof, args.out, readers_csv=args.readers, manifest=args.manifest,
                      threshold=args.threshold, n_bins=args.bins, bootstrap=args.bootstrap,
                      seed=args.seed, allow_outside=args.allow_outside)
    pooled = result["model"]["pooled"]
    thr = result["threshold"]["value"]
    for label in result["labels"]:
        print(label)
    print(f"model: accuracy {pooled['accuracy']['value']:.3f}, sensitivity "
          f"{_num(pooled['sensitivity']['value'])}, specificity "
          f"{_num(pooled['specificity']['value'])}, AUC {_num(pooled['auc']['value'])} "
          f"at threshold {thr if isinstance(thr, str) else f'{thr:.3f}'} "
          f"({result['threshold']['source']})")
    for x in result["readers"]:
        t = x["mcnemar"]
        print(f"vs {x['reader']}: McNemar p overall {_p(t['overall']['p'])}, sensitivity "
              f"{_p(t['sensitivity']['p'])}, specificity {_p(t['specificity']['p'])}")
    out = Path(args.out)
    print(f"report: {out / 'evaluation.md'}")
    print(f"json: {out / 'evaluation.json'}")
    print(f"figures: {', '.join(str(out / f) for f in result['figures'].values())}")
    return 0
