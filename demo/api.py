"""The demo's named API endpoints (stateless): /predict_case, /predict_images,
/predict_example, /model_info; and the Read tab's example loader, which shares the examples'
cache with /predict_example.

Serving: an example's whole result (the page's localiser, classification, pictures and report;
the API's document and overlay) is computed once per process and reused by every session and
call (it is deterministic); an upload is decoded once per process for the same bytes and an
API result kept per upload and ROI (``DemoContext.studies`` / ``results``, bounded LRUs).

Each endpoint returns (result document, overlay PNG path); the document
is :meth:`spinefx.runtime.service.Result.to_json`, the same as `spinefx predict`'s result.json,
plus ``explanation`` (:func:`spinefx.runtime.explain.explain`: the threshold's meaning, its
sensitivity/specificity, calibration, the OOD verdict and the map in words).

A bad input gives ``{"status": "error", "error": "<readable message>"}``, never a traceback.
"""
from __future__ import annotations

import copy
from typing import Any

from spinefx.runtime.explain import explain_prediction
from spinefx.runtime.preprocess import Box
from spinefx.runtime.provenance import DISCLAIMER
from spinefx.runtime.service import Result, parse_box, parse_point
from spinefx.runtime.study import SeriesPair, Study

from . import read_handlers as rh
from .context import (
    DemoContext,
    ReadState,
    Updates,
    about_study,
    api_guard,
    page_guard,
    upload_paths,
)
from .report import report_text, view_at_result, write_report
from .service import predict
from .views import error_markdown, overlay_image


def _finish(ctx: DemoContext, result: Result) -> tuple[dict, str | None]:
    """result.json's document plus ``explanation`` (the page's words, runtime.explain); the
    overlay goes to the caches' folder (the results are cached)."""
    image = overlay_image(result.prediction, 0.45, result.synthetic_model)
    raw = ctx.model.predictor.spec.raw if ctx.model.predictor is not None else {}
    doc = {**result.to_json(),
           "explanation": explain_prediction(result.prediction, raw, result.synthetic_model)}
    return doc, ctx.kept.png(image)


def _answer(cached: tuple[dict, str | None]) -> tuple[dict, str | None]:
    """A cached answer as the caller's own copy (gradio may touch what it is given)."""
    return copy.deepcopy(cached[0]), cached[1]


def _predict(ctx: DemoContext, study: Study, t1_series: Any, t2_series: Any, slice_index: Any,
             box: Any, center: Any, size_mm: Any) -> tuple[dict, str | None]:
    with about_study(study):  # a series choice or ROI that fails says which study
        pair = pair_of(study, str(t1_series or "").strip(), str(t2_series or "").strip())
        roi_box: Box | None = parse_box(box)
        point = parse_point(center)
        k = None if slice_index is None else int(slice_index)
        result = predict(ctx.model, study, pair, k, roi_box, point, size_mm or None)
    return _finish(ctx, result)


@api_guard
def predict_case(ctx: DemoContext, files: Any, t1_series: Any, t2_series: Any,
                 slice_index: Any, box: Any, center: Any, size_mm: Any) -> tuple:
    """Predict from DICOM files (or a .zip of a study). t1_series / t2_series: series number,
    description or '' for the automatic choice; slice_index: T1 slice (-1 = middle); box
    'x0,y0,x1,y1' or center 'x,y' (T1 pixels) with size_mm (0 = model default). Returns
    (result JSON, overlay PNG)."""
    ctx.model.require()
    paths = upload_paths(files)
    ctx.janitor.hold(paths)
    try:
        upload, study = rh.cached_dicom(ctx, paths)
    finally:
        ctx.janitor.release(paths)
    where = (t1_series, t2_series, slice_index, box, center, size_mm)
    return _answer(ctx.results.get(("case", upload, repr(where)),
                                   lambda: _predict(ctx, study, *where)))


@api_guard
def predict_images(ctx: DemoContext, t1_images: Any, t2_images: Any, pixel_spacing_mm: Any,
                   slice_index: Any, box: Any, center: Any, size_mm: Any) -> tuple:
    """Predict from PNG/JPEG slices: T1 and T2 lists (ordered by the numbers in their names),
    pixel spacing in mm (0 = unknown, 1 mm assumed); slice/box/center/size as in
    /predict_case. Returns (result JSON, overlay PNG)."""
    ctx.model.require()
    p1, p2 = upload_paths(t1_images), upload_paths(t2_images)
    ctx.janitor.hold(p1 + p2)
    try:
        upload, study = rh.cached_images(ctx, p1, p2, pixel_spacing_mm)
    finally:
        ctx.janitor.release(p1 + p2)
    where = ("", "", slice_index, box, center, size_mm)
    return _answer(ctx.results.get(("images", upload, repr(where)),
                                   lambda: _predict(ctx, study, *where)))


@api_guard
def predict_example(ctx: DemoContext, example: Any) -> tuple:
    """Run one bundled example by key (see /model_info for the keys); computed once per
    process."""
    ctx.model.require()
    key = str(example or "").strip()
    ctx.library.example(key)                 # an unknown key: the error, and nothing cached
    return _answer(ctx.examples.get(("api", key), lambda: _example_result(ctx, key)))


def _example_result(ctx: DemoContext, key: str) -> tuple[dict, str | None]:
    study = ctx.library.load_example(key)
    with about_study(study):
        result = predict(ctx.model, study, pair_of(study, None, None), None)
    return _finish(ctx, result)


@page_guard("status")
def run_example(ctx: DemoContext, key: str, st: ReadState | None, alpha: float) -> Updates:
    """The Read tab's example button: the cached page (:func:`_example_page`) in a fresh
    session state; the session's previous files stay in its folder (removed at its end)."""
    template, updates, report = ctx.examples.get(("page", key),
                                                 lambda: _example_page(ctx, key))
    session = template.for_session(st.outbox if st is not None else None)
    # gradio pops "value" from a gr.update dict it sends: each session gets its own copy
    out: Updates = {**copy.deepcopy(updates), "read_state": session}
    if session.last is not None and abs(float(alpha) - rh.DEFAULT_OPACITY) > 1e-6:
        out.update(rh.restyle(ctx, session, alpha))
    folder = ctx.session_outbox(session).folder
    session.report = write_report(folder, report, st.report if st is not None else None)
    return {**out, "report_btn": session.report}


def _example_page(ctx: DemoContext, key: str) -> tuple[ReadState, Updates, str]:
    """An example loaded, read and predicted at the default opacity, its pictures in the
    caches' folder: (the state to copy per session, the page's updates, the report's text)."""
    st = ReadState(source=f"example: {key}", outbox=ctx.kept)
    study = ctx.library.load_example(key)
    out = rh.study_updates(ctx, st, study)
    if ctx.model.ready:
        out.update(rh.prediction_updates(ctx, st, study.default_slice or 0, study.default_box,
                                         rh.DEFAULT_OPACITY))
        out["status"] = f"Example **{study.title}** loaded and run. " + "; ".join(study.notes)
    else:
        out["status"] = error_markdown(ctx.model.message)
    report = report_text(ctx, st, view_at_result(ctx, st, rh.render_view))
    out.pop("read_state", None)
    return st, out, report


def model_info(ctx: DemoContext) -> dict:
    """The loaded model, the examples and the disclaimer."""
    predictor = ctx.model.predictor
    return {"ready": ctx.model.ready, "message": ctx.model.message,
            "model": predictor.model_id if predictor else None,
            "threshold": predictor.threshold if predictor else None,
            "synthetic": ctx.model.synthetic,
            "examples": {e.key: e.title for e in ctx.library.examples},
            "teaching": ctx.library.teaching_source,
            "disclaimer": DISCLAIMER}


def pair_of(study: Study, t1: str | None, t2: str | None) -> SeriesPair:
    """The API's series choice: the page's first choice unless the caller names series."""
    if not (t1 or t2) and study.default_pair is not None:
        return study.default_pair
    return study.choose_pair(t1 or None, t2 or None, "guess")
