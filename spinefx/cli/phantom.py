"""``spinefx phantom``: write a synthetic phantom cohort
(:func:`spinefx.phantom.generate_cohort`)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ._common import EPILOG, UsageError, show_progress

MAX_CASES_PER_PATIENT = 6  # the fracture levels T11-L4 (spinefx.phantom.spine.LESION_LEVELS)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "phantom", help="write a synthetic phantom cohort (DICOM + manifest)",
        description="Write a SYNTHETIC cohort of sagittal T1W/T2W spine MRI phantoms, one "
                    "benign or malignant compression fracture per case, as real DICOM series, "
                    "with manifest.csv (labels, lesion slice, box, level, 15 imaging features, "
                    "patient) and masks (lesion, fractured body, every body and disc). Seeded "
                    "and deterministic.", epilog=EPILOG)
    p.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    p.add_argument("--cases", type=int, default=190, help="number of cases (default 190, as in "
                   "the paper)")
    p.add_argument("--malignant", type=int, default=50, help="how many are malignant (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--difficulty", type=float, default=1.0,
                   help="0 = textbook cases, 1 = the documented overlap, >=2 = the features "
                        "carry no class information")
    p.add_argument("--variation", type=float, default=1.0,
                   help="0 = the nominal (v1-like) look, 1 = full randomisation of contrast, "
                        "resolution, slices and artefacts (default 1)")
    p.add_argument("--cases-per-patient", type=int, default=1, metavar="K",
                   help=f"cases per patient, each another fractured level of one spine "
                        f"(1-{MAX_CASES_PER_PATIENT}, default 1); the label is the patient's")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write OUT/contact_sheet.png: lesion slices with box and label")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse impossible option values with a UsageError naming the option."""
    if args.cases < 1:
        raise UsageError(f"--cases must be at least 1, got {args.cases}")
    if not 0 <= args.malignant <= args.cases:
        raise UsageError(f"--malignant must be between 0 and --cases ({args.cases})")
    if not (math.isfinite(args.difficulty) and args.difficulty >= 0):
        raise UsageError(f"--difficulty must be a number >= 0, got {args.difficulty}")
    if not (math.isfinite(args.variation) and 0 <= args.variation <= 1):
        raise UsageError(f"--variation must be between 0 and 1, got {args.variation}")
    if not 1 <= args.cases_per_patient <= MAX_CASES_PER_PATIENT:
        raise UsageError(f"--cases-per-patient must be between 1 and {MAX_CASES_PER_PATIENT} "
                         f"(one fracture per level, T11-L4), got {args.cases_per_patient}")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    from spinefx.phantom import generate_cohort, write_contact_sheet

    manifest = generate_cohort(args.out, n_cases=args.cases, n_malignant=args.malignant,
                               seed=args.seed, difficulty=args.difficulty,
                               variation=args.variation,
                               cases_per_patient=args.cases_per_patient,
                               progress=show_progress(args))
    patients = ("" if args.cases_per_patient == 1
                else f", {args.cases_per_patient} cases per patient")
    print(f"SYNTHETIC cohort: {args.cases} cases ({args.malignant} malignant{patients}), "
          f"seed {args.seed}, difficulty {args.difficulty:g}, variation {args.variation:g}")
    print(f"manifest: {manifest}")
    if args.contact_sheet:
        sheet = write_contact_sheet(manifest, Path(args.out) / "contact_sheet.png")
        print(f"contact sheet: {sheet}")
    return 0
