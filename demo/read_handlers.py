"""The Read tab's handlers: load a study, choose series, mark the vertebra, predict.

Each is ``handler(ctx, state, *inputs) -> {component name: value}`` (see ``context.py``). The
T1/T2 pair is decoded and aligned once per choice (``Study.aligned``); slider moves and clicks
reuse it.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from spinefx.runtime import SpineFXError
from spinefx.runtime.explain import explain_prediction
from spinefx.runtime.preprocess import Box
from spinefx.runtime.service import Result, box_at, check_slice, format_box, parse_box
from spinefx.runtime.study import Study

from .context import (
    DemoContext,
    ReadState,
    Updates,
    about_study,
    page_guard,
    upload_paths,
    upload_title,
)
from .ingest import load_dicom_upload, load_image_upload
from .report import dicom_updates, session_report, view_at_result
from .service import predict, preview_input
from .spine_view import picked_entry, run_localiser, spine_updates
from .uploads import content_key
from .viewer import (
    DEFAULT_PRESET,
    WL_PRESETS,
    ViewSpec,
    markers_of,
    render_pair,
    series_spans,
)
from .views import (
    channel_gallery,
    explanation_markdown,
    overlay_image,
    result_markdown,
    roi_images,
    series_table,
    synthetic_case,
)

#: Every component a study load refreshes, in the order app.py wires them.
READ_OUTPUTS = ("read_state", "status", "series_df", "t1_dd", "t2_dd", "slice_sl", "box_tb",
                "slice_img", "channels", "result_md", "overlay", "roi_gal", "details",
                "dicom_files", "t1_images", "t2_images", "spine_md", "spine_df", "level_rd",
                "report_btn", "dicom_prepare", "dicom_btn", "dicom_note")
DEFAULT_OPACITY = 0.45
#: What a slice, box, click or W/L/zoom change refreshes (a stale result is cleared).
VIEW_OUTPUTS = ("read_state", "status", "slice_img", "channels", "result_md", "overlay",
                "roi_gal", "details", "level_rd")
STALE_RESULT = ("_The result was cleared: the slice or the box changed since it was computed. "
                "Press **Predict** for this slice and box._")


def cleared_result(message: str = "") -> Updates:
    return {"result_md": message, "overlay": None, "roi_gal": [], "details": None}


def invalidate(st: ReadState, k: int, box: Box | None) -> Updates:
    """Clear the result on screen when it no longer matches the slice and box shown (a W/L or
    zoom change keeps it: the same input goes to the model)."""
    if st.last is None:
        return {}
    roi = st.last.roi
    if (box is not None and roi.slice_index == k
            and all(abs(float(a) - float(b)) < 0.5 for a, b in zip(roi.box, box))):
        return {}
    st.last, st.picked = None, None       # the picked level no longer matches the view
    return {**cleared_result(STALE_RESULT), "level_rd": gr.update(value=None)}


def render_view(ctx: DemoContext, st: ReadState, k: int, box: Box | None) -> str | None:
    """The T1 | T2 picture of slice ``k`` as a PNG path (cached per view)."""
    study, pair = st.require()
    aligned = study.aligned(pair)
    k = int(np.clip(k, 0, aligned.t1.n_slices - 1))
    focus = (((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if box is not None
             else st.center)
    entries = st.spine.localisation.document["vertebrae"] if st.spine is not None else []
    spec = ViewSpec(pair=(pair.t1, pair.t2), k=k, level=st.level, width=st.width,
                    zoom=st.zoom, focus=focus, box=box, centre=st.center,
                    markers=markers_of(entries, st.picked, k), roi_margin=ctx.config.roi_margin,
                    note="SYNTHETIC" if synthetic_case(study, pair) else "")
    hit = st.views.get(spec)
    if hit is None:
        spans = series_spans(st.spans, aligned, pair)
        img, view = render_pair(aligned.t1.data[k], aligned.t2.data[k], spans, spec,
                                aligned.t1.n_slices)
        path = ctx.session_outbox(st).png(img)
        assert path is not None
        hit = ((path,), view)
        st.views.put(spec, *hit)
    st.view = hit[1]
    return hit[0][0]


def channel_strip(ctx: DemoContext, st: ReadState, k: int, box: Box) -> list:
    """The six channels the model would see, encoded once per slice and box."""
    study, pair = st.require()
    key = ("strip", pair.t1, pair.t2, int(k), tuple(box))
    hit = st.views.get(key)
    if hit is None:
        strip = channel_gallery(preview_input(ctx.model, study, pair, k, box))
        gallery = ctx.session_outbox(st).gallery(strip)
        st.views.put(key, [p for p, _ in gallery if p], gallery)
        return gallery
    return list(hit[1])


def view_updates(ctx: DemoContext, st: ReadState, k: int, box: Box | None) -> Updates:
    out: Updates = {"slice_img": render_view(ctx, st, k, box),
                    "channels": channel_strip(ctx, st, k, box) if box is not None else []}
    out.update(invalidate(st, int(k), box))
    return out


def report_update(ctx: DemoContext, st: ReadState) -> Updates:
    """A fresh report for the download button (the view at the result's own slice and box)."""
    return {"report_btn": session_report(ctx, st, view_at_result(ctx, st, render_view))}


def _box_or_none(text: str) -> Box | None:
    """The typed box, or None while it is incomplete (the slider still scrolls)."""
    try:
        return parse_box(text)
    except SpineFXError:
        return None


def study_updates(ctx: DemoContext, st: ReadState, study: Study) -> Updates:
    with about_study(study):
        return _study_updates(ctx, st, study)


def _study_updates(ctx: DemoContext, st: ReadState, study: Study) -> Updates:
    pair = study.default_pair or study.choose_pair(policy="guess")
    st.study, st.pair, st.center, st.last = study, pair, None, None
    st.spine, st.picked, st.spine_error = None, None, ""
    t1 = study.volume(pair.t1)
    k = study.default_slice if study.default_slice is not None else t1.n_slices // 2
    box = study.default_box
    run_localiser(ctx.model.predictor, st)
    notes = "; ".join([*study.notes, *pair.notes])
    out: Updates = {
        "read_state": st, "series_df": series_table(study.rows),
        "t1_dd": gr.update(choices=study.choices, value=pair.t1),
        "t2_dd": gr.update(choices=study.choices, value=pair.t2),
        "slice_sl": gr.update(minimum=0, maximum=max(t1.n_slices - 1, 1), value=k),
        "box_tb": format_box(box) if box else "",
        "result_md": "", "overlay": None, "roi_gal": [], "details": None,
        "status": f"Loaded **{study.title}**: {len(study.rows)} series. "
                  + ("" if box is not None else
                     "Read automatically: the most suspicious vertebra is picked; pick another "
                     "level, or click a vertebral body's centre and Predict." if st.spine else
                     "Click the centre of the fractured vertebral body, then Predict.")
                  + (f"\n\nNotes: {notes}" if notes else "")}
    out.update(spine_updates(st))
    out.update(dicom_updates(st))
    out.update(view_updates(ctx, st, k, box))
    return out


def result_updates(ctx: DemoContext, st: ReadState, result: Result, alpha: float) -> Updates:
    """Show ``result`` (it becomes the session's current one) with its explanation."""
    study, _ = st.require()
    st.last, st.last_k = result, result.roi.slice_index
    pred = result.prediction
    explanation = explain_result(ctx, result)
    details = {**result.to_json(), "explanation": explanation}
    return {"read_state": st,
            "result_md": result_markdown(pred, result.synthetic_model, study.truth,
                                         result.roi.slice_index)
            + "\n\n" + explanation_markdown(explanation),
            "overlay": ctx.session_outbox(st).png(overlay_image(pred, alpha,
                                                                result.synthetic_model)),
            "roi_gal": ctx.session_outbox(st).gallery(roi_images(pred, alpha)),
            "details": details}


def explain_result(ctx: DemoContext, result: Result) -> dict:
    raw = ctx.model.predictor.spec.raw if ctx.model.predictor is not None else {}
    return explain_prediction(result.prediction, raw, result.synthetic_model)


def prediction_updates(ctx: DemoContext, st: ReadState, k: int, box: Box | None,
                       alpha: float) -> Updates:
    study, pair = st.require()
    return result_updates(ctx, st, predict(ctx.model, study, pair, k, box), alpha)


def _auto_pick(ctx: DemoContext, st: ReadState, alpha: float) -> Updates:
    """After a load: the most suspicious vertebra picked, its slice, box and result shown."""
    if st.spine is None:
        return {}
    out = pick_updates(ctx, st, st.spine.primary_index, alpha)
    out.update(spine_updates(st))   # the level list with the pick selected
    return out


def pick_updates(ctx: DemoContext, st: ReadState, i: int, alpha: float) -> Updates:
    assert st.spine is not None
    entry = st.spine.localisation.document["vertebrae"][i]
    k, box = int(entry["slice"]), tuple(float(v) for v in entry["box"])
    roi_box: Box = (box[0], box[1], box[2], box[3])
    st.picked, st.center, st.last = i, None, None
    result = st.spine.results[i]
    study, pair = st.require()
    n = study.volume(pair.t1).n_slices     # with the range: after a load it replaces the load's
    out: Updates = {"slice_sl": gr.update(minimum=0, maximum=max(n - 1, 1), value=k),
                    "box_tb": format_box(roi_box),
                    "level_rd": gr.update(value=str(i))}
    if result is not None:
        out.update(result_updates(ctx, st, result, alpha))
    else:
        out.update(cleared_result(f"**{entry['level']} was not classified:** "
                                  f"{st.spine.errors[i] or 'no result'}"))
    out.update(view_updates(ctx, st, k, roi_box))
    return out


@page_guard("status")
def load_upload(ctx: DemoContext, st: ReadState | None, files: Any, t1_imgs: Any, t2_imgs: Any,
                px: float | None) -> Updates:
    dicom, t1s, t2s = upload_paths(files), upload_paths(t1_imgs), upload_paths(t2_imgs)
    ctx.janitor.hold(dicom + t1s + t2s)
    try:
        if dicom and (t1s or t2s):
            raise SpineFXError("upload either DICOM or PNG/JPEG slices, not both at once")
        if dicom:
            _, study = cached_dicom(ctx, dicom)
        elif t1s or t2s:
            _, study = cached_images(ctx, t1s, t2s, px)
        else:
            raise SpineFXError("choose files first: DICOM files or a .zip, or PNG/JPEG "
                               "slices for T1 and for T2")
    finally:
        ctx.janitor.release(dicom + t1s + t2s)
    # the session's folder carries over: its old files go at session end with the new ones
    st = ReadState(source="uploaded DICOM study" if dicom else "uploaded image slices",
                   outbox=st.outbox if st is not None else None)
    out = study_updates(ctx, st, study)
    if study.default_box is None:
        out.update(_auto_pick(ctx, st, DEFAULT_OPACITY))
    out.update({"dicom_files": None, "t1_images": None, "t2_images": None})
    return {**out, **report_update(ctx, st)}


@page_guard("status")
def pick_level(ctx: DemoContext, st: ReadState | None, choice: Any, alpha: float) -> Updates:
    """A level picked from the localiser's list: its slice, box and result."""
    st = _loaded(st)
    i, entry = picked_entry(st, choice)
    out = pick_updates(ctx, st, i, alpha)
    out["status"] = f"{entry['level']}: slice {entry['slice']}, box {out['box_tb']}."
    return {**out, **report_update(ctx, st)}


def cached_dicom(ctx: DemoContext, paths: list[str]) -> tuple[str, Study]:
    """(the upload's content key, its study) decoded once per process for the same bytes."""
    title = upload_title(paths, "uploaded DICOM study")
    key = content_key(paths, "dicom", title)
    return key, ctx.studies.get(key, lambda: load_dicom_upload(paths, ctx.work, title=title))


def cached_images(ctx: DemoContext, t1s: list[str], t2s: list[str],
                  px: Any) -> tuple[str, Study]:
    title = upload_title(t1s + t2s, "uploaded image slices")
    key = content_key(t1s, "T1", title) + content_key(t2s, "T2", px)
    return key, ctx.studies.get(key, lambda: load_image_upload(t1s, t2s, px or None,
                                                               title=title))


def _loaded(st: ReadState | None) -> ReadState:
    if st is None or st.study is None:
        raise SpineFXError("load a study first")
    return st


@page_guard("status")
def change_series(ctx: DemoContext, st: ReadState | None, t1_key: str, t2_key: str, k: Any,
                  box_text: str) -> Updates:
    st = _loaded(st)
    study, _ = st.require()
    st.pair = study.choose_pair(t1_key, t2_key, "guess")
    st.last = None
    run_localiser(ctx.model.predictor, st)
    t1 = study.volume(st.pair.t1)
    k = min(int(k or 0), t1.n_slices - 1)
    out: Updates = {"read_state": st,
                    "status": f"T1 = {study.labels[st.pair.t1]}; T2 = {study.labels[st.pair.t2]}",
                    "slice_sl": gr.update(maximum=max(t1.n_slices - 1, 1), value=k),
                    **cleared_result("_The series changed: press **Predict** again._"),
                    **spine_updates(st), **dicom_updates(st)}
    out.update(view_updates(ctx, st, k, _box_or_none(box_text)))
    return out


@page_guard("status")
def show_slice(ctx: DemoContext, st: ReadState | None, k: Any, box_text: str) -> Updates:
    """A slider, arrow-key or wheel move (an incomplete typed box is left out)."""
    if st is None or st.study is None:
        return {}
    return {**view_updates(ctx, st, int(k), _box_or_none(box_text)), "status": ""}


@page_guard("status")
def type_box(ctx: DemoContext, st: ReadState | None, k: Any, box_text: str) -> Updates:
    """A typed box, drawn as soon as it parses (the typed box replaces a clicked centre)."""
    if st is None or st.study is None:
        return {}
    try:
        box = parse_box(box_text)
    except SpineFXError as exc:
        return {"status": f"box not complete yet: {exc}"}
    st.center = None
    return {**view_updates(ctx, st, int(k), box), "status": ""}


@page_guard("status")
def set_preset(ctx: DemoContext, st: ReadState | None, preset: str, k: Any,
               box_text: str) -> Updates:
    level, width = WL_PRESETS.get(preset, WL_PRESETS[DEFAULT_PRESET])
    out: Updates = {"wl_level": level, "wl_width": width}
    if st is not None and st.study is not None:
        st.level, st.width = level, width
        out.update(view_updates(ctx, st, int(k), _box_or_none(box_text)))
    return out


@page_guard("status")
def set_window(ctx: DemoContext, st: ReadState | None, level: float, width: float,
               zoom: Any, k: Any, box_text: str) -> Updates:
    """Window/level sliders and the zoom (neither changes the model's input)."""
    if st is None or st.study is None:
        return {}
    st.level, st.width = float(level), max(1.0, float(width))
    st.zoom = float(str(zoom).rstrip("x") or 1)
    return view_updates(ctx, st, int(k), _box_or_none(box_text))


@page_guard("status")
def click_centre(ctx: DemoContext, st: ReadState | None, k: Any, size: float,
                 index: tuple[float, float]) -> Updates:
    """A click at display pixel ``index`` (x, y): a box of ``size`` mm around it."""
    st = _loaded(st)
    study, pair = st.require()
    x, y = st.view.to_pixels(float(index[0]), float(index[1]))
    box = box_at(study.volume(pair.t1), (x, y), float(size))
    st.center = (x, y)
    return {"read_state": st, "box_tb": format_box(box),
            "status": f"centre ({x:.0f}, {y:.0f}); box {size:.0f} mm. Press Predict.",
            **view_updates(ctx, st, int(k), box)}


@page_guard("status")
def resize_box(ctx: DemoContext, st: ReadState | None, k: Any, size: float) -> Updates:
    if st is None or st.study is None or st.center is None:
        return {}
    study, pair = st.require()
    box = box_at(study.volume(pair.t1), st.center, float(size))
    return {"box_tb": format_box(box), "status": "", **view_updates(ctx, st, int(k), box)}


@page_guard("status")
def run_predict(ctx: DemoContext, st: ReadState | None, k: Any, box_text: str,
                alpha: float) -> Updates:
    if st is None or st.study is None:
        raise SpineFXError("load a study first: upload files or pick an example")
    box = parse_box(box_text)
    if box is None:
        raise SpineFXError("mark the vertebra first: click its centre on the image or "
                           "type a box")
    study, pair = st.require()
    k = check_slice(study.volume(pair.t1), k)
    out = prediction_updates(ctx, st, k, box, alpha)
    out["status"] = "Done."
    return {**out, **report_update(ctx, st)}


@page_guard("status")
def restyle(ctx: DemoContext, st: ReadState | None, alpha: float) -> Updates:
    if st is None or st.last is None:
        return {}
    pred, synthetic = st.last.prediction, st.last.synthetic_model
    box = ctx.session_outbox(st)
    return {"overlay": box.png(overlay_image(pred, alpha, synthetic)),
            "roi_gal": box.gallery(roi_images(pred, alpha))}
