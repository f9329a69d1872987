"""The whole spine with no click: localise every vertebra, then classify each with :func:`analyse`.

``spinefx predict STUDY`` without ``--box``/``--center`` lands here (issue 13, "Done when"):
the localiser runs on the T1 series (on T2, resliced onto the T1 grid, when T1 yields no
body), every vertebra's widest slice and tight box become an ROI on the T1 grid exactly as a
user's box would, and each is classified by the one application path
(:func:`spinefx.runtime.service.analyse`). The most suspicious vertebra's :class:`Result`
carries the whole-spine document (``Result.spine``), so result.json keeps its single-prediction
fields for existing readers and gains ``vertebrae``.

The vertebrae of one study are classified in one batched model run
(:meth:`Predictor.predict_rois`, the same predictions as one call each); should building one
vertebra's input fail, they are classified one by one so that one keeps its error alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import localise
from .errors import SpineFXError
from .files import atomic_write_png
from .inference import Predictor
from .localise import Localisation
from .outputs import check_output_folder
from .service import (
    Result,
    Roi,
    analyse,
    make_result,
    require_dicom,
    resolve_roi,
    write_outputs,
)
from .study import SeriesPair, Study
from .volume import Volume

log = logging.getLogger("spinefx.runtime")

#: ``classified`` in result.json: which vertebrae got a probability.
ALL, FRACTURED = "all", "graded >= 1"


@dataclass
class SpineAnalysis:
    """What :func:`analyse_spine` found: the localisation, one :class:`Result` per classified
    vertebra (None where it was not classified or failed) and the most suspicious one."""
    localisation: Localisation
    results: list[Result | None]
    errors: list[str | None]
    primary_index: int
    classified: str
    localised_on: str                          # "T1", or "T2" when T1 gave nothing
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> Result:
        result = self.results[self.primary_index]
        assert result is not None, "the primary vertebra was classified"
        return result


# ---------------------------------------------------------------------------------------------
# localising
# ---------------------------------------------------------------------------------------------
def check_localiser(model_dir: str | PathLike | None) -> Path:
    """The localiser folder, or an error naming it (before any series is decoded)."""
    folder = Path(model_dir) if model_dir is not None else localise.DEFAULT_MODEL_DIR
    if not (folder / "model.onnx").is_file():
        raise SpineFXError("vertebral-body localiser model not found (predict without --box "
                           "finds the vertebrae with it): the folder needs model.onnx and "
                           "model.json; reinstall spinefx, or give --box/--center", folder)
    return folder


def localise_pair(study: Study, pair: SeriesPair, model_dir: str | PathLike | None = None,
                  anchor: tuple[int, str] | None = None
                  ) -> tuple[Localisation, str, list[str]]:
    """Localise on T1; when T1 yields no vertebra, on the T2 resliced onto the T1 grid (so
    slices and boxes are T1's either way). Neither -> an error naming both series and why.
    ``anchor``: a person's correction of the level count (index, level), as
    :func:`spinefx.runtime.localise.localise_series` takes it."""
    folder = check_localiser(model_dir)
    t1 = study.volume(pair.t1)
    found = localise.localise_series(t1, None, model_dir=folder, anchor=anchor)
    if found.vertebrae.vertebrae:
        return found, "T1", []
    t1_reason = found.document.get("reason") or "no vertebral body found"
    aligned_t2 = study.aligned(pair).t2
    # T1 slices without a T2 partner are NaN on the resliced T2: the localiser needs numbers
    t2 = aligned_t2.with_data(np.nan_to_num(aligned_t2.data))
    on_t2 = localise.localise_series(t2, None, model_dir=folder, anchor=anchor)
    if on_t2.vertebrae.vertebrae:
        note = (f"no vertebra found on T1 '{study.entries[pair.t1].label}' ({t1_reason}): "
                "localised on the T2 series instead")
        return on_t2, "T2", [note]
    t2_reason = on_t2.document.get("reason") or "no vertebral body found"
    raise SpineFXError(f"no vertebra found on T1 '{study.entries[pair.t1].label}' ({t1_reason}) "
                       f"nor on T2 '{study.entries[pair.t2].label}' ({t2_reason}): give the "
                       "vertebra with --box x0,y0,x1,y1 and --slice")


# ---------------------------------------------------------------------------------------------
# classifying
# ---------------------------------------------------------------------------------------------
def wanted(entry: dict[str, Any], fractured_only: bool, levels: Sequence[str]) -> bool:
    return (not fractured_only or (entry.get("grade") or 0) >= 1
            or entry.get("level") in set(levels))


MOST_SUSPICIOUS_RULE = ("highest probability among vertebrae graded >= 1, else among the "
                        "classified ones not cut by the image's edge, else among all classified")


def most_suspicious(entries: list[dict[str, Any]], results: list[Result | None]) -> int:
    """Index of the highest probability among vertebrae graded >= 1, else among those not
    truncated (a cut body is never graded, and its ROI is cut too), else among all."""
    scored = {i: r.prediction.probability for i, r in enumerate(results) if r is not None}
    graded = [i for i in scored if (entries[i].get("grade") or 0) >= 1]
    whole = [i for i in scored if not entries[i].get("truncated")]
    pool = graded or whole or list(scored)
    return max(pool, key=lambda i: (scored[i], -i))   # a tie: the most superior


def analyse_spine(predictor: Predictor, study: Study, pair: SeriesPair,
                  fractured_only: bool = False, levels: Sequence[str] = (),
                  localiser_dir: str | PathLike | None = None,
                  anchor: tuple[int, str] | None = None) -> SpineAnalysis:
    """Localise (:func:`localise_pair`, with the user's level ``anchor`` if any), then
    classify every vertebra (or, with ``fractured_only``, those graded >= 1 plus any named in
    ``levels``) through :func:`analyse`. A vertebra whose ROI cannot be built keeps its error;
    none at all is an error."""
    localisation, localised_on, notes = localise_pair(study, pair, localiser_dir, anchor)
    entries = localisation.document["vertebrae"]
    chosen = [wanted(e, fractured_only, levels) for e in entries]
    classified = FRACTURED if fractured_only else ALL
    found = {e["level"] for e in entries}
    notes += [f"level {name} was asked for, but no vertebra found is labelled {name}"
              for name in dict.fromkeys(levels) if name not in found]
    if not any(chosen):
        notes.append("no vertebra is graded >= 1: every vertebra was classified")
        chosen, classified = [True] * len(entries), ALL
    results, errors = classify(predictor, study, pair, entries, chosen)
    if not any(r is not None for r in results):
        reasons = "; ".join(f"{e['level']}: {m}" for e, m in zip(entries, errors) if m)
        raise SpineFXError(f"no vertebra could be classified ({reasons})")
    spine = SpineAnalysis(localisation, results, errors, most_suspicious(entries, results),
                          classified, localised_on, notes)
    attach_document(spine)
    return spine


def classify(predictor: Predictor, study: Study, pair: SeriesPair,
             entries: list[dict[str, Any]], chosen: list[bool]
             ) -> tuple[list[Result | None], list[str | None]]:
    """One :class:`Result` per chosen entry (None elsewhere) and each failure's message. The
    ROIs are checked as a user's box would be; those that pass run in one batch."""
    t1 = study.volume(pair.t1)
    rois: dict[int, Roi] = {}
    errors: list[str | None] = [None] * len(entries)
    for i, (entry, take) in enumerate(zip(entries, chosen)):
        if not take:
            continue
        box = tuple(float(v) for v in entry["box"])
        try:
            rois[i] = resolve_roi(t1, predictor.config, int(entry["slice"]),
                                  (box[0], box[1], box[2], box[3]))
        except SpineFXError as exc:   # one vertebra at the field's edge does not stop the rest
            log.warning("vertebra %s not classified: %s", entry["level"], exc)
            errors[i] = str(exc)
    results: list[Result | None] = [None] * len(entries)
    try:
        predictions = predictor.predict_rois(study.aligned(pair),
                                             [(r.slice_index, r.box) for r in rois.values()])
    except SpineFXError as exc:       # which one failed: one by one, each keeps its error
        log.info("batched classification failed (%s): one vertebra at a time", exc)
        for i, roi in rois.items():
            try:
                results[i] = analyse(predictor, study, pair, roi)
            except SpineFXError as one:
                log.warning("vertebra %s not classified: %s", entries[i]["level"], one)
                errors[i] = str(one)
        return results, errors
    for (i, roi), prediction in zip(rois.items(), predictions):
        results[i] = make_result(predictor, study, pair, roi, prediction)
    return results, errors


# ---------------------------------------------------------------------------------------------
# the document and the files
# ---------------------------------------------------------------------------------------------
def vertebra_entries(spine: SpineAnalysis) -> list[dict[str, Any]]:
    """The localise entries with ``probability``, ``label`` and ``ood`` (None where not
    classified; ``error`` where classifying failed)."""
    out = []
    for entry, result, error in zip(spine.localisation.document["vertebrae"], spine.results,
                                    spine.errors):
        p = result.prediction if result is not None else None
        item = {**entry, "classified": p is not None,
                "probability": round(p.probability, 6) if p else None,
                "label": p.label if p else None, "ood": p.ood if p else None}
        if error:
            item["error"] = error
        out.append(item)
    return out


def attach_document(spine: SpineAnalysis) -> None:
    """Put the whole-spine part of result.json on the primary result, and every classified
    vertebra's warnings (once each) in its warnings."""
    doc = spine.localisation.document
    entries = vertebra_entries(spine)
    primary = spine.primary
    primary.spine = {
        "vertebrae": entries, "classified": spine.classified,
        "most_suspicious": {"level": entries[spine.primary_index]["level"],
                            "index": spine.primary_index,
                            "rule": MOST_SUSPICIOUS_RULE},
        "localised_on": spine.localised_on,
        "levels_uncertain": doc["levels_uncertain"], "level_confidence": doc["level_confidence"],
        "level_reason": doc["level_reason"], "grading": doc["grading"],
        "localiser": doc["probability_source"], "localise_notes": list(spine.notes)}
    for result in spine.results:
        for warning in result.warnings if result is not None else ():
            if warning not in primary.warnings:
                primary.warnings.append(warning)


def overview_notes(spine: SpineAnalysis) -> list[str]:
    """One text per vertebra for the overview: its probability, or why it has none."""
    notes = []
    for result, error in zip(spine.results, spine.errors):
        if result is not None:
            flag = " OOD" if result.prediction.ood_flagged else ""
            notes.append(f"P={result.prediction.probability:.2f}{flag}")
        else:
            notes.append("not classified" if error else "")
    return notes


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """``left`` then ``right`` scaled to its height, on one canvas."""
    scale = left.height / right.height
    right = right.resize((max(1, round(right.width * scale)), left.height),
                         Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (left.width + right.width, left.height), (16, 16, 16))
    canvas.paste(left.convert("RGB"), (0, 0))
    canvas.paste(right.convert("RGB"), (left.width, 0))
    return canvas


def write_spine_outputs(spine: SpineAnalysis, study: Study, out_dir: str | PathLike,
                        inputs: Sequence[str | PathLike] = (), dicom: bool = False,
                        opacity: float = 0.45) -> dict[str, Path]:
    """vertebrae.json and vertebrae_mask.nii.gz (as ``spinefx localise`` writes them),
    overview.png (every level with its probability, beside the most suspicious one's
    Grad-CAM overlay), then the service's overlay.png, result.json (+ overlay_sc.dcm)."""
    out = check_output_folder(out_dir, list(inputs))
    primary = spine.primary
    if dicom:
        require_dicom(study, primary.pair)
    source: Volume = spine.localisation.volume
    located = localise.write_localisation(spine.localisation, out, source,
                                 annotations=overview_notes(spine))
    with Image.open(located["overview"]) as drawn:
        overview = side_by_side(drawn, primary.overlay(opacity))
    located["overview"] = atomic_write_png(out / localise.OVERVIEW_FILE, overview)
    return write_outputs(primary, study, out, inputs, dicom=dicom, opacity=opacity,
                         extra_files=located)
