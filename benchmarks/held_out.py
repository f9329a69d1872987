"""A model on a fresh, held-out SYNTHETIC phantom cohort (a seed never used for training or
selection): every metric with 95% CIs (DeLong AUC, Wilson proportions, bootstrap Brier/ECE),
the OOD flag rate, an ROC picture and the per-case predictions. The probability is the
runtime's (the manifest box fitted to the body the localiser finds under its centre,
:mod:`spinefx.runtime.roi_snap`); ``probability_as_given`` is the model at the manifest box
itself and ``probability_click_as_given`` the model at a centre click with the default box
(what a user gives, unfitted); each AUC is compared with the runtime's (paired DeLong). Not a
test::

    python benchmarks/held_out.py --model weights --cases 500 --seed 9001 --out held_out
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from spinefx.phantom import iter_cases
from spinefx.phantom.case import case_volumes
from spinefx.runtime import align_pair
from spinefx.runtime.inference import Predictor


def score_cohort(predictor: Predictor, cases: int, seed: int, variation: float,
                 malignant: int | None, workers: int) -> list[dict]:
    rows = []
    n_mal = cases // 2 if malignant is None else malignant
    for row, case in iter_cases(seed=seed, n_cases=cases, n_malignant=n_mal,
                                variation=variation, workers=workers, progress=True):
        t1, t2 = case_volumes(case)
        pair = align_pair(t1, t2)
        p = predictor.predict_pair(pair, case.slice, box=case.box)
        given = predictor.predict_pair(pair, case.slice, box=case.box, snap=False)
        x0, y0, x1, y1 = case.box
        click = predictor.predict_pair(pair, case.slice, snap=False,
                                       center=(float(np.floor((x0 + x1 - 1) / 2)),
                                               float(np.floor((y0 + y1 - 1) / 2))))
        rows.append({"case_id": row["case_id"], "label": row["label"],
                     "probability": round(p.probability, 6), "predicted": p.label,
                     "probability_as_given": round(given.probability, 6),
                     "probability_click_as_given": round(click.probability, 6),
                     "roi_snapped": str(bool(p.roi_snap and p.roi_snap["snapped"])).lower(),
                     "ood": "" if p.ood is None else str(p.ood_flagged).lower()})
    return rows


def main() -> None:
    from spinefx.train.metrics import binary_metrics
    from spinefx.train.plots import roc_plot

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--malignant", type=int, default=None, help="default: half")
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--variation", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    predictor = Predictor(args.model)
    rows = score_cohort(predictor, args.cases, args.seed, args.variation, args.malignant,
                        args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    y = np.array([r["label"] == "malignant" for r in rows], dtype=int)
    p = np.array([r["probability"] for r in rows])
    m = binary_metrics(y, p, predictor.threshold, bootstrap=1000, seed=0)
    flagged = sum(r["ood"] == "true" for r in rows)
    m["ood_flagged"] = {"n": flagged, "of": len(rows)}
    from spinefx.train.delong import auc_delong, delong_test

    as_given = np.array([r["probability_as_given"] for r in rows])
    m["as_given"] = {"auc": auc_delong(y, as_given),
                     "accuracy": float(np.mean((as_given >= predictor.threshold) == y)),
                     "delong_vs_runtime": delong_test(y, p, as_given),
                     "roi_snapped": sum(r["roi_snapped"] == "true" for r in rows)}
    click = np.array([r["probability_click_as_given"] for r in rows])
    m["click_as_given"] = {"auc": auc_delong(y, click),
                           "accuracy": float(np.mean((click >= predictor.threshold) == y)),
                           "delong_vs_runtime": delong_test(y, p, click)}
    m["cohort"] = {"seed": args.seed, "variation": args.variation, "synthetic": True,
                   "model": predictor.model_id}
    (args.out / "metrics.json").write_text(json.dumps(m, indent=2))
    roc_plot(y, p, args.out / "roc.png",
             title=f"ROC, {len(rows)} held-out SYNTHETIC phantoms (seed {args.seed})")
    a = m["auc"]
    print(f"SYNTHETIC held-out cohort: {len(rows)} cases ({int(y.sum())} malignant), seed "
          f"{args.seed}, variation {args.variation:g}; model {predictor.model_id}")
    print(f"AUC {a['value']:.3f} ({a['ci_low']:.3f}-{a['ci_high']:.3f})")
    for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        v = m[k]
        print(f"{k} {v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})")
    for k in ("brier", "ece"):
        v = m[k]
        print(f"{k} {v['value']:.3f} ({v.get('ci_low', float('nan')):.3f}-"
              f"{v.get('ci_high', float('nan')):.3f})")
    print(f"OOD flagged {flagged}/{len(rows)}; threshold {predictor.threshold:.3f}")
    g = m["as_given"]
    print(f"box fitted to the body on {g['roi_snapped']}/{len(rows)} cases; the model at the "
          f"manifest box as given: AUC {g['auc']['value']:.3f} ({g['auc']['ci_low']:.3f}-"
          f"{g['auc']['ci_high']:.3f}), accuracy {g['accuracy']:.3f}; paired DeLong vs the "
          f"runtime's: {g['delong_vs_runtime']}")
    c = m["click_as_given"]
    print(f"the model at a centre click with the default box, as given: AUC "
          f"{c['auc']['value']:.3f} ({c['auc']['ci_low']:.3f}-{c['auc']['ci_high']:.3f}), "
          f"accuracy {c['accuracy']:.3f}; paired DeLong vs the runtime's: "
          f"{c['delong_vs_runtime']}")


if __name__ == "__main__":
    main()
