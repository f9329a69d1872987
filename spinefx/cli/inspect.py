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
    from spinefx.runtime.study import Study

    study = Study.open(args.study)
    rows = [{**e.row, "series_uid": e.series_uid} for e in study.entries.values()]
    for row in rows:
        row.pop("status", None)
    if args.json:
        print(json.dumps({"series": rows, "studies": study.n_studies,
                          "skipped": [{"file": str(p), "reason": r}
                                      for p, r in study.skipped]}, indent=2))
        return 0 if rows else 1
    header = ("study", "#", "description", "modality", "plane", "weighting", "slices",
              "matrix", "spacing mm", "slice mm", "TR/TE ms", "unreadable")
    table = [header] + [(
        str(r["study"]), _fmt(r["series_number"]), r["description"] or "-",
        r["modality"] or "-", r["plane"], r["weighting"], str(r["slices"]), r["matrix"],
        _fmt(r["pixel_spacing_mm"], 2), _fmt(r["slice_spacing_mm"], 1),
        f"{_fmt(r['tr_ms'], 0)}/{_fmt(r['te_ms'], 0)}", str(r.get("unreadable_files") or "-"))
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if study.n_studies > 1:
        print(f"\n{study.n_studies} studies in this folder (the 'study' column is an anonymous "
              "index): analyse one study at a time")
    if study.skipped:
        print(f"\nskipped {len(study.skipped)} file(s):")
        for path, reason in study.skipped[:20]:
            print(f"  {path}: {reason}")
        if len(study.skipped) > 20:
            print(f"  ... and {len(study.skipped) - 20} more")
    if not rows:
        print(f"no DICOM image series found under {args.study}", file=sys.stderr)
        return 1
    return 0
