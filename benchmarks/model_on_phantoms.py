"""How a model does on SYNTHETIC phantoms it never saw, per phantom ``--variation``.

Renders the cases in memory (``spinefx.phantom.iter_cases``, no DICOM written), predicts each
on its lesion slice with the manifest box, and prints AUC, accuracy at P >= 0.5 and the share
of each class called malignant. A benchmark (quality on synthetic data), not a test:

    python benchmarks/model_on_phantoms.py                          # bundled model
    python benchmarks/model_on_phantoms.py --model path/to/model --cases 500 --seed 1234

Synthetic phantoms only: the numbers say nothing about real MRI.
"""
from __future__ import annotations

import argparse

import numpy as np


def evaluate(predictor, seed: int, n_cases: int, variation: float, workers: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from spinefx.phantom import iter_cases
    from spinefx.phantom.case import case_volumes

    y, p = [], []
    for row, case in iter_cases(seed=seed, n_cases=n_cases, n_malignant=n_cases // 2,
                                variation=variation, workers=workers, progress=True):
        t1, t2 = case_volumes(case)
        y.append(row["label"] == "malignant")
        p.append(predictor.predict_volumes(t1, t2, case.slice, box=case.box).probability)
    ya, pa = np.array(y), np.array(p)
    return {"variation": variation, "n": len(ya), "auc": float(roc_auc_score(ya, pa)),
            "accuracy": float(np.mean((pa >= 0.5) == ya)),
            "benign_called_malignant": float(np.mean(pa[~ya] >= 0.5)),
            "malignant_called_malignant": float(np.mean(pa[ya] >= 0.5))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--cases", type=int, default=120, help="cases per variation (half malignant)")
    ap.add_argument("--seed", type=int, default=77, help="cohort seed (never used in training)")
    ap.add_argument("--variation", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from spinefx.runtime.inference import Predictor

    predictor = Predictor(args.model) if args.model else Predictor()
    print("SYNTHETIC phantoms; say nothing about real MRI")
    print("| variation | n | AUC | accuracy at P >= 0.5 | benign called malignant | "
          "malignant called malignant |")
    print("|---|---|---|---|---|---|")
    for v in args.variation:
        r = evaluate(predictor, args.seed, args.cases, v, args.workers)
        print(f"| {v:g} | {r['n']} | {r['auc']:.3f} | {r['accuracy']:.1%} | "
              f"{r['benign_called_malignant']:.0%} | {r['malignant_called_malignant']:.0%} |",
              flush=True)


if __name__ == "__main__":
    main()
