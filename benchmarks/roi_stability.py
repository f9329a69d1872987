"""How much a model's P moves when the ROI box moves, on SYNTHETIC phantoms it never saw.

For each held-out phantom (half malignant; rendered in memory by ``spinefx.phantom.iter_cases``)
P is taken at the manifest box, then |dP| for seven perturbations of that box:

* ``shift 3 px``: the box moved by -3 / +3 px in x and in y (4 per case);
* ``scale 20%``:  the box grown and shrunk 20% about its centre (2 per case);
* ``centre click``: the pixel at the box's centre with the model's default box size (1 per case).

Prints median and 95th percentile |dP| per family and overall against the target of issue
"A model worth showing" (median <= 0.05, 95th percentile <= 0.15).

By default the predictor is the runtime's (``Predictor()``): every box or click is fitted to the
vertebral body the localiser finds under its centre (:mod:`spinefx.runtime.roi_snap`), as users
get it; the manifest box is fitted too, and the table also gives ``snap vs manifest box``, the
|dP| between the fitted box and the manifest box as given (what the model alone still moves
by). ``--no-snap`` measures the model alone, every box as given. A benchmark, not a test:

    python benchmarks/roi_stability.py                               # bundled model
    python benchmarks/roi_stability.py --no-snap                     # the model alone
    python benchmarks/roi_stability.py --cases 20 --variation 1 --curve docs/roi_fitting.png
    python benchmarks/roi_stability.py --model DIR --cases 120 --seed 4242 --variation 0 1 \\
        --json roi.json

Synthetic phantoms only: the numbers say nothing about real MRI.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

TARGET_MEDIAN = 0.05
TARGET_P95 = 0.15
SHIFT_PX = 3
SCALE = 0.20
FAMILIES = ("shift 3 px", "scale 20%", "centre click")
REFERENCE = "snap vs manifest box"   # not a perturbation: not in "overall"

Box = tuple[float, float, float, float]


def shifted_boxes(box: Box, shift: float = SHIFT_PX) -> list[Box]:
    """The box moved by -shift / +shift pixels in x, then in y (size unchanged)."""
    x0, y0, x1, y1 = box
    return [(x0 + d, y0, x1 + d, y1) for d in (-shift, shift)] + \
           [(x0, y0 + d, x1, y1 + d) for d in (-shift, shift)]


def scaled_boxes(box: Box, scale: float = SCALE) -> list[Box]:
    """The box grown and shrunk by ``scale`` of each side, about its centre."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx - hw * f, cy - hh * f, cx + hw * f, cy + hh * f) for f in (1 + scale, 1 - scale)]


def centre_pixel(box: Box) -> tuple[float, float]:
    """The pixel a user clicks in the middle of the box (x1/y1 are exclusive edges)."""
    x0, y0, x1, y1 = box
    return float(np.floor((x0 + x1 - 1) / 2)), float(np.floor((y0 + y1 - 1) / 2))


def case_deltas(predictor, t1, t2, slice_index: int, box: Box) -> tuple[float, dict]:
    """P at ``box`` and |dP| per family for one case (T2 aligned once, as the service does)."""
    from spinefx.runtime import align_pair

    pair = align_pair(t1, t2)

    def p_at(**roi: Any) -> float:
        return predictor.predict_pair(pair, slice_index, **roi).probability

    p0 = p_at(box=box)
    deltas: dict[str, list[float]] = {
        "shift 3 px": [abs(p_at(box=b) - p0) for b in shifted_boxes(box)],
        "scale 20%": [abs(p_at(box=b) - p0) for b in scaled_boxes(box)],
        # size_mm=None: the model's preprocess config supplies default_size_mm, as in a click
        "centre click": [abs(p_at(center=centre_pixel(box), size_mm=None) - p0)],
    }
    if getattr(predictor, "snap_roi", False):
        as_given = predictor.predict_pair(pair, slice_index, box=box, snap=False).probability
        deltas[REFERENCE] = [abs(as_given - p0)]
    return p0, deltas


def summarise(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    median, p95 = float(np.median(arr)), float(np.percentile(arr, 95))
    return {"n": int(arr.size), "median": median, "p95": p95, "max": float(arr.max()),
            "pass": bool(median <= TARGET_MEDIAN and p95 <= TARGET_P95)}


def evaluate(predictor, seed: int, n_cases: int, variation: float, workers: int) -> dict:
    from spinefx.phantom import iter_cases
    from spinefx.phantom.case import case_volumes

    per_family: dict[str, list[float]] = {f: [] for f in FAMILIES}
    reference: list[float] = []
    for _row, case in iter_cases(seed=seed, n_cases=n_cases, n_malignant=n_cases // 2,
                                 variation=variation, workers=workers, progress=True):
        t1, t2 = case_volumes(case)
        x0, y0, x1, y1 = (float(v) for v in case.box)
        _p0, deltas = case_deltas(predictor, t1, t2, case.slice, (x0, y0, x1, y1))
        reference.extend(deltas.pop(REFERENCE, []))
        for family, values in deltas.items():
            per_family[family].extend(values)
    rows = {family: summarise(values) for family, values in per_family.items()}
    rows["overall"] = summarise([v for values in per_family.values() for v in values])
    if reference:
        rows[REFERENCE] = summarise(reference)
    return {"variation": variation, "seed": seed, "n_cases": n_cases, "families": rows}


def shift_curve(predictor, seed: int, n_cases: int, variation: float, shifts: list[int],
                path: str) -> dict:
    """|dP| against the box's shift (px, along x and y, both signs) for the runtime (boxes
    fitted to the body) and the model alone (as given), one picture: ``path`` (PNG)."""
    from spinefx.phantom import iter_cases
    from spinefx.phantom.case import case_volumes
    from spinefx.runtime import align_pair

    found: dict[str, dict[int, list[float]]] = {"fitted": {}, "as given": {}}
    for _row, case in iter_cases(seed=seed, n_cases=n_cases, n_malignant=n_cases // 2,
                                 variation=variation, progress=True):
        pair = align_pair(*case_volumes(case))
        x0, y0, x1, y1 = (float(v) for v in case.box)
        for name, snap in (("fitted", True), ("as given", False)):
            p0 = predictor.predict_pair(pair, case.slice, box=(x0, y0, x1, y1), snap=snap)
            for d in shifts:
                moved = [(x0 + e, y0, x1 + e, y1) for e in (-d, d)] + \
                        [(x0, y0 + e, x1, y1 + e) for e in (-d, d)]
                found[name].setdefault(d, []).extend(
                    abs(predictor.predict_pair(pair, case.slice, box=b, snap=snap).probability
                        - p0.probability) for b in moved)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, colour in (("as given", "tab:red"), ("fitted", "tab:blue")):
        med = [float(np.median(found[name][d])) for d in shifts]
        p95 = [float(np.percentile(found[name][d], 95)) for d in shifts]
        label = "box as given (the model alone)" if name == "as given" else \
            "box fitted to the body (the runtime)"
        ax.plot(shifts, med, "-o", color=colour, label=f"{label}: median")
        ax.plot(shifts, p95, "--", color=colour, label=f"{label}: 95th percentile")
    ax.axhline(TARGET_P95, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("box shift (pixels, in x or y)")
    ax.set_ylabel("|change in P(malignant)|")
    ax.set_title(f"{n_cases} held-out SYNTHETIC phantoms (seed {seed}, variation {variation:g})",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {name: {str(d): float(np.median(v)) for d, v in per.items()}
            for name, per in found.items()}


def print_table(result: dict) -> None:
    print(f"\n**variation {result['variation']:g}** ({result['n_cases']} SYNTHETIC cases, "
          f"seed {result['seed']})\n")
    print(f"| perturbation | n | median abs(dP) | p95 abs(dP) | max abs(dP) | "
          f"target (median <= {TARGET_MEDIAN}, p95 <= {TARGET_P95}) |")
    print("|---|---|---|---|---|---|")
    for family, r in result["families"].items():
        print(f"| {family} | {r['n']} | {r['median']:.3f} | {r['p95']:.3f} | {r['max']:.3f} | "
              f"{verdict(family, r)} |", flush=True)


def verdict(family: str, row: dict) -> str:
    if family == REFERENCE:
        return "not a target: the fitted box vs the manifest box as given"
    return "pass" if row["pass"] else "miss"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--cases", type=int, default=120, help="cases per variation (half malignant)")
    ap.add_argument("--seed", type=int, default=4242, help="cohort seed (never used in training)")
    ap.add_argument("--variation", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--workers", type=int, default=1, help="phantom rendering processes")
    ap.add_argument("--no-snap", action="store_true",
                    help="the model alone: boxes as given, not fitted to the body")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--curve", default=None, metavar="PNG",
                    help="only draw |dP| against the box's shift, fitted and as given, for the "
                         "first --variation (needs matplotlib)")
    args = ap.parse_args(argv)
    from spinefx.runtime.inference import Predictor

    predictor = Predictor(args.model, snap_roi=not args.no_snap)
    print(f"SYNTHETIC phantoms; say nothing about real MRI. Model {predictor.model_id}; "
          f"centre click box {predictor.config.default_size_mm:g} mm (model default); "
          + ("boxes as given (--no-snap: the model alone)" if args.no_snap else
             "boxes fitted to the localiser's body under their centre (the runtime's default)"))
    if args.curve:
        medians = shift_curve(predictor, args.seed, args.cases, args.variation[0],
                              [0, 1, 2, 3, 4, 6, 8], args.curve)
        print(f"wrote {args.curve}; median |dP| by shift: {json.dumps(medians)}")
        return 0
    results = []
    for variation in args.variation:
        result = evaluate(predictor, args.seed, args.cases, variation, args.workers)
        print_table(result)
        results.append(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"synthetic": True, "model": predictor.model_id, "snap": not args.no_snap,
                       "default_size_mm": predictor.config.default_size_mm,
                       "target": {"median": TARGET_MEDIAN, "p95": TARGET_P95},
                       "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
