"""``spinefx readers``: simulate reader calls for a manifest
(:func:`spinefx.train.readers.simulate_readers`), labelled SIMULATED."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EPILOG

# The stage's default readers (spinefx.train.readers.DEFAULT_READERS; tests/test_cli.py keeps
# them equal) for the help text, spelled here so that `spinefx readers --help` loads no stage.
DEFAULT_READERS_TEXT = "senior=0.98,0.98, resident_4th_year=0.96,0.96, resident_1st_year=0.78,0.61"


def _reader_spec(text: str) -> tuple[str, tuple[float, float]]:
    try:
        name, rates = text.split("=", 1)
        sens, spec = (float(v) for v in rates.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=SENS,SPEC (e.g. senior=0.98,0.98), got {text!r}") from None
    if not name.strip() or not (0 <= sens <= 1 and 0 <= spec <= 1):
        raise argparse.ArgumentTypeError(f"need a name and rates within [0, 1], got {text!r}")
    return name.strip(), (sens, spec)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "readers", help="simulate reader calls for a manifest (labelled SIMULATED)",
        description="Write a SIMULATED readers CSV (case_id,reader,call,simulated) for the "
                    "labelled cases of a manifest, each reader hitting its sensitivity and "
                    "specificity exactly (rounded to whole cases), so `spinefx evaluate` can "
                    "run the paper's reader comparison end to end on phantoms. "
                    f"Default readers (Yeh et al. 2022): {DEFAULT_READERS_TEXT}. On a phantom "
                    "cohort no reader is simulated better than its ground-truth features "
                    "permit: a sensitivity above the feature oracle's out-of-fold ROC at the "
                    "reader's specificity is lowered onto it (printed).",
        epilog=EPILOG)
    p.add_argument("--manifest", required=True, type=Path, help="manifest.csv with labels")
    p.add_argument("--out", required=True, type=Path, help="readers CSV to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--reader", action="append", type=_reader_spec, metavar="NAME=SENS,SPEC",
                   help="a reader to simulate (repeatable; replaces the defaults)")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow series paths outside the manifest's folder")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from spinefx.runtime import read_manifest
    from spinefx.runtime.errors import ManifestError
    from spinefx.train.readers import (
        DEFAULT_READERS,
        achieved_rates,
        simulate_readers,
        write_readers_csv,
    )

    cases = [c for c in read_manifest(args.manifest, allow_outside=args.allow_outside)
             if c.label is not None]
    if not cases:
        raise ManifestError("no labelled cases to simulate readers on", args.manifest)
    readers = dict(args.reader) if args.reader else DEFAULT_READERS
    readers = _held_to_the_phantom(args.manifest, cases, readers, args.seed)
    calls = simulate_readers(cases, readers, seed=args.seed)
    path = write_readers_csv(calls, args.out)
    rates = achieved_rates(calls, {c.case_id: c.label for c in cases if c.label is not None})
    print(f"SIMULATED readers on {len(cases)} cases, seed {args.seed}:")
    for name, r in rates.items():
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"  {name}: accuracy {fmt(r['accuracy'])}, sensitivity {fmt(r['sensitivity'])}, "
              f"specificity {fmt(r['specificity'])}")
    print(f"readers: {path}")
    return 0


def _held_to_the_phantom(manifest: Path, cases: list, readers: dict, seed: int) -> dict:
    """On a phantom cohort (its flags are the truth the images were drawn from), cap each
    reader at what a reader who sees every feature perfectly reaches (spinefx.train.oracle)."""
    from spinefx.phantom import is_cohort

    if not is_cohort(Path(manifest).parent):
        return readers
    from spinefx.train.oracle import cap_readers, feature_oracle_roc

    roc = feature_oracle_roc(cases, seed=seed)
    if roc is None:
        return readers
    capped, notes = cap_readers(readers, roc)
    for note in notes:
        print(f"held to what the phantom permits: {note}")
    return capped
