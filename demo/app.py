"""The Gradio app: a Read tab for clinicians and a Teaching tab for residents.

``build_app(model=None, cases_dir=None)`` returns a ``gr.Blocks`` (queue configured);
``launch(app, host, port)`` serves it with the page's CSS and upload limits. The model is
loaded once per process and shared by every session; handlers are plain functions, which
gradio runs in its thread pool (off the event loop), at most ``concurrency`` at a time.

Named API endpoints (stateless; see README "Demo API"):

- ``/predict_case``: DICOM files or a .zip + series choice + slice + box/centre -> (result JSON,
  overlay PNG);
- ``/predict_images``: T1 and T2 PNG/JPEG slices + pixel spacing + slice + box/centre;
- ``/predict_example``: one of the bundled examples by key;
- ``/model_info``: the loaded model and the disclaimer.

A bad input gives ``{"status": "error", "error": "<readable message>"}``, never a traceback.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import gradio as gr
import numpy as np

from spinefx.runtime import SpineFXError
from spinefx.runtime.inference import Prediction

from . import teaching as tm
from .ingest import Study, UploadJanitor, load_dicom_upload, load_image_upload
from .library import Library
from .service import (ModelState, box_from_click, check_slice, error_json, format_box,
                      load_model, parse_box, predict, preview_input, resolve_roi, result_json)
from .views import (CAM_CAPTION, DISCLAIMER, SERIES_HEADERS, channel_gallery, error_markdown,
                    overlay_image, result_markdown, roi_images, series_table, slice_view)

log = logging.getLogger("spinefx.demo")

STATE_TTL_S = 3600
DEFAULT_CONCURRENCY = 2
MAX_FILE_SIZE = "512mb"   # per uploaded file; zips are also capped by what they unpack to
CSS = """
#disclaimer {border: 2px solid #d97706; border-radius: 8px; padding: 6px 12px;
             background: rgba(217, 119, 6, 0.08);}
#status {min-height: 1.5em;}
#result .prose h3 {margin-top: 0;}
"""
APP_TITLE = "spinefx: benign vs malignant vertebral compression fracture (research demo)"


@dataclass
class ReadState:
    """One browser session's read-mode data (in memory; no PHI, no files)."""
    study: Study | None = None
    t1_key: str | None = None
    t2_key: str | None = None
    center: tuple[float, float] | None = None
    scale: int = 1
    last: Prediction | None = None
    last_k: int | None = None
    notes: list[str] = field(default_factory=list)

    def pair(self):
        if self.study is None:
            raise SpineFXError("load a study first: upload files or pick an example")
        return self.study.pair(self.t1_key, self.t2_key)


def _drop_state(value) -> None:
    """gr.State delete callback: session data is in memory only; release it promptly."""
    if isinstance(value, ReadState):
        value.study = None
        value.last = None


def _guard(status, fallback: dict | None = None):
    """Turn any exception into a readable line in ``status`` (the page never shows a
    traceback and the server keeps serving). SpineFXError messages are shown as they are;
    anything else is logged with its traceback and summarised."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except SpineFXError as exc:
                log.info("input rejected (%s)", type(exc).__name__)
                return {**(fallback or {}), status: error_markdown(str(exc))}
            except MemoryError:
                log.error("out of memory in %s", fn.__name__)
                return {**(fallback or {}), status: error_markdown(
                    "the input is too large for this server's memory")}
            except Exception as exc:  # noqa: BLE001 - last line of defence for the page
                log.exception("unexpected error in %s", fn.__name__)
                return {**(fallback or {}), status: error_markdown(
                    f"unexpected {type(exc).__name__}; the input may be unusual. Details are in "
                    "the server log.")}
        return wrapper
    return deco


def _api_guard(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpineFXError as exc:
            log.info("api input rejected (%s)", type(exc).__name__)
            return error_json(exc), None
        except MemoryError:
            return {"status": "error", "error": "the input is too large for this server"}, None
        except Exception as exc:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            return {"status": "error", "error": f"unexpected {type(exc).__name__}; see the "
                    "server log"}, None
    return wrapper


class Outbox:
    """Output pictures as PNG files with unique names, written atomically.

    Gradio caches a returned PIL image/array by rewriting ``<hash>/image.png`` in place, so two
    sessions producing the same picture at once can serve each other a truncated file; a file
    path is instead copied into the cache under a temporary name and renamed (atomic). Files
    here are pruned after ``keep_s`` seconds (gradio has its own copy by then)."""

    def __init__(self, folder: Path, keep_s: float = 300.0):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_s = keep_s
        self._last_prune = time.monotonic()

    def png(self, image) -> str | None:
        if image is None:
            return None
        from PIL import Image
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        name = uuid.uuid4().hex
        tmp = self.folder / f".{name}.tmp"
        img.save(tmp, format="PNG", compress_level=3)
        final = self.folder / f"{name}.png"
        os.replace(tmp, final)
        self._prune()
        return str(final)

    def gallery(self, items) -> list[tuple[str, str]]:
        return [(self.png(img), caption) for img, caption in items]

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        cutoff = time.time() - self.keep_s
        for p in self.folder.glob("*.png"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass


def _paths(files) -> list[str]:
    if not files:
        return []
    files = files if isinstance(files, (list, tuple)) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files if f]


def build_app(model: str | PathLike | None = None, cases_dir: str | PathLike | None = None,
              *, cache_dir: str | PathLike | None = None, concurrency: int | None = None,
              temp_dir: str | PathLike | None = None,
              upload_grace_s: float | None = None) -> gr.Blocks:
    """The demo app. ``model``: a model folder (None = the bundled model; if it is missing the
    page says so and everything but prediction works). ``cases_dir``: an instructor's folder
    with manifest.csv for teaching mode (None = the bundled SYNTHETIC teaching set)."""
    concurrency = int(concurrency or os.environ.get("SPINEFX_DEMO_CONCURRENCY",
                                                    DEFAULT_CONCURRENCY))
    state_model: ModelState = load_model(model, concurrency)
    library = Library(cache_dir=cache_dir, cases_dir=cases_dir)
    work = Path(tempfile.mkdtemp(prefix="spinefx-demo-", dir=temp_dir))
    atexit.register(shutil.rmtree, work, True)
    if upload_grace_s is None:
        upload_grace_s = float(os.environ.get("SPINEFX_DEMO_UPLOAD_GRACE_S", 20))
    janitor = UploadJanitor([gr.utils.get_upload_folder()], upload_grace_s)
    outbox = Outbox(work / "out")
    config = state_model.config

    with gr.Blocks(title=APP_TITLE, delete_cache=(600, 3600), analytics_enabled=False) as app:
        app.spinefx_workdir = work          # for tests and tools: where the demo writes
        app.spinefx_library = library
        app.spinefx_model = state_model
        app.spinefx_janitor = janitor
        gr.Markdown(f"# {APP_TITLE}")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        gr.Markdown(("Model " if state_model.ready else "**No model loaded:** ") + state_model.message,
                    elem_id="model-status")
        read_state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=_drop_state)
        teach_state = gr.State(None, time_to_live=STATE_TTL_S)

        # ------------------------------------------------------------------ Read tab
        with gr.Tabs():
            with gr.Tab("Read", id="read"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        gr.Markdown("#### 1 · Load a study")
                        example_buttons = []
                        with gr.Row():
                            for ex in library.examples:
                                example_buttons.append(
                                    (ex, gr.Button(ex.title, size="sm",
                                                   elem_id=f"example-{ex.key}")))
                        with gr.Accordion("Upload DICOM (files or one .zip of the study)",
                                          open=True):
                            dicom_files = gr.File(file_count="multiple",
                                                  label="DICOM files or a .zip",
                                                  elem_id="dicom-files")
                        with gr.Accordion("…or PNG/JPEG slices with their sequence",
                                          open=False):
                            t1_images = gr.File(file_count="multiple", label="T1 slices",
                                                file_types=["image"])
                            t2_images = gr.File(file_count="multiple", label="T2 slices",
                                                file_types=["image"])
                            spacing = gr.Number(label="pixel spacing in mm (optional)",
                                                value=None, minimum=0)
                            gr.Markdown("Slices are ordered by the number in their file name.")
                        load_btn = gr.Button("Load upload", elem_id="load-upload")
                        series_df = gr.Dataframe(headers=SERIES_HEADERS, interactive=False,
                                                 label="series found (no patient data)",
                                                 wrap=True)
                        with gr.Row():
                            t1_dd = gr.Dropdown(label="T1-weighted series", choices=[],
                                                interactive=True)
                            t2_dd = gr.Dropdown(label="T2-weighted series", choices=[],
                                                interactive=True)
                        gr.Markdown("#### 2 · Mark the fractured vertebra")
                        slice_sl = gr.Slider(0, 1, value=0, step=1, label="lesion slice (T1)",
                                             elem_id="slice-slider")
                        size_sl = gr.Slider(15, 120, value=config.default_size_mm, step=1,
                                            label="box size in mm (used when you click)")
                        box_tb = gr.Textbox(label="box x0, y0, x1, y1 (T1 pixels)",
                                            placeholder="click the vertebral body's centre on "
                                                        "the image, or type a box",
                                            elem_id="box")
                        predict_btn = gr.Button("Predict", variant="primary",
                                                elem_id="predict")
                    with gr.Column(scale=3):
                        status = gr.Markdown("Load an example or upload a study.",
                                             elem_id="status")
                        slice_img = gr.Image(label="T1 lesion slice: click the centre of the "
                                                   "vertebral body", interactive=False,
                                             type="numpy", format="png", elem_id="slice-image",
                                             height=460)
                        channels = gr.Gallery(label="the 6 input channels the model sees "
                                                    "(T1 and T2, slices k-1, k, k+1)",
                                              columns=6, height=180, elem_id="channels")
                        result_md = gr.Markdown(elem_id="result")
                        overlay = gr.Image(label="Grad-CAM on the T1 and T2 lesion slices",
                                           interactive=False, format="png",
                                           elem_id="overlay")
                        roi_gal = gr.Gallery(label="ROI with the map", columns=2, height=280,
                                             elem_id="roi")
                        opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="map opacity")
                        gr.Markdown(CAM_CAPTION, elem_id="cam-caption")
                        details = gr.JSON(label="details (JSON)", open=False)

            # -------------------------------------------------------------- Teaching tab
            with gr.Tab("Teaching", id="teaching"):
                gr.Markdown("Read the case, commit your call and the features you see, then "
                            "compare with the truth and the model. Case library: "
                            + library.teaching_source + ".")
                with gr.Row():
                    reader_tb = gr.Textbox(label="your name or initials (goes into the CSV)",
                                           value="resident", scale=2)
                    next_btn = gr.Button("Start / next case", variant="secondary",
                                         elem_id="next-case", scale=1)
                case_md = gr.Markdown(elem_id="case-info")
                with gr.Row():
                    t_t1 = gr.Image(label="T1", interactive=False, format="png", height=380)
                    t_t2 = gr.Image(label="T2", interactive=False, format="png", height=380)
                t_slice = gr.Slider(0, 1, value=0, step=1, label="slice (the box marks the "
                                    "lesion slice)")
                call_radio = gr.Radio(list(tm.CALLS), label="your call", elem_id="call")
                feats = gr.CheckboxGroup(tm.feature_titles(), label="features you see "
                                         "(8 malignant-leaning first, then 7 benign-leaning)",
                                         elem_id="features")
                commit_btn = gr.Button("Commit and reveal", variant="primary",
                                       elem_id="commit")
                t_status = gr.Markdown(elem_id="teach-status")
                reveal_md = gr.Markdown(elem_id="reveal")
                t_overlay = gr.Image(label="the model's Grad-CAM", interactive=False,
                                     format="png")
                key_md = gr.Markdown()
                score_md = gr.Markdown(elem_id="score")
                csv_btn = gr.DownloadButton("Download this session's reads (CSV)",
                                            value=None, elem_id="download-csv")

        # ------------------------------------------------------------- hidden API inputs
        with gr.Column(visible=False):
            api_files = gr.File(file_count="multiple", label="files")
            api_t1_series = gr.Textbox(label="t1_series")
            api_t2_series = gr.Textbox(label="t2_series")
            api_t1_images = gr.File(file_count="multiple", label="t1_images")
            api_t2_images = gr.File(file_count="multiple", label="t2_images")
            api_spacing = gr.Number(label="pixel_spacing_mm", value=0)
            api_slice = gr.Number(label="slice_index", value=-1, precision=0)
            api_box = gr.Textbox(label="box")
            api_center = gr.Textbox(label="center")
            api_size = gr.Number(label="size_mm", value=0)
            api_example = gr.Textbox(label="example")
            api_json = gr.JSON(label="result")
            api_overlay = gr.Image(label="overlay", type="pil", format="png")
            api_btns = [gr.Button(visible=False) for _ in range(4)]

        # ================================================================= read handlers
        read_outputs = [read_state, status, series_df, t1_dd, t2_dd, slice_sl, box_tb,
                        slice_img, channels, result_md, overlay, roi_gal, details, dicom_files,
                        t1_images, t2_images]

        def view_updates(st: ReadState, k: int, box) -> dict:
            t1, t2 = st.pair()
            img, st.scale = slice_view(t1, k, box, config, st.center)
            out = {slice_img: outbox.png(img), channels: []}
            if box is not None:
                out[channels] = outbox.gallery(
                    channel_gallery(preview_input(state_model, t1, t2, k, box)))
            return out

        def study_updates(st: ReadState, study: Study) -> dict:
            st.study, st.t1_key, st.t2_key = study, study.t1_key, study.t2_key
            st.center, st.last = None, None
            t1 = study.volumes[study.t1_key]
            k = study.default_slice if study.default_slice is not None else t1.n_slices // 2
            box = study.default_box
            notes = "; ".join(study.notes)
            out = {read_state: st, series_df: series_table(study.rows),
                   t1_dd: gr.update(choices=study.choices, value=study.t1_key),
                   t2_dd: gr.update(choices=study.choices, value=study.t2_key),
                   slice_sl: gr.update(minimum=0, maximum=max(t1.n_slices - 1, 1), value=k),
                   box_tb: format_box(box) if box else "",
                   result_md: "", overlay: None, roi_gal: [], details: None,
                   status: f"Loaded **{study.title}**: {len(study.rows)} series. "
                           + ("Click the centre of the fractured vertebral body, then Predict."
                              if box is None else "")
                           + (f"\n\nNotes: {notes}" if notes else "")}
            out.update(view_updates(st, k, box))
            return out

        def prediction_updates(st: ReadState, k: int, box, alpha: float) -> dict:
            t1, t2 = st.pair()
            pred = predict(state_model, t1, t2, k, box)
            st.last, st.last_k = pred, k
            truth = st.study.truth if st.study else None
            return {read_state: st,
                    result_md: result_markdown(pred, state_model.synthetic, truth, k),
                    overlay: outbox.png(overlay_image(pred, alpha, state_model.synthetic)),
                    roi_gal: outbox.gallery(roi_images(pred, alpha)),
                    details: result_json(state_model, pred, st.study, k, st.t1_key, st.t2_key)}

        def example_handler(key: str):
            @_guard(status)
            def run_example(alpha):
                st = ReadState()
                study = library.load_example(key)
                out = study_updates(st, study)
                if state_model.ready:
                    out.update(prediction_updates(st, study.default_slice, study.default_box,
                                                  alpha))
                    out[status] = f"Example **{study.title}** loaded and run. " + "; ".join(
                        study.notes)
                else:
                    out[status] = error_markdown(state_model.message)
                return out
            run_example.__name__ = f"example_{key}"
            return run_example

        for ex, btn in example_buttons:
            btn.click(example_handler(ex.key), [opacity], read_outputs,
                      api_visibility="private")

        @_guard(status)
        def load_upload(st, files, t1_imgs, t2_imgs, px):
            dicom, t1s, t2s = _paths(files), _paths(t1_imgs), _paths(t2_imgs)
            janitor.hold(dicom + t1s + t2s)
            try:
                if dicom and (t1s or t2s):
                    raise SpineFXError("upload either DICOM or PNG/JPEG slices, not both at once")
                if dicom:
                    study = load_dicom_upload(dicom, work)
                elif t1s or t2s:
                    study = load_image_upload(t1s, t2s, px or None)
                else:
                    raise SpineFXError("choose files first: DICOM files or a .zip, or PNG/JPEG "
                                       "slices for T1 and for T2")
            finally:
                janitor.release(dicom + t1s + t2s)
            out = study_updates(ReadState(), study)
            out.update({dicom_files: None, t1_images: None, t2_images: None})
            return out

        load_btn.click(load_upload, [read_state, dicom_files, t1_images, t2_images, spacing],
                       read_outputs, api_visibility="private")

        @_guard(status)
        def change_series(st, t1_key, t2_key, k, box_text):
            if st is None or st.study is None:
                raise SpineFXError("load a study first")
            st.t1_key, st.t2_key, st.last = t1_key, t2_key, None
            t1, _ = st.pair()
            k = min(int(k or 0), t1.n_slices - 1)
            box = parse_box(box_text)
            out = {read_state: st, status: f"T1 = {st.study.labels[t1_key]}; "
                                           f"T2 = {st.study.labels[t2_key]}",
                   slice_sl: gr.update(maximum=max(t1.n_slices - 1, 1), value=k)}
            out.update(view_updates(st, k, box))
            return out

        for dd in (t1_dd, t2_dd):
            dd.input(change_series, [read_state, t1_dd, t2_dd, slice_sl, box_tb],
                     [read_state, status, slice_sl, slice_img, channels],
                     api_visibility="private")

        @_guard(status)
        def show_slice(st, k, box_text):
            if st is None or st.study is None:
                return {}
            return {**view_updates(st, int(k), parse_box(box_text)), status: ""}

        slice_sl.release(show_slice, [read_state, slice_sl, box_tb],
                         [status, slice_img, channels], api_visibility="private")
        box_tb.submit(show_slice, [read_state, slice_sl, box_tb], [status, slice_img, channels],
                      api_visibility="private")

        @_guard(status)
        def click_centre(st, k, size, evt: gr.SelectData):
            if st is None or st.study is None:
                raise SpineFXError("load a study first")
            t1, _ = st.pair()
            x, y = (float(v) / max(st.scale, 1) for v in evt.index[:2])
            box = box_from_click(t1, (x, y), size)
            st.center = (x, y)
            return {read_state: st, box_tb: format_box(box),
                    status: f"centre ({x:.0f}, {y:.0f}); box {size:.0f} mm. Press Predict.",
                    **view_updates(st, int(k), box)}

        slice_img.select(click_centre, [read_state, slice_sl, size_sl],
                         [read_state, box_tb, status, slice_img, channels],
                         api_visibility="private")

        @_guard(status)
        def resize_box(st, k, size):
            if st is None or st.study is None or st.center is None:
                return {}
            t1, _ = st.pair()
            box = box_from_click(t1, st.center, size)
            return {box_tb: format_box(box), status: "", **view_updates(st, int(k), box)}

        size_sl.release(resize_box, [read_state, slice_sl, size_sl],
                        [box_tb, status, slice_img, channels], api_visibility="private")

        @_guard(status)
        def run_predict(st, k, box_text, alpha):
            if st is None or st.study is None:
                raise SpineFXError("load a study first: upload files or pick an example")
            box = parse_box(box_text)
            if box is None:
                raise SpineFXError("mark the vertebra first: click its centre on the image or "
                                   "type a box")
            t1, _ = st.pair()
            k = check_slice(t1, k)
            out = prediction_updates(st, k, box, alpha)
            out[status] = "Done."
            return out

        predict_btn.click(run_predict, [read_state, slice_sl, box_tb, opacity],
                          [read_state, status, result_md, overlay, roi_gal, details],
                          api_visibility="private")

        @_guard(status)
        def restyle(st, alpha):
            if st is None or st.last is None:
                return {}
            return {overlay: outbox.png(overlay_image(st.last, alpha, state_model.synthetic)),
                    roi_gal: outbox.gallery(roi_images(st.last, alpha))}

        opacity.release(restyle, [read_state, opacity], [status, overlay, roi_gal],
                        api_visibility="private")

        # ============================================================= teaching handlers
        def teaching_views(session: tm.TeachingSession, k: int | None = None) -> dict:
            cases = library.teaching_cases()
            case = cases[session.current]
            t1, t2 = library.teaching_volumes(case)
            k = case.slice if k is None else int(np.clip(k, 0, t1.n_slices - 1))
            box = case.box
            if box is None:
                box = box_from_click(t1, case.center, case.size_mm or config.default_size_mm)
            img1, _ = slice_view(t1, k, box)
            from spinefx.runtime.matching import on_t1_grid
            img2, _ = slice_view(on_t1_grid(t1, t2), k, box)
            return {t_t1: outbox.png(img1), t_t2: outbox.png(img2)}

        @_guard(t_status)
        def next_case(session, reader):
            cases = library.teaching_cases()
            session = session or tm.TeachingSession()
            session.reader = tm.clean_reader(reader)
            session.n_cases = len(cases)
            i = session.next_index(cases)
            if i is None:
                return {teach_state: session, t_status: "You have read every case in the "
                        "library. Download the CSV below; reload the page for a new session."}
            session.current, session.committed = i, False
            case = cases[i]
            t1, _ = library.teaching_volumes(case)
            done = len(session.reads)
            synth = "SYNTHETIC phantom · " if library.synthetic_teaching else ""
            level = f" · vertebra {case.level}" if case.level else ""
            out = {teach_state: session,
                   case_md: f"### Case {done + 1} of {len(cases)}: `{case.case_id}`\n\n"
                            f"{synth}the box marks the fractured vertebral body on slice "
                            f"{case.slice}{level}. Scroll the slices, then commit.",
                   t_slice: gr.update(minimum=0, maximum=max(t1.n_slices - 1, 1),
                                      value=case.slice),
                   call_radio: None, feats: [], reveal_md: "", t_overlay: None, key_md: "",
                   t_status: ""}
            out.update(teaching_views(session))
            return out

        teach_outputs = [teach_state, case_md, t_t1, t_t2, t_slice, call_radio, feats,
                         reveal_md, t_overlay, key_md, t_status]
        next_btn.click(next_case, [teach_state, reader_tb], teach_outputs,
                       api_visibility="private")

        @_guard(t_status)
        def teach_slice(session, k):
            if session is None or session.current is None:
                return {}
            return teaching_views(session, k)

        t_slice.release(teach_slice, [teach_state, t_slice], [t_t1, t_t2, t_status],
                        api_visibility="private")

        @_guard(t_status)
        def commit_read(session, reader, call, ticked):
            if session is None or session.current is None:
                raise SpineFXError("press 'Start / next case' first")
            session.reader = tm.clean_reader(reader)
            case = library.teaching_cases()[session.current]
            read = tm.commit(session, case, call, ticked)
            out = {teach_state: session,
                   reveal_md: tm.truth_markdown(case, read, library.synthetic_teaching),
                   key_md: tm.feature_key_markdown(case, read), t_status: ""}
            if state_model.ready:
                t1, t2 = library.teaching_volumes(case)
                pred = state_model.require().predict_volumes(
                    t1, t2, case.slice, box=case.box, center=case.center, size_mm=case.size_mm)
                read.model_probability, read.model_label = pred.probability, pred.label
                out[t_overlay] = outbox.png(overlay_image(pred, 0.45, state_model.synthetic))
                out[reveal_md] += (f"\n\nThe model: P(malignant) = {pred.probability:.2f} → "
                                   f"**{pred.label}** (threshold {pred.threshold:.2f})"
                                   + (" — trained on SYNTHETIC phantoms" if state_model.synthetic
                                      else ""))
            else:
                out[reveal_md] += "\n\n" + error_markdown(state_model.message)
            out[score_md] = tm.score_markdown(session.reads)
            csv_dir = Path(tempfile.mkdtemp(prefix="reads-", dir=work))
            path = csv_dir / f"spinefx_reads_{session.reader}.csv"
            path.write_text(tm.readers_csv(session), encoding="utf-8")
            out[csv_btn] = str(path)
            return out

        commit_btn.click(commit_read, [teach_state, reader_tb, call_radio, feats],
                         [teach_state, reveal_md, key_md, t_status, t_overlay, score_md, csv_btn],
                         api_visibility="private")

        # ====================================================================== API
        def finish(pred: Prediction, study: Study, k: int, t1_key: str, t2_key: str):
            note = state_model.synthetic
            return (result_json(state_model, pred, study, k, t1_key, t2_key),
                    outbox.png(overlay_image(pred, 0.45, note)))

        def api_predict(study: Study, t1_series, t2_series, slice_index, box, center, size_mm):
            t1_key = _series_key(study, t1_series) or study.t1_key
            t2_key = _series_key(study, t2_series) or study.t2_key
            t1, t2 = study.pair(t1_key, t2_key)
            k, roi_box = resolve_roi(study, t1, slice_index, box, center, size_mm, config)
            pred = predict(state_model, t1, t2, k, roi_box)
            return finish(pred, study, k, t1_key, t2_key)

        @_api_guard
        def predict_case(files, t1_series, t2_series, slice_index, box, center, size_mm):
            """Predict from DICOM files (or a .zip of a study). t1_series / t2_series: series
            number, description or '' for the automatic choice; slice_index: T1 slice (-1 =
            middle); box 'x0,y0,x1,y1' or center 'x,y' (T1 pixels) with size_mm (0 = model
            default). Returns (result JSON, overlay PNG)."""
            state_model.require()
            paths = _paths(files)
            janitor.hold(paths)
            try:
                study = load_dicom_upload(paths, work)
            finally:
                janitor.release(paths)
            return api_predict(study, t1_series, t2_series, slice_index, box, center, size_mm)

        @_api_guard
        def predict_images(t1_images, t2_images, pixel_spacing_mm, slice_index, box, center,
                           size_mm):
            """Predict from PNG/JPEG slices: T1 and T2 lists (ordered by the numbers in their
            names), pixel spacing in mm (0 = unknown, 1 mm assumed); slice/box/center/size as in
            /predict_case. Returns (result JSON, overlay PNG)."""
            state_model.require()
            p1, p2 = _paths(t1_images), _paths(t2_images)
            janitor.hold(p1 + p2)
            try:
                study = load_image_upload(p1, p2, pixel_spacing_mm or None)
            finally:
                janitor.release(p1 + p2)
            return api_predict(study, "", "", slice_index, box, center, size_mm)

        @_api_guard
        def predict_example(example):
            """Run one bundled example by key (see /model_info for the keys)."""
            state_model.require()
            study = library.load_example(str(example or "").strip())
            t1, t2 = study.pair()
            pred = predict(state_model, t1, t2, study.default_slice, study.default_box)
            return finish(pred, study, study.default_slice, study.t1_key, study.t2_key)

        def model_info():
            """The loaded model, the examples and the disclaimer."""
            spec = state_model.predictor.spec if state_model.ready else None
            return {"ready": state_model.ready, "message": state_model.message,
                    "model": state_model.predictor.model_id if spec else None,
                    "threshold": state_model.predictor.threshold if spec else None,
                    "synthetic": state_model.synthetic,
                    "examples": {e.key: e.title for e in library.examples},
                    "teaching": library.teaching_source,
                    "disclaimer": "Research and teaching use only; not for diagnosis."}

        api_btns[0].click(predict_case, [api_files, api_t1_series, api_t2_series, api_slice,
                                         api_box, api_center, api_size],
                          [api_json, api_overlay], api_name="predict_case")
        api_btns[1].click(predict_images, [api_t1_images, api_t2_images, api_spacing, api_slice,
                                           api_box, api_center, api_size],
                          [api_json, api_overlay], api_name="predict_images")
        api_btns[2].click(predict_example, [api_example], [api_json, api_overlay],
                          api_name="predict_example")
        api_btns[3].click(model_info, None, [api_json], api_name="model_info")

    app.queue(default_concurrency_limit=concurrency)
    return app


def _series_key(study: Study, wanted) -> str | None:
    """A study key from a series number, a description substring or a key; '' -> None."""
    text = str(wanted or "").strip()
    if not text:
        return None
    if text in study.volumes:
        return text
    hits = [k for k, label in study.labels.items()
            if label.startswith(f"#{text} ") or text.lower() in label.lower()]
    if len(hits) == 1:
        return hits[0]
    raise SpineFXError(f"series {text!r} matches {'several' if hits else 'no'} usable series; "
                       f"the study has: {'; '.join(study.labels.values())}")


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs):
    """Serve the app with the page style and upload limits (what `spinefx demo` and app.py do)."""
    options = dict(server_name=host, server_port=port, css=CSS, max_file_size=MAX_FILE_SIZE,
                   footer_links=["api"], show_error=False)
    options.update(kwargs)
    return app.launch(**options)
