"""`spinefx predict` as a Python API: one study -> result.json + overlay.png (+ DICOM capture),
or a manifest of cases -> predictions.csv, where one bad case is reported and skipped."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .cases import load_volume, read_manifest
from .dicom import SeriesInfo, StudyScan, load_series, scan_study
from .errors import RoiError, SeriesError, SpineFXError
from .inference import Prediction, Predictor
from .outputs import (atomic_write_bytes, atomic_write_json, atomic_write_png,
                      check_output_folder, write_secondary_capture)
from .overlay import render_overlay
from .preprocess import Box
from .volume import Volume

log = logging.getLogger("spinefx.runtime")


def choose_series(scan: StudyScan, weighting: str, key: str | None = None) -> SeriesInfo:
    """The series the user named (UID, number or description), else the only sagittal one of
    this weighting; several or none is an error listing what the study holds."""
    if key:
        return scan.find(key)
    hits = scan.by_weighting(weighting, "sagittal")
    if len(hits) == 1:
        return hits[0]
    names = "; ".join(f"#{s.series_number} '{s.description}' ({s.plane}, {s.weighting}, "
                      f"{s.n_slices} slices)" for s in scan.series) or "no image series"
    what = "several" if hits else "no"
    flag = "--t1" if weighting == "T1" else "--t2"
    raise SeriesError(f"{what} sagittal {weighting} series found; name one with {flag}. "
                      f"The study holds: {names}")


def load_pair(study: str | PathLike | None, t1: str | None = None,
              t2: str | None = None) -> tuple[Volume, Volume]:
    """T1 and T2 volumes from a study folder (auto or named series) or from explicit paths."""
    if t1 and t2 and Path(t1).exists() and Path(t2).exists():
        return load_volume(t1, "T1"), load_volume(t2, "T2")
    if study is None:
        raise SpineFXError("give a study folder, or --t1 and --t2 as paths")
    scan = scan_study(study)
    s1, s2 = choose_series(scan, "T1", t1), choose_series(scan, "T2", t2)
    if s1.series_uid == s2.series_uid:
        raise SeriesError(f"T1 and T2 are the same series ('{s1.description}')", study)
    return load_series(s1, weighting="T1"), load_series(s2, weighting="T2")


def _series_label(volume: Volume, weighting: str) -> str:
    number = volume.metadata.get("series_number")
    text = f"#{number} " if number is not None else ""
    return (text + (volume.description or f"{weighting} series")).strip()


@dataclass
class StudyResult:
    prediction: Prediction
    files: dict[str, Path]


def predict_study(predictor: Predictor, study: str | PathLike | None, out_dir: str | PathLike,
                  t1: str | None = None, t2: str | None = None, slice_index: int | None = None,
                  box: Box | None = None, center: tuple[float, float] | None = None,
                  size_mm: float | None = None, dicom: bool = False,
                  opacity: float = 0.45) -> StudyResult:
    inputs = [p for p in (study, t1, t2) if p and Path(p).exists()]
    out = check_output_folder(out_dir, inputs)
    vol1, vol2 = load_pair(study, t1, t2)
    if dicom and "study_uid" not in vol1.metadata:  # only DICOM loads carry a study
        raise SpineFXError("--dicom needs DICOM input (the capture joins the source study)")
    k = vol1.n_slices // 2 if slice_index is None else slice_index
    prediction = predictor.predict_volumes(vol1, vol2, k, box=box, center=center, size_mm=size_mm)
    summary = {**prediction.summary(), "slice": k,
               "synthetic_model": predictor.spec.synthetic,
               "disclaimer": "Research and teaching use only; not for diagnosis.",
               # series descriptions only: folder names of exports often carry patient names
               "inputs": {"t1": _series_label(vol1, "T1"), "t2": _series_label(vol2, "T2")}}
    note = "(model trained on SYNTHETIC phantoms)" if predictor.spec.synthetic else ""
    image = render_overlay(prediction.t1_slice, prediction.t2_slice, prediction.cam_slice,
                           prediction.roi, prediction.probability, prediction.threshold,
                           prediction.label, opacity=opacity, model_note=note)
    files = {"overlay": atomic_write_png(out / "overlay.png", image)}
    if dicom:
        source = vol1.slice_sources[k].split("#")[0]
        files["dicom"] = write_secondary_capture(out / "overlay_sc.dcm", image, source, summary)
    files["result"] = atomic_write_json(out / "result.json",
                                        {**summary, "files": {k: v.name for k, v in files.items()}})
    return StudyResult(prediction=prediction, files=files)


PREDICTION_COLUMNS = ("case_id", "label", "probability", "predicted", "threshold", "status",
                      "error")


def predict_manifest(predictor: Predictor, manifest: str | PathLike, out_dir: str | PathLike,
                     progress: bool = True, cases: Sequence | None = None) -> Path:
    """Score every case; a failing case gets status 'error' and its message, the batch goes on."""
    manifest = Path(manifest)
    cases = list(cases) if cases is not None else read_manifest(manifest)
    out = check_output_folder(out_dir, [])
    rows = []
    for case in tqdm(cases, desc="predict", unit="case", disable=not progress):
        row = {"case_id": case.case_id, "label": case.label or "", "threshold": predictor.threshold}
        try:
            p = predictor.predict_case(case)
            row.update(probability=f"{p.probability:.6f}", predicted=p.label, status="ok", error="")
        except SpineFXError as exc:
            log.warning("case %s skipped: %s", case.case_id, exc)
            row.update(probability="", predicted="", status="error", error=str(exc))
        rows.append(row)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PREDICTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = atomic_write_bytes(out / "predictions.csv", buf.getvalue().encode())
    n_bad = sum(r["status"] == "error" for r in rows)
    if n_bad:
        log.warning("%d of %d cases failed; see the 'error' column of %s", n_bad, len(rows), path)
    return path


def parse_numbers(text: str, n: int, what: str) -> tuple[float, ...]:
    """``n`` finite numbers from "a,b,c" (spaces or semicolons also separate), else a
    :class:`RoiError` naming ``what`` — the CLI's --box/--center and the demo's box field."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != n or not all(np.isfinite(values)):
        raise RoiError(f"{what} must be {n} numbers separated by commas, got {str(text)[:60]!r}")
    return values
