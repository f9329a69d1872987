"""`spinefx predict` as a Python API: one study -> result.json + overlay.png (+ DICOM capture),
or a manifest of cases -> predictions.csv, where one bad case is reported and skipped."""
from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from .cases import load_volume, read_manifest
from .errors import SpineFXError
from .files import atomic_write_csv
from .inference import Prediction, Predictor
from .outputs import check_output_folder
from .preprocess import Box
from .service import Result, analyse, parse_numbers, require_dicom, resolve_roi, write_outputs
from .study import SeriesPair, Study
from .study_analysis import analyse_spine, write_spine_outputs
from .volume import Volume

__all__ = ["PREDICTION_COLUMNS", "open_inputs", "parse_numbers", "predict_manifest",
           "predict_study"]

log = logging.getLogger("spinefx.runtime")


def open_inputs(study: str | PathLike | None, t1: str | None = None,
                t2: str | None = None) -> Study:
    """A :class:`Study` from a study folder, or from explicit T1/T2 paths (a DICOM folder or
    file, NIfTI, numpy volume or image each); with a folder, ``t1``/``t2`` may name series."""
    if t1 and t2 and Path(t1).exists() and Path(t2).exists():
        vol1 = load_volume(t1, "T1")
        if _same_path(t1, t2):
            vol2 = vol1  # pair_warnings says so loudly
        else:
            vol2 = load_volume(t2)  # the headers' weighting: a STIR stays STIR (and is noted)
            if vol2.weighting != "STIR":
                vol2.weighting = "T2"
        return Study.from_volumes({"t1": (volume_label(vol1, "T1"), vol1),
                                   "t2": (volume_label(vol2, "T2"), vol2)},
                                  title="T1/T2 files", kind="files")
    if study is None:
        raise SpineFXError("give a study folder, or --t1 and --t2 as paths")
    return Study.open(study)


def _same_path(a: str | PathLike, b: str | PathLike) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


def _in_study(exc: SpineFXError, where: str | PathLike | None) -> SpineFXError:
    """``exc`` with its message naming ``where`` (the study folder or manifest line), once."""
    if where is None or str(where) in str(exc):
        return exc
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = (f"{where}: {exc}",)
    return new


def volume_label(volume: Volume, weighting: str) -> str:
    number = volume.metadata.get("series_number")
    text = f"#{number} " if number is not None else ""
    return (text + (volume.description or f"{weighting} series")).strip()


def predict_study(predictor: Predictor, study: str | PathLike | None, out_dir: str | PathLike,
                  t1: str | None = None, t2: str | None = None, slice_index: int | None = None,
                  box: Box | None = None, center: tuple[float, float] | None = None,
                  size_mm: float | None = None, dicom: bool = False,
                  opacity: float = 0.45, allow_mixed: bool = False,
                  fractured_only: bool = False, levels: Sequence[str] = (),
                  localiser_dir: str | PathLike | None = None,
                  anchor: tuple[int, str] | None = None) -> Result:
    """`spinefx predict STUDY`: strict series choice (named, or the only sagittal T1/T2),
    then the service's analysis and files (result.json, overlay.png, + the DICOM capture).

    With no slice, box or centre (and no default box in the study) every vertebra is found
    and classified (:mod:`spinefx.runtime.study_analysis`; ``fractured_only``, ``levels``,
    ``localiser_dir``, ``anchor``: the user's correction of the level count): the returned
    result is the most suspicious vertebra's, its ``spine`` holds them all, and OUT also gets
    vertebrae.json, vertebrae_mask.nii.gz, overview.png."""
    inputs = [p for p in (study, t1, t2) if p and Path(p).exists()]
    check_output_folder(out_dir, inputs)
    opened = open_inputs(study, t1, t2)
    whole_spine = (slice_index is None and box is None and center is None
                   and opened.default_box is None)
    try:
        pair = (SeriesPair("t1", "t2") if opened.kind == "files"
                else opened.choose_pair(t1, t2, "strict", allow_mixed=allow_mixed))
        if dicom:
            require_dicom(opened, pair)
        if whole_spine:
            spine = analyse_spine(predictor, opened, pair, fractured_only, levels,
                                  localiser_dir, anchor)
        else:
            roi = resolve_roi(opened.volume(pair.t1), predictor.config, slice_index, box, center,
                              size_mm, opened.default_slice, opened.default_box)
            result = analyse(predictor, opened, pair, roi)
    except SpineFXError as exc:
        where = study if opened.kind != "files" else f"T1 {t1}"  # the grid the ROI is on
        raise _in_study(exc, where) from exc
    if whole_spine:
        write_spine_outputs(spine, opened, out_dir, inputs, dicom=dicom, opacity=opacity)
        return spine.primary
    write_outputs(result, opened, out_dir, inputs, dicom=dicom, opacity=opacity)
    return result


PREDICTION_COLUMNS = ("case_id", "label", "probability", "predicted", "threshold", "ood",
                      "ood_score", "roi_snapped", "status", "error")


def _ood_cells(prediction: Prediction) -> dict[str, str]:
    """predictions.csv's ``ood`` (true/false; empty when the model has no OOD check) and
    ``ood_score``."""
    if prediction.ood is None:
        return {"ood": "", "ood_score": ""}
    score = prediction.ood["score"]
    return {"ood": "true" if prediction.ood["flagged"] else "false",
            "ood_score": "" if score is None else f"{score:.4f}"}


def predict_manifest(predictor: Predictor, manifest: str | PathLike, out_dir: str | PathLike,
                     progress: bool = True, cases: Sequence | None = None,
                     allow_outside: bool = False) -> Path:
    """Score every case; a failing case gets status 'error' and its message (naming the
    manifest line), the batch goes on. Series must lie inside the manifest's folder unless
    ``allow_outside``. The progress bar shows on a terminal only (tqdm decides;
    ``progress=False`` hides it everywhere)."""
    manifest = Path(manifest)
    cases = list(cases) if cases is not None else read_manifest(manifest,
                                                                allow_outside=allow_outside)
    out = check_output_folder(out_dir, [])
    rows = []
    for case in tqdm(cases, desc="predict", unit="case", disable=None if progress else True):
        row = {"case_id": case.case_id, "label": case.label or "", "threshold": predictor.threshold}
        try:
            p = predictor.predict_case(case)
            row.update(probability=f"{p.probability:.6f}", predicted=p.label, status="ok", error="",
                       roi_snapped="" if p.roi_snap is None else str(p.roi_snap["snapped"]).lower(),
                       **_ood_cells(p))
        except SpineFXError as exc:
            line = getattr(case, "line", None)
            where = f"{manifest} line {line}" if line else f"{manifest} case {case.case_id}"
            message = str(_in_study(exc, where))
            log.warning("case %s skipped: %s", case.case_id, message)
            row.update(probability="", predicted="", status="error", error=message, ood="",
                       ood_score="", roi_snapped="")
        rows.append(row)
    path = atomic_write_csv(out / "predictions.csv", PREDICTION_COLUMNS, rows)
    n_ood = sum(r["ood"] == "true" for r in rows)
    if n_ood:
        log.warning("%d of %d cases are unlike the model's training data (ood = true in %s); "
                    "their probabilities are not meaningful", n_ood, len(rows), path)
    n_bad = sum(r["status"] == "error" for r in rows)
    if n_bad:
        log.warning("%d of %d cases failed; see the 'error' column of %s", n_bad, len(rows), path)
    return path
