"""``spinefx predict``: the torch-free ONNX model on one study or a manifest
(:func:`spinefx.runtime.predict.predict_study` / ``predict_manifest``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import (
    ANCHOR_HELP,
    ANCHOR_HINT,
    DISCLAIMER,
    EPILOG,
    UsageError,
    level_anchor,
    positive_int,
)


def _opacity(text: str) -> float:
    """An argparse type: a number within [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}") \
            from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _size_mm(text: str) -> float:
    """An argparse type: a box side in mm within the manifest's range (5..300)."""
    lo, hi = 5.0, 300.0  # spinefx.runtime.cases.SIZE_MM_RANGE (tests keep them equal)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of mm, got {text!r}") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be within {lo:g}..{hi:g} mm, got {text}")
    return value


def _slice(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a slice index, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _box_line(snap: dict) -> str:
    """Which box the model saw (result.json's ``roi_snap``), in one line."""
    given = ",".join(f"{v:g}" for v in snap["box_given"])
    if snap["snapped"]:
        return (f"box: {given} fitted to the vertebral body under its centre: "
                f"{','.join(f'{v:g}' for v in snap['box'])} (--keep-box to use it as given)")
    return f"box: {given} used as given ({snap['reason'].removeprefix('box kept: ')})"


def _ood_line(ood: dict | None, reason: str) -> str:
    """One line on the out-of-distribution check (its warning, when flagged, is printed with
    the other warnings)."""
    if ood is None:
        return f"out-of-distribution check: none ({reason})"
    verdict = ("FLAGGED: this input is unlike the model's training data" if ood["flagged"]
               else "within the training data's range")
    return (f"out-of-distribution check: score {ood['score']} (threshold "
            f"{ood['threshold']}): {verdict}")


def _print_vertebrae(spine: dict, out) -> None:
    """One line per vertebra (predict without a box), then which one the result is about."""
    for e in spine["vertebrae"]:
        grade = "grade -" if e["grade"] is None else f"grade {e['grade']}"
        if e["probability"] is None:
            verdict = f"not classified ({e['error']})" if e.get("error") else "not classified"
        else:
            ood = "OOD FLAGGED" if e["ood"] and e["ood"]["flagged"] else (
                "ood ok" if e["ood"] else "ood n/a")
            verdict = f"P = {e['probability']:.3f} {e['label']:<9} {ood}"
        print(f"{e['level']:>4}  slice {e['slice']:>3}  {grade}  {verdict}", file=out)
    if spine["levels_uncertain"]:
        print(f"warning: levels uncertain: {spine['level_reason']} ({ANCHOR_HINT})",
              file=sys.stderr)
    for note in spine["localise_notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"most suspicious: {spine['most_suspicious']['level']} (classified: "
          f"{spine['classified']}; the lines below are about it)", file=out)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", help="malignancy probability + Grad-CAM overlay for a study or a manifest",
        description="Run the ONNX model (torch-free) on one study -> OUT/result.json, "
                    "OUT/overlay.png (and with --dicom a Secondary Capture in the source study), "
                    "or on every case of a manifest -> OUT/predictions.csv. Without --box and "
                    "--center every vertebra is found (the localiser, weights/localiser/), "
                    "graded and classified: result.json lists them, OUT/overview.png shows "
                    "them, OUT/vertebrae.json and vertebrae_mask.nii.gz are written as by "
                    "'spinefx localise'. Without --model the "
                    "bundled demonstration model (trained on SYNTHETIC phantoms) is used.",
        epilog=EPILOG)
    p.add_argument("study", nargs="?", type=Path, help="study folder (DICOM, any layout)")
    p.add_argument("--t1", help="T1 series: UID, series number, description, or a path")
    p.add_argument("--t2", help="T2 series: UID, series number, description, or a path")
    p.add_argument("--slice", type=_slice, help="lesion slice index on the T1 grid, with "
                   "--box or --center (default: the middle slice)")
    roi = p.add_mutually_exclusive_group()
    roi.add_argument("--box", help="x0,y0,x1,y1 in T1 pixels around the vertebral body")
    roi.add_argument("--center", help="x,y of the vertebral body centre in T1 pixels")
    p.add_argument("--size-mm", type=_size_mm,
                   help="box side in mm for --center, 5..300 (default: the model's)")
    p.add_argument("--keep-box", action="store_true",
                   help="give the model the box (or --center box) as given; by default it is "
                        "fitted to the vertebral body the localiser finds under its centre")
    p.add_argument("--map", choices=("cam", "occlusion"), default="cam",
                   help="the overlay's map: cam (Grad-CAM, computed in the ONNX graph; free) "
                        "or occlusion (the probability drop when each 32 px square is hidden: "
                        "49 more model runs per vertebra, points into the fractured body far "
                        "more often; see the README)")
    p.add_argument("--fractured-only", action="store_true",
                   help="without --box/--center: classify only the vertebrae graded >= 1 "
                        "(height loss >= 20%%) and any named with --level (default: all)")
    p.add_argument("--level", action="append", default=[], metavar="LEVEL",
                   help="with --fractured-only: also classify this level (e.g. L2; repeat)")
    p.add_argument("--anchor", type=level_anchor, metavar="N=LEVEL",
                   help="without --box/--center: " + ANCHOR_HELP + " (before --level and "
                        "--fractured-only choose)")
    p.add_argument("--localiser", type=Path, help="vertebral-body localiser model folder "
                   "for predict without --box (default: weights/localiser/)")
    p.add_argument("--manifest", type=Path, help="score every case of this manifest instead")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--variant", help="ONNX variant from model.json (fp32, int8)")
    p.add_argument("--threads", type=positive_int, help="onnxruntime intra-op threads (>= 1)")
    p.add_argument("--opacity", type=_opacity, default=0.45, help="overlay opacity 0..1")
    p.add_argument("--dicom", action="store_true", help="also write OUT/overlay_sc.dcm")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--force-pairing", action="store_true",
                   help="pair T1 and T2 even when their headers say they come from different "
                        "patients or studies (the result notes it)")
    p.add_argument("--allow-outside", action="store_true",
                   help="with --manifest: allow series paths outside the manifest's folder")
    p.add_argument("--json", action="store_true",
                   help="print the result document (result.json) to stdout; files are "
                        "still written")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it shows on a terminal only)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from spinefx.runtime.predict import parse_numbers, predict_manifest, predict_study

    if args.manifest is None and args.study is None and not (args.t1 and args.t2):
        raise UsageError("give a STUDY folder, --t1 and --t2 paths, or --manifest")
    if args.manifest is None and args.slice is not None and not (args.box or args.center):
        raise UsageError("--slice needs --box x0,y0,x1,y1 or --center x,y (without all three "
                         "every vertebra is found and classified)")
    if (args.box or args.center) and (args.fractured_only or args.level or args.localiser
                                      or args.anchor):
        raise UsageError("--fractured-only, --level, --anchor and --localiser are for predict "
                         "without --box/--center")
    if args.manifest is not None and args.json:
        raise UsageError("--json prints one study's result; with --manifest read "
                         "OUT/predictions.csv")
    # the ROI is checked before the model loads (a typo costs no model load)
    box: tuple[float, float, float, float] | None = None
    center: tuple[float, float] | None = None
    if args.manifest is None and args.box:
        from spinefx.runtime.cases import MAX_BOX_SIDE, MAX_COORDINATE
        from spinefx.runtime.service import parse_box

        parsed = parse_box(args.box)  # 4 finite numbers, not empty
        assert parsed is not None
        if (max(parsed[2] - parsed[0], parsed[3] - parsed[1]) > MAX_BOX_SIDE
                or max(abs(v) for v in parsed) > MAX_COORDINATE):
            raise UsageError(f"--box {args.box[:60]!r} is far larger than any image "
                             f"(a side may be at most {MAX_BOX_SIDE} px)")
        box = parsed
    if args.manifest is None and args.center:
        cx, cy = parse_numbers(args.center, 2, "--center")
        center = (cx, cy)
    cases = None
    if args.manifest is not None:  # a bad manifest costs no model load either
        from spinefx.runtime.cases import read_manifest

        cases = read_manifest(args.manifest, allow_outside=args.allow_outside)
    from spinefx.runtime.inference import Predictor

    # our own lines (which provider ran, skipped cases) at INFO; libraries only when they warn
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("spinefx").setLevel(logging.INFO)
    predictor = Predictor(args.model, variant=args.variant, threads=args.threads,
                          snap_roi=not args.keep_box, map_method=args.map)
    if predictor.spec.synthetic:
        print("note: this model was trained on SYNTHETIC phantoms; it is a pipeline "
              "demonstration, not a clinical model", file=sys.stderr)
    if args.manifest is not None:
        path = predict_manifest(predictor, args.manifest, args.out, progress=not args.no_progress,
                                cases=cases)
        print(f"predictions: {path}")
        return 0
    result = predict_study(predictor, args.study, args.out, t1=args.t1, t2=args.t2,
                           slice_index=args.slice, box=box, center=center,
                           size_mm=args.size_mm, dicom=args.dicom, opacity=args.opacity,
                           allow_mixed=args.force_pairing, fractured_only=args.fractured_only,
                           levels=args.level, localiser_dir=args.localiser,
                           anchor=args.anchor)
    for warning in result.warnings:  # also in result.json ("warnings")
        print(f"warning: {warning}", file=sys.stderr)
    p = result.prediction
    human = sys.stderr if args.json else sys.stdout
    if args.json:  # the document result.json holds, as written
        print(json.dumps(json.loads(result.files["result"].read_text()), indent=2))
    if result.spine is not None:
        _print_vertebrae(result.spine, human)
    print(f"P(malignant) = {p.probability:.3f} -> {p.label} (threshold {p.threshold:.2f}). "
          f"{DISCLAIMER}", file=human)
    print(_ood_line(p.ood, p.ood_reason), file=human)
    if p.roi_snap is not None:
        print(_box_line(p.roi_snap), file=human)
    for name, path in result.files.items():
        print(f"{name}: {path}", file=human)
    return 0
