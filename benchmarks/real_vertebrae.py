"""A model on real vertebrae without a malignant fracture: the DzZ T1/T2 pair in
``../shared/data/real-spine`` (one healthy subject, 9 manually traced vertebral bodies).

Each body at its centre slice with its mask's tight box, as a user would give it. Reports how
many are called malignant and how many the OOD check flags (issue target: at most 1 in 9
called malignant, or flagged as out of distribution; both numbers are reported). The other
real volumes here (vb3, spinesource, sct) have one contrast only, so they cannot feed a
T1 + T2 model. Not a test::

    python benchmarks/real_vertebrae.py --model weights
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spinefx.runtime import Volume
from spinefx.runtime.inference import Predictor

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-spine"


def dzz_vertebrae(folder: Path):
    """(t1, t2, [(label, slice, box)]) of the DzZ pair, bodies ordered top to bottom."""
    vols, labels = {}, None
    for name, weighting in (("t1", "T1"), ("t2", "T2")):
        with np.load(folder / f"dzz_{name}.npz", allow_pickle=False) as z:
            vols[name] = Volume.from_array(np.moveaxis(z["image"], 2, 0), pixel_spacing=(1.0, 1.0),
                                           slice_spacing=1.0, weighting=weighting)
            if name == "t1":
                labels = np.moveaxis(z["vertebral_bodies"], 2, 0)
    assert labels is not None
    bodies = []
    for lab in range(1, int(labels.max()) + 1):
        mask = labels == lab
        present = np.flatnonzero(mask.any(axis=(1, 2)))
        k = int(present[len(present) // 2])
        ys, xs = np.nonzero(mask[k])
        bodies.append((float(ys.mean()), lab, k,
                       (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return vols["t1"], vols["t2"], [b[1:] for b in sorted(bodies)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--data", type=Path, default=REAL)
    args = ap.parse_args()
    predictor = Predictor(args.model)
    t1, t2, bodies = dzz_vertebrae(args.data)
    print(f"REAL MRI (DzZ, healthy, no fracture label); model {predictor.path}")
    print("| body (top to bottom) | slice | box | P(malignant) | call | OOD |")
    print("|---|---|---|---|---|---|")
    malignant = flagged = either = 0
    for i, (lab, k, box) in enumerate(bodies, 1):
        p = predictor.predict_volumes(t1, t2, k, box=box)
        ood = "n/a" if p.ood is None else ("flagged" if p.ood_flagged else "no")
        malignant += p.label == "malignant"
        flagged += p.ood_flagged
        either += p.label == "malignant" or p.ood_flagged
        print(f"| {i} (label {lab}) | {k} | {list(box)} | {p.probability:.3f} | {p.label} | "
              f"{ood} |")
    n = len(bodies)
    print(f"\ncalled malignant: {malignant}/{n}; flagged OOD: {flagged}/{n}; malignant and not "
          f"flagged: {either - flagged}/{n} (target: at most 1 in 9 called malignant, or "
          f"flagged)")


if __name__ == "__main__":
    main()
