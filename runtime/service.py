"""The one application layer: a request about a :class:`Study` -> a :class:`Result`.

The CLI (`spinefx predict`), the demo (page and API) and the workstation node all call
:func:`analyse`; what they show or write comes from :meth:`Result.to_json` and
:func:`write_outputs`, so the same case gives the same document everywhere.

Owned here: the ROI resolver and input validation (:func:`resolve_roi`), the result schema
(:class:`Result`), and the output files (:func:`write_outputs`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .errors import RoiError, SpineFXError
from .explain import explain_prediction
from .files import atomic_write_json
from .inference import Prediction, Predictor
from .matching import AlignedPair
from .ood import OOD_WARNING, spacing_warning, t2_kind, t2_kind_warning, trained_on_kind
from .outputs import atomic_write_png, check_output_folder, write_secondary_capture
from .overlay import render_overlay
from .preprocess import MAX_BOX_FACTOR, Box, PreprocessConfig, box_from_center
from .provenance import DISCLAIMER, SYNTHETIC_CAPTION
from .study import PairPolicy, SeriesPair, Study
from .volume import Volume

log = logging.getLogger("spinefx.runtime")


# ---------------------------------------------------------------------------------------------
# Where the lesion is: one resolver, one validation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Roi:
    """The lesion slice on the T1 grid and the box around the vertebral body (T1 pixels)."""
    slice_index: int
    box: Box
    center: tuple[float, float] | None = None   # when the box came from a centre click
    size_mm: float | None = None


def parse_numbers(text: str, n: int, what: str) -> tuple[float, ...]:
    """``n`` finite numbers from "a,b,c" (spaces or semicolons also separate), else a
    :class:`RoiError` naming ``what`` — the CLI's --box/--center and the demo's fields."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != n or not all(np.isfinite(values)):
        raise RoiError(f"{what} must be {n} numbers separated by commas, got {str(text)[:60]!r}")
    return values


def parse_box(text: str | None) -> Box | None:
    """A box from text ('' or None -> None); an empty box is an error."""
    if text is None or not str(text).strip():
        return None
    x0, y0, x1, y1 = parse_numbers(text, 4, "the box (x0, y0, x1, y1)")
    if not (x1 > x0 and y1 > y0):
        raise RoiError(f"box {format_box((x0, y0, x1, y1))} is empty: need x0 < x1 and y0 < y1")
    return (x0, y0, x1, y1)


def parse_point(text: str | None, what: str = "the centre (x, y)") -> tuple[float, float] | None:
    if text is None or not str(text).strip():
        return None
    x, y = parse_numbers(text, 2, what)
    return (x, y)


def format_box(box: Box | tuple[float, ...]) -> str:
    return ", ".join(f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}" for v in box)


def check_slice(t1: Volume, k: Any) -> int:
    if k is None or (isinstance(k, float) and not math.isfinite(k)):
        raise RoiError("choose a lesion slice")
    k = int(k)
    if not 0 <= k < t1.n_slices:
        raise RoiError(f"slice {k} is outside the series (0..{t1.n_slices - 1})")
    return k


#: A box side may be at most this many times the image's larger dimension.


def check_box(t1: Volume, box: Box) -> None:
    """A box must be finite, not empty, not far larger than the image (side <=
    :data:`MAX_BOX_FACTOR` x the larger image dimension) and overlap the image (ROIs that
    cross the edge are padded)."""
    h, w = t1.data.shape[1:]
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise RoiError(f"box must be 4 finite numbers, got {tuple(box)!r}"[:120])
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise RoiError(f"box ({format_box(box)}) is empty: need x0 < x1 and y0 < y1")
    limit = MAX_BOX_FACTOR * max(h, w)
    if max(x1 - x0, y1 - y0) > limit:
        raise RoiError(f"box ({format_box(box)}) is {x1 - x0:.0f}x{y1 - y0:.0f} px, far larger "
                       f"than the {w}x{h} image (a side may be at most {limit} px)")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise RoiError(f"box ({format_box(box)}) lies outside the {w}x{h} image")


def box_at(t1: Volume, center: tuple[float, float], size_mm: float) -> Box:
    """The box of a centre click; the point must lie on the image."""
    h, w = t1.data.shape[1:]
    x, y = center
    if not (0 <= x < w and 0 <= y < h):
        raise RoiError(f"point ({x:.0f}, {y:.0f}) lies outside the {w}x{h} image")
    if not (math.isfinite(size_mm) and size_mm > 0):
        raise RoiError(f"box size must be a positive number of mm, got {size_mm}")
    return box_from_center(center, float(size_mm), t1.pixel_spacing)


def resolve_roi(t1: Volume, config: PreprocessConfig, slice_index: int | None = None,
                box: Box | None = None, center: tuple[float, float] | None = None,
                size_mm: float | None = None, default_slice: int | None = None,
                default_box: Box | None = None) -> Roi:
    """The one rule: slice = given (>= 0), else the study's default, else the middle; box =
    given, else centre + size (default ``config.default_size_mm``), else the study's default;
    nothing at all is an error that says what to give."""
    if box is not None and center is not None:
        raise RoiError("give either a box or a centre point, not both")
    if slice_index is None or (isinstance(slice_index, (int, float)) and slice_index < 0):
        slice_index = default_slice if default_slice is not None else t1.n_slices // 2
    k = check_slice(t1, slice_index)
    size = float(size_mm) if size_mm else config.default_size_mm
    if box is None and center is not None:
        box = box_at(t1, center, size)
    if box is None:
        box = default_box
    if box is None:
        raise RoiError("say where the vertebra is: give a box 'x0,y0,x1,y1' or a centre 'x,y' "
                       "(T1 pixels)")
    box = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    check_box(t1, box)
    return Roi(k, box, center, size if center is not None else None)


# ---------------------------------------------------------------------------------------------
# The result document
# ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    """One analysed case: the prediction and what it was computed from (no PHI)."""
    prediction: Prediction
    roi: Roi
    pair: SeriesPair
    series: dict[str, str]                      # {'t1': label, 't2': label}
    synthetic_model: bool
    study_notes: list[str] = field(default_factory=list)
    truth: dict | None = None
    warnings: list[str] = field(default_factory=list)   # loud: the CLI also prints them
    files: dict[str, Path] = field(default_factory=dict)
    # predict without a box (runtime.study_analysis): every vertebra, this one the most
    # suspicious; merged into the document after the single-prediction fields
    spine: dict | None = None
    # the threshold's meaning, calibration, OOD verdict and the map in plain words
    explanation: dict | None = None

    def to_json(self) -> dict:
        """The one result document: the CLI's result.json, the demo's details and API."""
        out = {"status": "ok", **self.prediction.summary(), "slice": self.roi.slice_index,
               "box": [round(v, 3) for v in self.roi.box],
               "synthetic_model": self.synthetic_model, "disclaimer": DISCLAIMER,
               "series": dict(self.series), "study_notes": list(self.study_notes),
               "warnings": list(self.warnings)}
        if self.explanation is not None:
            out["explanation"] = self.explanation
        if self.truth is not None:
            out["truth"] = self.truth
        if self.spine is not None:
            out.update(self.spine)
        if self.files:
            out["files"] = {k: v.name for k, v in self.files.items()}
        return out

    def overlay(self, opacity: float = 0.45) -> Image.Image:
        p = self.prediction
        note = f"({SYNTHETIC_CAPTION})" if self.synthetic_model else ""
        return render_overlay(p.t1_slice, p.t2_slice, p.cam_slice, p.roi, p.probability,
                              p.threshold, p.label, opacity=opacity, model_note=note,
                              map_method=p.map_method)


def error_json(exc: BaseException) -> dict:
    return {"status": "error", "error": str(exc)}


def analyse(predictor: Predictor, study: Study, pair: SeriesPair, roi: Roi) -> Result:
    """Predict one case of ``study``: decode the chosen pair (once), align it (once), run."""
    aligned: AlignedPair = study.aligned(pair)
    t0 = time.perf_counter()
    prediction = predictor.predict_pair(aligned, roi.slice_index, box=roi.box)
    log.info("prediction p=%.3f in %.0f ms", prediction.probability,
             (time.perf_counter() - t0) * 1e3)
    return make_result(predictor, study, pair, roi, prediction)


def make_result(predictor: Predictor, study: Study, pair: SeriesPair, roi: Roi,
                prediction: Prediction) -> Result:
    """The :class:`Result` of ``prediction`` on ``roi``: series, notes, warnings and the plain
    words of :func:`~spinefx.runtime.explain.explain_prediction` (one place for every path)."""
    return Result(prediction=prediction, roi=roi, pair=pair,
                  series={"t1": study.entries[pair.t1].label, "t2": study.entries[pair.t2].label},
                  synthetic_model=predictor.spec.synthetic,
                  study_notes=[*study.notes, *pair.notes], truth=study.truth,
                  warnings=input_warnings(predictor, study, pair, prediction),
                  explanation=explain_prediction(prediction, predictor.spec.raw,
                                                 predictor.spec.synthetic))


def input_warnings(predictor: Predictor, study: Study, pair: SeriesPair,
                   prediction: Prediction) -> list[str]:
    """:func:`pair_warnings`, then inputs unlike the model's training cases (slice spacing, T2
    kind; from model.json's ``training_data``) and the OOD flag, each in plain words."""
    raw = predictor.spec.raw
    t1, t2 = study.volume(pair.t1), study.volume(pair.t2)  # decoded already: cached
    kind = t2_kind(t2.description, t2.weighting)
    out = [w for w in pair_warnings(study, pair)
           if not (w == STIR_WARNING and trained_on_kind(raw, "STIR"))]  # it saw STIR
    for warning in (spacing_warning(raw, t1.slice_spacing, "T1"),
                    t2_kind_warning(raw, kind), OOD_WARNING if prediction.ood_flagged else None):
        if warning and warning not in out:
            out.append(warning)
    return out


#: What :func:`pair_warnings` says when the T2 channel is a STIR series.
STIR_WARNING = "T2 channel is a STIR series: the model was trained on T2W"
SAME_SERIES_WARNING = ("T1 and T2 are the same series: the model needs a T1-weighted and a "
                       "T2-weighted series; this result is not meaningful")


def pair_warnings(study: Study, pair: SeriesPair) -> list[str]:
    """Loud notes about the chosen pair: the same series twice, STIR used as T2."""
    out: list[str] = []
    e1, e2 = study.entries[pair.t1], study.entries[pair.t2]
    v1, v2 = e1.volume, e2.volume
    same = pair.t1 == pair.t2 or (bool(e1.series_uid) and e1.series_uid == e2.series_uid)
    if v1 is not None and v2 is not None:
        same = same or v1 is v2 or bool(v1.series_uid and v1.series_uid == v2.series_uid) \
            or bool(v1.source and v1.source == v2.source)
    if same:
        out.append(SAME_SERIES_WARNING)
    if e2.weighting == "STIR" or (v2 is not None and v2.weighting == "STIR"):
        out.append(STIR_WARNING)
    return out


def analyse_study(predictor: Predictor, study: Study, t1: str | None = None,
                  t2: str | None = None, policy: PairPolicy = "strict",
                  slice_index: int | None = None, box: Box | None = None,
                  center: tuple[float, float] | None = None,
                  size_mm: float | None = None) -> Result:
    """Choose the pair, resolve the ROI, analyse: what every front end does."""
    pair = study.choose_pair(t1, t2, policy)
    t1_volume = study.volume(pair.t1)
    roi = resolve_roi(t1_volume, predictor.config, slice_index, box, center, size_mm,
                      study.default_slice, study.default_box)
    return analyse(predictor, study, pair, roi)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
OVERLAY_FILE, RESULT_FILE, CAPTURE_FILE = "overlay.png", "result.json", "overlay_sc.dcm"


def write_outputs(result: Result, study: Study, out_dir: str | PathLike,
                  inputs: Sequence[str | PathLike] = (), dicom: bool = False,
                  opacity: float = 0.45,
                  extra_files: dict[str, Path] | None = None) -> dict[str, Path]:
    """overlay.png, result.json (+ overlay_sc.dcm with ``dicom``), each written atomically;
    refuses an output folder inside an input folder and never replaces an input file.
    ``extra_files``: files the caller wrote there already (listed in result.json, kept)."""
    out = check_output_folder(out_dir, list(inputs))
    if dicom:
        require_dicom(study, result.pair)
    image = result.overlay(opacity)
    files = {**(extra_files or {}), "overlay": atomic_write_png(out / OVERLAY_FILE, image)}
    if dicom:
        files["dicom"] = write_secondary_capture(out / CAPTURE_FILE, image,
                                                 dicom_source(study, result), result.to_json())
    result.files = dict(files)
    files["result"] = atomic_write_json(out / RESULT_FILE, result.to_json())
    result.files = files
    remove_stale_outputs(out, files)
    return files


#: Every file a prediction may write (only these are ever removed as stale). Localise's files
#: (vertebrae.json, ...) are not: `spinefx localise` may have written them there on purpose.
OUTPUT_FILES = (OVERLAY_FILE, RESULT_FILE, CAPTURE_FILE)


def remove_stale_outputs(out: Path, written: dict[str, Path]) -> list[Path]:
    """Remove spinefx outputs of an earlier run in ``out`` that this run did not write (an
    overlay_sc.dcm beside a new result.json would describe another prediction)."""
    keep = {p.name for p in written.values()}
    removed = []
    for name in OUTPUT_FILES:
        stale = out / name
        if name not in keep and (stale.is_symlink() or stale.is_file()):
            stale.unlink()
            log.info("removed %s from an earlier run", stale)
            removed.append(stale)
    return removed


def require_dicom(study: Study, pair: SeriesPair) -> None:
    """A Secondary Capture joins the source study: only DICOM input has one."""
    if "study_uid" not in study.volume(pair.t1).metadata:
        raise SpineFXError("--dicom needs DICOM input (the capture joins the source study)")


def dicom_source(study: Study, result: Result) -> str:
    """The DICOM file of the T1 lesion slice (the capture references it)."""
    t1 = study.volume(result.pair.t1)
    return t1.slice_sources[result.roi.slice_index].split("#")[0]
