"""The `spinefx` command line: one sub-command per job, each a thin shell over a Python API.

Errors the user can fix (bad files, bad options) print one line naming the file and the
problem and exit with status 2; they never show a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from ._version import __version__

EPILOG = ("Research and teaching software, not a medical device. "
          "Docs: README.md; data model: DESIGN.md.")


# ---------------------------------------------------------------------------------------------
# phantom
# ---------------------------------------------------------------------------------------------
def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom", help="write a synthetic phantom cohort (DICOM + manifest)",
        description="Write a SYNTHETIC cohort of sagittal T1W/T2W spine MRI phantoms, one "
                    "benign or malignant compression fracture per case, as real DICOM series, "
                    "with manifest.csv (labels, lesion slice, box, level, 15 imaging features) "
                    "and lesion masks. Seeded and deterministic.", epilog=EPILOG)
    p.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    p.add_argument("--cases", type=int, default=190, help="number of cases (default 190, as in "
                   "the paper)")
    p.add_argument("--malignant", type=int, default=50, help="how many are malignant (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--difficulty", type=float, default=1.0,
                   help="0 = textbook cases, 1 = the documented overlap, >1 = harder")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write OUT/contact_sheet.png: lesion slices with box and label")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    if not 0 <= args.malignant <= args.cases or args.cases < 1:
        raise UsageError(f"--malignant must be between 0 and --cases ({args.cases})")
    from .phantom import generate_cohort, write_contact_sheet

    manifest = generate_cohort(args.out, n_cases=args.cases, n_malignant=args.malignant,
                               seed=args.seed, difficulty=args.difficulty,
                               progress=not args.no_progress)
    print(f"SYNTHETIC cohort: {args.cases} cases ({args.malignant} malignant), seed {args.seed}")
    print(f"manifest: {manifest}")
    if args.contact_sheet:
        sheet = write_contact_sheet(manifest, Path(args.out) / "contact_sheet.png")
        print(f"contact sheet: {sheet}")
    return 0


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------
def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="list the DICOM series of a study folder (no patient data shown)",
        description="Scan a study folder (nested, any file names) and print one row per "
                    "series: plane, weighting (T1/T2/STIR/unknown), slices, matrix, spacing, "
                    "TR/TE. Never prints PatientName, PatientID or BirthDate.", epilog=EPILOG)
    p.add_argument("study", type=Path, help="folder (or file) holding DICOM files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_run_inspect)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v, digits) for v in value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _run_inspect(args: argparse.Namespace) -> int:
    from .runtime import scan_study

    scan = scan_study(args.study)
    rows = [s.summary() for s in scan.series]
    if args.json:
        print(json.dumps({"series": rows, "skipped": [{"file": str(p), "reason": r}
                                                      for p, r in scan.skipped]}, indent=2))
        return 0 if rows else 1
    header = ("#", "description", "modality", "plane", "weighting", "slices", "matrix",
              "spacing mm", "slice mm", "TR/TE ms")
    table = [header] + [(
        _fmt(r["series_number"]), r["description"] or "-", r["modality"] or "-", r["plane"],
        r["weighting"], str(r["slices"]), r["matrix"], _fmt(r["pixel_spacing_mm"], 2),
        _fmt(r["slice_spacing_mm"], 1), f"{_fmt(r['tr_ms'], 0)}/{_fmt(r['te_ms'], 0)}")
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if scan.skipped:
        print(f"\nskipped {len(scan.skipped)} file(s):")
        for path, reason in scan.skipped[:20]:
            print(f"  {path}: {reason}")
        if len(scan.skipped) > 20:
            print(f"  ... and {len(scan.skipped) - 20} more")
    if not rows:
        print(f"no DICOM image series found under {args.study}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------
def _add_predict(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import logging

    from .runtime.inference import Predictor
    from .runtime.predict import parse_numbers, predict_manifest, predict_study

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
    box = parse_numbers(args.box, 4, "--box") if args.box else None
    center = parse_numbers(args.center, 2, "--center") if args.center else None
    result = predict_study(predictor, args.study, args.out, t1=args.t1, t2=args.t2,
                           slice_index=args.slice, box=box, center=center,
                           size_mm=args.size_mm, dicom=args.dicom, opacity=args.opacity)
    p = result.prediction
    print(f"P(malignant) = {p.probability:.3f} -> {p.label} (threshold {p.threshold:.2f}); "
          "research use, not for diagnosis")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
class UsageError(Exception):
    """A bad combination of options (argparse checks single options)."""


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from .demo.cli import add_demo_parser  # argparse only; gradio loads when the demo runs

    add_demo_parser(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    # argparse-only modules: torch, scikit-learn and matplotlib load when a command runs
    from .train.cli import add_train_parser
    from .train.evaluation import add_evaluate_parser
    from .train.readers import add_readers_parser

    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_readers_parser(sub)


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .export.cli import add_bench_parser, add_export_parser  # argparse only: torch loads later

    from .export.publish import add_publish_parser  # huggingface_hub loads when it runs

    add_export_parser(sub)
    add_bench_parser(sub)
    add_publish_parser(sub)


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_phantom, _add_inspect, _add_train, _add_export, _add_predict, _add_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinefx",
        description="Benign vs malignant vertebral compression fracture on sagittal spine MRI "
                    "(ResNet50 on T1W+T2W, lesion slice and neighbours = 6 channels).",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"spinefx {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # users need the sentence, not our source line
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from .runtime.errors import SpineFXError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    try:
        return int(args.run(args) or 0)
    except (SpineFXError, UsageError, FileExistsError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `spinefx inspect ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
