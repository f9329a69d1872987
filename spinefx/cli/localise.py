"""``spinefx localise``: find, label and grade the vertebral bodies of one sagittal series
(:func:`spinefx.runtime.localise.localise_series`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import ANCHOR_HELP, ANCHOR_HINT, DISCLAIMER, EPILOG, level_anchor


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "localise", help="find, label and grade the vertebral bodies of a sagittal series",
        description="Segment the vertebral bodies of one sagittal series (the ONNX localiser, "
                    "torch-free), separate them, name their levels (counted up from S1 when "
                    "the sacrum is visible; otherwise the levels are marked uncertain) and "
                    "grade height loss (Genant) -> OUT/vertebrae.json, "
                    "OUT/vertebrae_mask.nii.gz, OUT/overview.png.", epilog=EPILOG)
    p.add_argument("study", type=Path, metavar="STUDY_OR_SERIES",
                   help="study folder, series folder, DICOM or NIfTI file")
    p.add_argument("--series", help="with a study folder: the series to use (UID, number, "
                   "description); default its sagittal T1, else T2")
    p.add_argument("--model", type=Path, help="localiser model folder "
                   "(default: weights/localiser/)")
    p.add_argument("--anchor", type=level_anchor, metavar="N=LEVEL", help=ANCHOR_HELP)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--json", action="store_true",
                   help="print vertebrae.json to stdout; files are still written")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from spinefx.runtime.localise import localise_series

    result = localise_series(args.study, args.out, series=args.series, model_dir=args.model,
                             anchor=args.anchor)
    doc = result.document
    human = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps(doc, indent=2))
    if not doc["vertebrae"]:
        print(f"no vertebra found: {doc['reason']}", file=human)
    for e in doc["vertebrae"]:
        grade = "not graded" if e["grade"] is None else (
            f"grade {e['grade']} ({e['shape']}, loss {e['height_loss']:.0%})")
        print(f"{e['level']:>4}  slice {e['slice']:>3}  box {e['box']}  {grade}", file=human)
    if doc["levels_uncertain"]:
        print(f"warning: levels uncertain: {doc['level_reason']} ({ANCHOR_HINT})",
              file=sys.stderr)
    print(DISCLAIMER, file=human)
    for name, path in result.files.items():
        print(f"{name}: {path}", file=human)
    return 0
