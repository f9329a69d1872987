"""The demo's named API endpoints (stateless): /predict_case, /predict_images,
/predict_example, /model_info. Each returns (result document, overlay PNG path); the document
is :meth:`spinefx.runtime.service.Result.to_json`, the same as `spinefx predict`'s result.json,
plus ``explanation`` (:func:`spinefx.runtime.explain.explain`: the threshold's meaning, its
sensitivity/specificity, calibration, the OOD verdict and the map in words).

A bad input gives ``{"status": "error", "error": "<readable message>"}``, never a traceback.
"""
from __future__ import annotations

from typing import Any

from spinefx.runtime.explain import explain_prediction
from spinefx.runtime.preprocess import Box
from spinefx.runtime.provenance import DISCLAIMER
from spinefx.runtime.service import Result, parse_box, parse_point
from spinefx.runtime.study import SeriesPair, Study

from .context import DemoContext, about_study, api_guard, upload_paths, upload_title
from .ingest import load_dicom_upload, load_image_upload
from .service import predict
from .views import overlay_image


def _finish(ctx: DemoContext, result: Result) -> tuple[dict, str | None]:
    """result.json's document plus ``explanation`` (the page's words, runtime.explain)."""
    image = overlay_image(result.prediction, 0.45, result.synthetic_model)
    raw = ctx.model.predictor.spec.raw if ctx.model.predictor is not None else {}
    doc = {**result.to_json(),
           "explanation": explain_prediction(result.prediction, raw, result.synthetic_model)}
    return doc, ctx.outbox.png(image)


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
        study = load_dicom_upload(paths, ctx.work,
                                  title=upload_title(paths, "uploaded DICOM study"))
    finally:
        ctx.janitor.release(paths)
    return _predict(ctx, study, t1_series, t2_series, slice_index, box, center, size_mm)


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
        study = load_image_upload(p1, p2, pixel_spacing_mm or None,
                                  title=upload_title(p1 + p2, "uploaded image slices"))
    finally:
        ctx.janitor.release(p1 + p2)
    return _predict(ctx, study, "", "", slice_index, box, center, size_mm)


@api_guard
def predict_example(ctx: DemoContext, example: Any) -> tuple:
    """Run one bundled example by key (see /model_info for the keys)."""
    ctx.model.require()
    study = ctx.library.load_example(str(example or "").strip())
    with about_study(study):
        result = predict(ctx.model, study, pair_of(study, None, None), None)
    return _finish(ctx, result)


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
