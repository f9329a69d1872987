"""CAM pointing game on SYNTHETIC malignant phantoms a model never saw.

A hit: the peak of the model's map (on the T1 lesion slice) lies inside the fractured vertebral
body's mask. Chance: the fraction of the ROI that is that body (a random point of the ROI).
Target (issue "A model worth showing"): >= 85% hits. Each map of ``--map`` is scored on the same
cases: ``cam`` (the graph's Grad-CAM, what the overlay shows by default) and ``occlusion``
(spinefx.runtime.occlusion, ``spinefx predict --map occlusion``). Not a test::

    python benchmarks/cam_pointing.py --model weights --cases 80 --variation 0 1 --map cam occlusion
    python benchmarks/cam_pointing.py --model weights --figure docs/map_methods.png --figure-cases 4
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from spinefx.phantom import render_case
from spinefx.phantom.case import case_volumes
from spinefx.runtime.inference import Predictor
from spinefx.runtime.occlusion import METHODS

TARGET = 0.85


def pointing_game(predictor: Predictor, cases: int, seed: int, variation: float) -> dict:
    """Hit rate, chance rate and a Wilson 95% CI over ``cases`` malignant phantoms."""
    hits, chance, where = [], [], []
    for s in range(seed, seed + cases):
        case = render_case(s, "malignant", 1.0, variation=variation)
        t1, t2 = case_volumes(case)
        p = predictor.predict_volumes(t1, t2, case.slice, box=case.box)
        body = case.vertebra_mask[case.slice] > 0
        r, c = np.unravel_index(np.argmax(p.cam_slice), p.cam_slice.shape)
        hits.append(bool(p.cam_slice.max() > 0 and body[r, c]))
        where.append(peak_place(case, int(r), int(c), body))
        x0, y0, x1, y1 = p.roi
        chance.append(float(body[max(y0, 0):y1, max(x0, 0):x1].mean()))
    n, k = len(hits), int(sum(hits))
    return {"variation": variation, "n": n, "hits": k, "rate": k / n,
            "ci95": wilson(k, n), "chance": float(np.mean(chance)), "seed": seed,
            "target": TARGET, "met": k / n >= TARGET,
            "peak_places": {place: where.count(place) for place in PLACES}}


PLACES = ("fractured body", "another body", "disc below it", "disc above it", "another disc",
          "elsewhere, behind the body's centre", "elsewhere, in front of it")


def peak_place(case, r: int, c: int, body: np.ndarray) -> str:
    """Where the map's peak lies on the lesion slice, from the phantom's masks: in the fractured
    body, another body, the disc just below or above it, another disc, or elsewhere (behind or
    in front of the fractured body's centre; posterior is the larger column in these phantoms:
    the canal lies to the right of the bodies)."""
    masks = case.masks("t1")
    bodies, discs = masks["bodies"][case.slice], masks["discs"][case.slice]
    if body[r, c]:
        return "fractured body"
    if bodies[r, c]:
        return "another body"
    if discs[r, c]:
        rows = np.nonzero(body.any(axis=1))[0]
        disc_rows = np.nonzero((discs == discs[r, c]).any(axis=1))[0]
        if disc_rows.mean() > rows.max() - 2 and disc_rows.min() - rows.max() < 6:
            return "disc below it"
        if disc_rows.mean() < rows.min() + 2 and rows.min() - disc_rows.max() < 6:
            return "disc above it"
        return "another disc"
    cols = np.nonzero(body.any(axis=0))[0]
    return ("elsewhere, behind the body's centre" if c > cols.mean()
            else "elsewhere, in front of it")


def map_figure(predictor: Predictor, path: Path, seed: int, cases: int, variation: float,
               methods: tuple[str, ...] = METHODS, side: int = 192) -> None:
    """One row per malignant phantom: the T1 ROI under each map, the fractured body outlined
    (green) and each map's peak marked (white cross); written with Pillow."""
    from PIL import Image, ImageDraw

    from spinefx.runtime.overlay import blend, window
    from spinefx.runtime.preprocess import crop

    head, pad = 22, 6
    sheet = Image.new("RGB", (pad + len(methods) * (side + pad), head + cases * (side + pad)),
                      (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    for j, method in enumerate(methods):
        draw.text((pad + j * (side + pad), 5), {"cam": "Grad-CAM (in the graph)",
                                                "occlusion": "occlusion (49 runs)"}[method],
                  fill=(230, 230, 230))
    for i, s in enumerate(range(seed, seed + cases)):
        case = render_case(s, "malignant", 1.0, variation=variation)
        t1, t2 = case_volumes(case)
        body = case.vertebra_mask[case.slice] > 0
        for j, method in enumerate(methods):
            predictor.map_method = method
            p = predictor.predict_volumes(t1, t2, case.slice, box=case.box)
            grey = window(np.nan_to_num(crop(np.nan_to_num(p.t1_slice), p.roi, fill=0.0)))
            rgb = blend(grey, p.cam_roi, 0.5)
            edge = crop(body.astype(np.float32), p.roi, fill=0.0) > 0.5
            inner = edge[1:-1, 1:-1] & edge[:-2, 1:-1] & edge[2:, 1:-1] & edge[1:-1, :-2] \
                & edge[1:-1, 2:]
            outline = edge.copy()
            outline[1:-1, 1:-1] &= ~inner
            rgb[outline] = (60, 230, 60)
            tile = Image.fromarray(rgb).resize((side, side), Image.Resampling.NEAREST)
            r, c = np.unravel_index(np.argmax(p.cam_roi), p.cam_roi.shape)
            scale = side / p.cam_roi.shape[0]
            x, y = (c + 0.5) * scale, (r + 0.5) * scale
            tile_draw = ImageDraw.Draw(tile)
            tile_draw.line([(x - 7, y - 7), (x + 7, y + 7)], fill=(255, 255, 255), width=3)
            tile_draw.line([(x - 7, y + 7), (x + 7, y - 7)], fill=(255, 255, 255), width=3)
            tile_draw.text((4, 4), f"seed {s}  P={p.probability:.2f}", fill=(255, 255, 255))
            sheet.paste(tile, (pad + j * (side + pad), head + i * (side + pad)))
    draw.text((pad, sheet.height - 14), "SYNTHETIC phantoms", fill=(255, 190, 90))
    sheet.save(path)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(centre - half, 4), round(centre + half, 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--cases", type=int, default=80, help="malignant phantoms per variation")
    ap.add_argument("--seed", type=int, default=5000, help="first phantom seed (never trained)")
    ap.add_argument("--variation", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--map", nargs="+", choices=METHODS, default=["cam"],
                    help="which maps to score (each on the same cases)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--figure", type=Path, default=None, metavar="PNG",
                    help="also draw the maps of the first --figure-cases phantoms (first "
                         "--variation) side by side, the fractured body outlined")
    ap.add_argument("--figure-cases", type=int, default=4)
    args = ap.parse_args()
    predictor = Predictor(args.model)
    if args.figure:
        map_figure(predictor, args.figure, args.seed, args.figure_cases, args.variation[0])
        print(f"figure: {args.figure}")
        if args.cases == 0:
            return
    print(f"SYNTHETIC phantoms; model {predictor.path}")
    print("| map | variation | n | peak in the fractured body | 95% CI | random point "
          "| target >= 85% |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for method in args.map:
        predictor.map_method = method
        for v in args.variation:
            r = {"map": method, **pointing_game(predictor, args.cases, args.seed, v)}
            rows.append(r)
            print(f"| {method} | {v:g} | {r['n']} | {r['rate']:.1%} "
                  f"| {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%} | {r['chance']:.1%} "
                  f"| {'pass' if r['met'] else 'miss'} |", flush=True)
    print("\nwhere the peak lies (cases): " + "; ".join(
        f"{r['map']}, variation {r['variation']:g}: " + ", ".join(
            f"{place} {count}" for place, count in r["peak_places"].items() if count)
        for r in rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
