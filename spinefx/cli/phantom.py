"""``spinefx phantom``: write a synthetic phantom cohort
(:func:`spinefx.phantom.generate_cohort`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EPILOG, UsageError, show_progress


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.malignant <= args.cases or args.cases < 1:
        raise UsageError(f"--malignant must be between 0 and --cases ({args.cases})")
    from spinefx.phantom import generate_cohort, write_contact_sheet

    manifest = generate_cohort(args.out, n_cases=args.cases, n_malignant=args.malignant,
                               seed=args.seed, difficulty=args.difficulty,
                               progress=show_progress(args))
    print(f"SYNTHETIC cohort: {args.cases} cases ({args.malignant} malignant), seed {args.seed}")
    print(f"manifest: {manifest}")
    if args.contact_sheet:
        sheet = write_contact_sheet(manifest, Path(args.out) / "contact_sheet.png")
        print(f"contact sheet: {sheet}")
    return 0
