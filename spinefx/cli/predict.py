"""``spinefx predict``: the torch-free ONNX model on one study or a manifest
(:func:`spinefx.runtime.predict.predict_study` / ``predict_manifest``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import DISCLAIMER, EPILOG, UsageError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", help="malignancy probability + Grad-CAM overlay for a study or a manifest",
        description="Run the ONNX model (torch-free) on one study -> OUT/result.json, "
                    "OUT/overlay.png (and with --dicom a Secondary Capture in the source study), "
                    "or on every case of a manifest -> OUT/predictions.csv. Without --model the "
                    "bundled demonstration model (trained on SYNTHETIC phantoms) is used.",
        epilog=EPILOG)
    p.add_argument("study", nargs="?", type=Path, help="study folder (DICOM, any layout)")
    p.add_argument("--t1", help="T1 series: UID, series number, description, or a path")
    p.add_argument("--t2", help="T2 series: UID, series number, description, or a path")
    p.add_argument("--slice", type=int, help="lesion slice index on the T1 grid "
                   "(default: the middle slice)")
    roi = p.add_mutually_exclusive_group()
    roi.add_argument("--box", help="x0,y0,x1,y1 in T1 pixels around the vertebral body")
    roi.add_argument("--center", help="x,y of the vertebral body centre in T1 pixels")
    p.add_argument("--size-mm", type=float, help="box side for --center (default: the model's)")
    p.add_argument("--manifest", type=Path, help="score every case of this manifest instead")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--variant", help="ONNX variant from model.json (fp32, int8)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--opacity", type=float, default=0.45, help="overlay opacity 0..1")
    p.add_argument("--dicom", action="store_true", help="also write OUT/overlay_sc.dcm")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import logging

    from spinefx.runtime.inference import Predictor
    from spinefx.runtime.predict import parse_numbers, predict_manifest, predict_study

    if args.manifest is None and args.study is None and not (args.t1 and args.t2):
        raise UsageError("give a STUDY folder, --t1 and --t2 paths, or --manifest")
    if args.manifest is None and not (args.box or args.center):
        raise UsageError("say where the vertebra is: --box x0,y0,x1,y1 or --center x,y")
    # our own lines (which provider ran, skipped cases) at INFO; libraries only when they warn
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("spinefx").setLevel(logging.INFO)
    predictor = Predictor(args.model, variant=args.variant, threads=args.threads)
    if predictor.spec.synthetic:
        print("note: this model was trained on SYNTHETIC phantoms; it is a pipeline "
              "demonstration, not a clinical model", file=sys.stderr)
    if args.manifest is not None:
        path = predict_manifest(predictor, args.manifest, args.out, progress=not args.no_progress)
        print(f"predictions: {path}")
        return 0
    box: tuple[float, float, float, float] | None = None
    center: tuple[float, float] | None = None
    if args.box:
        x0, y0, x1, y1 = parse_numbers(args.box, 4, "--box")  # exactly 4, or RoiError
        box = (x0, y0, x1, y1)
    if args.center:
        cx, cy = parse_numbers(args.center, 2, "--center")
        center = (cx, cy)
    result = predict_study(predictor, args.study, args.out, t1=args.t1, t2=args.t2,
                           slice_index=args.slice, box=box, center=center,
                           size_mm=args.size_mm, dicom=args.dicom, opacity=args.opacity)
    p = result.prediction
    print(f"P(malignant) = {p.probability:.3f} -> {p.label} (threshold {p.threshold:.2f}). "
          f"{DISCLAIMER}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0
