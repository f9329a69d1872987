"""Train, export and validate the vertebral-body localiser into weights/localiser/.

    .venv/bin/python tools/train_localiser.py --steps 1200 --phantoms 32 --max-minutes 25

Data: phantom v2 cases (SYNTHETIC, variation 1, T1 and T2 series of each) plus the vb3 real
subjects 01-44 from ../shared/data/real-spine. Validation, all through the shipped ONNX file
and :func:`spinefx.runtime.segmentation.segment_bodies`: vb3 subjects 45-54 and DzZ T1/T2
(inside each column's labelled band, see ``spinefx.train.seg_data.labelled_band``) and
held-out phantoms (seeds never trained on, every body labelled).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_SPINE = REPO.parent / "shared" / "data" / "real-spine"
HELD_OUT_PHANTOM_SEED = 900_000


def _log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def validate(model_dir: Path, real_root: Path, phantom_seeds: range) -> dict:
    """Dice of the shipped ONNX model, end to end through ``segment_bodies``."""
    from spinefx.runtime.segmentation import segment_bodies
    from spinefx.train.seg_data import VB3_VALID, dice, labelled_band, load_real, phantom_sources

    def summary(values: dict[str, float], how: str) -> dict:
        v = np.array(list(values.values()))
        return {"dice_median": round(float(np.median(v)), 4),
                "dice_min": round(float(v.min()), 4), "n": len(v), "counted": how,
                "per_case": {k: round(x, 4) for k, x in values.items()}}

    band = "inside each column's labelled band (L1 top - 3 px .. L5 bottom + 3 px for vb3)"
    vb3 = {}
    for n in VB3_VALID:
        image, mask = load_real(real_root / "vb3" / f"vb3_{n:02d}.npz")
        vb3[f"vb3_{n:02d}"] = dice(segment_bodies(image, (1.0, 1.0, 1.0), model_dir), mask,
                                   labelled_band(mask))
    dzz = {}
    for name in ("dzz_t1", "dzz_t2"):
        image, mask = load_real(real_root / f"{name}.npz")
        dzz[name] = dice(segment_bodies(image, (1.0, 1.0, 1.0), model_dir), mask,
                         labelled_band(mask))
    phantoms = {}
    for src in phantom_sources(phantom_seeds):
        spacing = (3.0, *src.spacing)
        phantoms[src.name] = dice(segment_bodies(src.image, spacing, model_dir), src.mask)
    return {"vb3_45_54": summary(vb3, band), "dzz": summary(dzz, band.split(" (")[0]),
            "held_out_phantoms_SYNTHETIC": summary(phantoms, "whole volume, every body labelled")}


def time_segmentation(model_dir: Path, repeats: int = 5) -> dict[str, float]:
    """Median seconds of ``segment_bodies`` (2 ORT threads) on a 15 x 512^2 series (a SYNTHETIC
    phantom's T1 resampled to 512^2) at 0.5, 0.7 and 0.9 mm pixels, session already open."""
    from spinefx.phantom import render_case
    from spinefx.runtime.segmentation import resample_slices, segment_bodies

    t1 = render_case(7, "benign", variation=1.0, n_slices=15).t1
    image = resample_slices(t1, (t1.shape[1] / 512, t1.shape[2] / 512), (512, 512))
    out = {}
    for pixel in (0.5, 0.7, 0.9):
        segment_bodies(image, (4.0, pixel, pixel), model_dir)
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            segment_bodies(image, (4.0, pixel, pixel), model_dir)
            seconds.append(time.perf_counter() - t0)
        out[f"15x512x512_at_{pixel}mm_s"] = round(float(np.median(seconds)), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--phantoms", type=int, default=32, help="training phantom cases")
    parser.add_argument("--held-out-phantoms", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=112, help="training crop (pixels)")
    parser.add_argument("--channels", default="8,16,32,64,128", help="U-Net widths per level")
    parser.add_argument("--out", type=Path, default=REPO / "weights" / "localiser")
    parser.add_argument("--real-spine", type=Path, default=REAL_SPINE)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--init-onnx", type=Path, default=None,
                        help="fine-tune this exported localiser (its model.json beside it)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="also save the torch state_dict here (for fine-tuning; not shipped)")
    parser.add_argument("--sacrum-from", type=Path, default=None,
                        help="a localiser folder whose bodies below vb3's L5 label the sacrum "
                             "there (default: the sacrum counts only inside vb3's L1-L5 band)")
    parser.add_argument("--fracture-edge-weight", type=float, default=1.0,
                        help="loss weight of the pixels near the fractured body's outline "
                             "(phantoms; 1 = no extra weight)")
    parser.add_argument("--time-only", action="store_true",
                        help="only time segment_bodies with the model in --out; train nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.time_only:
        for key, seconds in time_segmentation(args.out).items():
            print(f"{key}: {seconds}")
        return 0

    from spinefx.train.seg_data import (
        EDGE_PX,
        FOCUS_P,
        FOV_CUT_P,
        SACRUM_P,
        VB3_TRAIN,
        phantom_sources,
        vb3_sources,
    )
    from spinefx.train.segmentation import (
        TrainConfig,
        config_record,
        export_onnx,
        load_onnx_weights,
        n_parameters,
        onnx_parity,
        train_localiser,
    )

    t0 = time.perf_counter()
    _log(f"rendering {args.phantoms} phantoms (SYNTHETIC)")
    phantoms = phantom_sources(range(args.seed * 10_000, args.seed * 10_000 + args.phantoms),
                               edge_weight=args.fracture_edge_weight)
    real = vb3_sources(args.real_spine, VB3_TRAIN, sacrum_model=args.sacrum_from)
    _log(f"data ready: {len(phantoms)} phantom series, {len(real)} vb3 subjects "
         f"({time.perf_counter() - t0:.0f}s)")
    config = TrainConfig(steps=args.steps, seed=args.seed, max_minutes=args.max_minutes,
                         size=args.size, lr=args.lr,
                         channels=tuple(int(c) for c in args.channels.split(",")))
    init = None if args.init_onnx is None else load_onnx_weights(args.init_onnx, config.channels)
    result = train_localiser([phantoms, real], config, _log, init=init)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is not None:
        torch.save(result.model.state_dict(), args.checkpoint)
    model_path = args.out / "model.onnx"
    export = export_onnx(result.model, model_path)
    probe = np.random.default_rng(1).random((2, 1, 96, 112)).astype(np.float32)
    export["parity_max_abs_vs_torch"] = onnx_parity(result.model, model_path, probe)
    _log(f"exported {export['bytes']} bytes, parity {export['parity_max_abs_vs_torch']:.2e}")
    card = {
        "name": "spinefx vertebral-body localiser",
        "note": "trained on SYNTHETIC phantoms plus real vb3 masks; a demonstration, not a "
                "clinical device",
        "file": "model.onnx", "sha256": export["sha256"], "bytes": export["bytes"],
        "input": {"name": "input", "shape": ["batch", 1, "rows", "cols"],
                  "rows_cols_multiple": 16, "pixel_mm": config.pixel_mm,
                  "normalisation": {"method": "per-slice percentiles -> [0, 1], clipped to "
                                              "[-0.5, 1.5]; zero padding bottom/right",
                                    "percentiles": [1.0, 99.0]},
                  "series": "one sagittal series, any weighting; 2-D per slice"},
        "output": {"name": "probability", "shape": ["batch", 1, "rows", "cols"],
                   "meaning": "P(vertebral body), sigmoid in the graph"},
        "outputs": [{"name": "probability", "meaning": "P(vertebral body)"},
                    {"name": "sacrum", "meaning": "P(sacral body: S1 and the fused segments "
                                                  "below), the anchor of the level count"}],
        "architecture": {"type": "2-D U-Net", "channels": list(config.channels),
                         "parameters": n_parameters(result.model)},
        "training": {
            "data": f"synthetic phantoms (phantom v2, variation 1, seeds "
                    f"{args.seed * 10_000}..{args.seed * 10_000 + args.phantoms - 1}, T1 and "
                    f"T2 series, all bodies T1-S3 and the sacrum labelled, {FOCUS_P:.0%} of "
                    f"phantom crops centred on the fractured body and {SACRUM_P:.0%} on the "
                    f"sacrum; {FOV_CUT_P:.0%} with the field of view ended at a random "
                    f"row" + ("" if args.fracture_edge_weight == 1.0 else
                              f"; the loss {args.fracture_edge_weight:g}x within "
                              f"{EDGE_PX} px of the fractured body's outline") +
                    ") + vb3 subjects 01-44 (real, L1-L5 labelled; loss counted inside "
                    "each column's labelled band, sacrum 0 there" +
                    ("" if args.sacrum_from is None else
                     "; the sacrum below L5: the bodies the localiser fine-tuned from finds "
                     "there, counted everywhere") + ")",
            "config": config_record(config), **result.summary(),
            "loss_per_window": result.losses,
            "command": " ".join([".venv/bin/python", "tools/train_localiser.py",
                                 *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
            "torch": torch.__version__, "threads": 1},
        "export": export,
    }
    if args.init_onnx is not None:
        from spinefx.runtime.segmentation import file_sha256

        parent = json.loads((args.init_onnx.parent / "model.json").read_text())
        card["training"]["data"] = ("fine-tuned from the model below on " +
                                    card["training"]["data"])
        card["training"]["fine_tuned_from"] = {"sha256": file_sha256(args.init_onnx),
                                               "training": parent["training"],
                                               "validation": parent.get("validation")}
    (args.out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    _log("validating through segment_bodies")
    held_out = range(HELD_OUT_PHANTOM_SEED, HELD_OUT_PHANTOM_SEED + args.held_out_phantoms)
    card["validation"] = validate(args.out, args.real_spine, held_out)
    card["validation"]["held_out_phantom_seeds"] = [held_out.start, held_out.stop - 1]
    (args.out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    for key, value in card["validation"].items():
        if isinstance(value, dict):
            _log(f"{key}: Dice median {value['dice_median']} (min {value['dice_min']}, "
                 f"n={value['n']})")
    _log(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
