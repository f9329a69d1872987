"""``spinefx inspect``: list the DICOM series of a study folder
(:func:`spinefx.runtime.scan_study`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import EPILOG


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect", help="list the DICOM series of a study folder (no patient data shown)",
        description="Scan a study folder (nested, any file names) and print one row per "
                    "series: plane, weighting (T1/T2/STIR/unknown), slices, matrix, spacing, "
                    "TR/TE. Never prints PatientName, PatientID or BirthDate.", epilog=EPILOG)
    p.add_argument("study", type=Path, help="folder (or file) holding DICOM files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)
    return p


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v, digits) for v in value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    from spinefx.runtime import scan_study

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
