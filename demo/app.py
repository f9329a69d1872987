"""The Gradio app: a Read tab for clinicians and a Teaching tab for residents — layout and
wiring only. The handlers are module-level functions in ``read_handlers.py``,
``teaching_handlers.py`` and ``api.py`` over one :class:`~spinefx.demo.context.DemoContext`.

``build_app(model=None, cases_dir=None)`` returns a ``gr.Blocks`` (queue configured);
``launch(app, host, port)`` serves it with the page's CSS and upload limits. The model is
loaded once per process and shared by every session; gradio runs handlers in its thread pool
(off the event loop), at most ``concurrency`` at a time.

Named API endpoints (stateless; see README "Demo API"): ``/predict_case``,
``/predict_images``, ``/predict_example``, ``/model_info`` (see ``api.py``).
"""
from __future__ import annotations

import atexit
import os
import time
from os import PathLike
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from . import api
from . import read_handlers as rh
from .context import DemoContext, drop_state
from .level_handlers import correct_levels
from .map_handlers import show_occlusion
from .report import DICOM_NOTE, prepare_dicom
from .spine_view import spine_panel
from .teaching_app import teaching_tab, wire_teaching
from .viewer import DEFAULT_PRESET, WL_PRESETS, ZOOMS
from .views import CAM_CAPTION, DISCLAIMER, SERIES_HEADERS
from .wiring import UI, bind, pick

STATE_TTL_S = 3600
DEFAULT_CONCURRENCY = 2
MAX_FILE_SIZE = "512mb"   # per uploaded file; zips are also capped by what they unpack to
CSS = """
#disclaimer {border: 2px solid #d97706; border-radius: 8px; padding: 6px 12px;
             background: rgba(217, 119, 6, 0.08);}
#status {min-height: 1.5em;}
#result .prose h3 {margin-top: 0;}
"""
# The mouse wheel over the images, and the arrow / page keys while the pointer is over them
# (no text field focused), step the slice slider and fire its own input event, so the page
# redraws as for an arrow key on the focused slider. Delegated from the document: gradio
# renders the slider after this script runs.
VIEWER_JS = """<script>
(() => {
  let overImage = false;
  const step = (delta) => {
    const range = document.querySelector("#slice-slider input[type=range]");
    if (!range) return false;
    const next = Math.min(Number(range.max), Math.max(Number(range.min),
                          Number(range.value) + delta));
    if (next !== Number(range.value)) {
      range.value = String(next);
      range.dispatchEvent(new Event("input", {bubbles: true}));
    }
    return true;
  };
  document.addEventListener("mouseover", (event) => {
    overImage = !!(event.target.closest && event.target.closest("#slice-image"));
  });
  document.addEventListener("wheel", (event) => {
    if (!(event.target.closest && event.target.closest("#slice-image"))) return;
    if (step(event.deltaY > 0 ? 1 : -1)) event.preventDefault();
  }, {passive: false});
  const keys = {ArrowDown: 1, ArrowRight: 1, PageDown: 1, ArrowUp: -1, ArrowLeft: -1, PageUp: -1};
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest && event.target.closest("input, textarea, select");
    if (!overImage || typing || !(event.key in keys)) return;
    if (step(keys[event.key])) event.preventDefault();
  });
})();
</script>"""
APP_TITLE = "spinefx: benign vs malignant vertebral compression fracture (research demo)"

class DemoBlocks(gr.Blocks):
    """The demo's ``gr.Blocks``: ``close()`` also removes every file the demo and gradio wrote
    for this app (:func:`remove_served_files`); so does the process's exit."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.spinefx_started = time.time()

    def close(self, verbose: bool = True) -> None:
        super().close(verbose)
        remove_served_files(self)


def remove_served_files(app: gr.Blocks) -> None:
    """Shutdown cleanup: the demo's work folder (outputs, reports, session folders, caches'
    pictures) and gradio's copies of this app's uploads and outputs (its temp file sets, with
    their hash folders once empty). Other apps' files in a shared temp folder are not touched."""
    ctx = getattr(app, "spinefx_context", None)
    if isinstance(ctx, DemoContext):
        ctx.close()
    cache = Path(app.GRADIO_CACHE).resolve()
    for temp_set in app.temp_file_sets:
        for name in list(temp_set):
            path = Path(name)
            try:
                path.unlink(missing_ok=True)
                parent = path.parent.resolve()
                if parent != cache and parent.is_relative_to(cache) and not any(parent.iterdir()):
                    parent.rmdir()
            except OSError:
                pass
        temp_set.clear()
    _remove_upload_stubs(cache, getattr(app, "spinefx_started", time.time()))


def _remove_upload_stubs(cache: Path, since: float) -> None:
    """Gradio's multipart parser leaves an empty ``tmpXXXXXXXX`` per uploaded file in the
    temp folder (its content went to the hash folder). The empty ones created while this app
    ran are removed (another process's upload in a shared folder is empty for microseconds
    only: its parser writes as soon as it opens the file)."""
    for stub in cache.glob("tmp*"):
        try:
            info = stub.stat()
            if stub.is_file() and info.st_size == 0 and info.st_ctime >= since - 1:
                stub.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------
def _load_column(ctx: DemoContext, ui: UI) -> None:
    gr.Markdown("#### 1 · Load a study")
    ui["examples"] = []
    with gr.Row():
        for ex in ctx.library.examples:
            ui["examples"].append((ex, gr.Button(ex.title, size="sm",
                                                 elem_id=f"example-{ex.key}")))
    with gr.Accordion("Upload DICOM (files or one .zip of the study)", open=True):
        ui["dicom_files"] = gr.File(file_count="multiple", label="DICOM files or a .zip",
                                    elem_id="dicom-files")
    with gr.Accordion("…or PNG/JPEG slices with their sequence", open=False):
        ui["t1_images"] = gr.File(file_count="multiple", label="T1 slices",
                                  file_types=["image"])
        ui["t2_images"] = gr.File(file_count="multiple", label="T2 slices",
                                  file_types=["image"])
        ui["spacing"] = gr.Number(label="pixel spacing in mm (optional)", value=None,
                                  minimum=0)
        gr.Markdown("Slices are ordered by the number in their file name.")
    ui["load_btn"] = gr.Button("Load upload", elem_id="load-upload")
    # narrow number columns and a wrapped description: weighting/slices/status stay in view
    ui["series_df"] = gr.Dataframe(headers=SERIES_HEADERS, interactive=False,
                                   label="series found (no patient data)", wrap=True,
                                   column_widths=["7%", "53%", "14%", "10%", "16%"])
    # one dropdown per line: series labels are long and a half-width box cuts them off
    ui["t1_dd"] = gr.Dropdown(label="T1-weighted series", choices=[], interactive=True)
    ui["t2_dd"] = gr.Dropdown(label="T2-weighted series", choices=[], interactive=True)


def _mark_column(ctx: DemoContext, ui: UI) -> None:
    gr.Markdown("#### 2 · Scroll, adjust, mark the fractured vertebra")
    ui["slice_sl"] = gr.Slider(0, 1, value=0, step=1, label="slice (T1 and T2 together; arrow "
                               "keys on the slider, or the mouse wheel over the images)",
                               elem_id="slice-slider")
    with gr.Accordion("window/level and zoom", open=True):
        ui["wl_preset"] = gr.Radio(list(WL_PRESETS), value=DEFAULT_PRESET, label="preset",
                                   elem_id="wl-preset")
        with gr.Row():
            ui["wl_level"] = gr.Slider(0, 100, value=50, step=1, label="level (% of range)",
                                       elem_id="wl-level")
            ui["wl_width"] = gr.Slider(5, 200, value=100, step=1, label="width (% of range)",
                                       elem_id="wl-width")
        ui["zoom_rd"] = gr.Radio([f"{z:g}x" for z in ZOOMS], value="1x",
                                 label="zoom (around the box or the click)", elem_id="zoom")
    ui["size_sl"] = gr.Slider(15, 120, value=ctx.config.default_size_mm, step=1,
                              label="box size in mm (used when you click)")
    ui["box_tb"] = gr.Textbox(label="box x0, y0, x1, y1 (T1 pixels)",
                              placeholder="click the vertebral body's centre on the image, or "
                                          "type a box", elem_id="box")
    ui["predict_btn"] = gr.Button("Predict", variant="primary", elem_id="predict")


def _result_column(ui: UI) -> None:
    ui["status"] = gr.Markdown("Load an example or upload a study.", elem_id="status")
    spine_panel(ui)
    ui["slice_img"] = gr.Image(label="T1 | T2 (resliced onto T1): click the centre of the "
                                     "vertebral body on either", interactive=False,
                               type="numpy", format="png", elem_id="slice-image", height=460)
    ui["channels"] = gr.Gallery(label="the 6 input channels the model sees (T1 and T2, "
                                      "slices k-1, k, k+1)", columns=6, height=180,
                                elem_id="channels")
    ui["result_md"] = gr.Markdown(elem_id="result")
    ui["report_btn"] = gr.DownloadButton("Download the report (print-ready HTML)", value=None,
                                         elem_id="report", size="sm")
    with gr.Row():
        ui["dicom_prepare"] = gr.Button("Prepare the DICOM results (SR, SEG, capture)",
                                        visible=False, size="sm", elem_id="dicom-prepare")
        ui["dicom_btn"] = gr.DownloadButton("Download the DICOM results (.zip)", value=None,
                                            visible=False, size="sm", elem_id="dicom-results")
    ui["dicom_note"] = gr.Markdown(DICOM_NOTE, visible=False, elem_id="dicom-note")
    ui["overlay"] = gr.Image(label="the map (Grad-CAM, or occlusion: its legend says) on the T1 "
                                   "and T2 lesion slices", interactive=False,
                             format="png", elem_id="overlay")
    ui["roi_gal"] = gr.Gallery(label="ROI with the map", columns=2, height=280, elem_id="roi")
    with gr.Row():
        ui["opacity"] = gr.Slider(0, 1, value=0.45, step=0.05, label="map opacity")
        ui["occlusion_btn"] = gr.Button("Occlusion map instead (hides each part of the box in "
                                        "turn; about 0.25 s)", size="sm", elem_id="occlusion")
    gr.Markdown(CAM_CAPTION, elem_id="cam-caption")
    ui["details"] = gr.JSON(label="details (JSON)", open=False)


def _api_inputs(ui: UI) -> None:
    """Hidden components that give the named API endpoints their parameters."""
    with gr.Column(visible=False):
        ui["api_files"] = gr.File(file_count="multiple", label="files")
        ui["api_t1_series"] = gr.Textbox(label="t1_series")
        ui["api_t2_series"] = gr.Textbox(label="t2_series")
        ui["api_t1_images"] = gr.File(file_count="multiple", label="t1_images")
        ui["api_t2_images"] = gr.File(file_count="multiple", label="t2_images")
        ui["api_spacing"] = gr.Number(label="pixel_spacing_mm", value=0)
        ui["api_slice"] = gr.Number(label="slice_index", value=-1, precision=0)
        ui["api_box"] = gr.Textbox(label="box")
        ui["api_center"] = gr.Textbox(label="center")
        ui["api_size"] = gr.Number(label="size_mm", value=0)
        ui["api_example"] = gr.Textbox(label="example")
        ui["api_json"] = gr.JSON(label="result")
        ui["api_overlay"] = gr.Image(label="overlay", type="pil", format="png")
        ui["api_btns"] = [gr.Button(visible=False) for _ in range(4)]


# ---------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------
def _wire_read(ctx: DemoContext, ui: UI) -> None:
    private = {"api_visibility": "private"}
    outputs = pick(ui, rh.READ_OUTPUTS)
    for ex, btn in ui["examples"]:
        btn.click(bind(ctx, ui, api.run_example, ex.key), pick(ui, ("read_state", "opacity")),
                  outputs, **private)
    ui["load_btn"].click(bind(ctx, ui, rh.load_upload),
                         pick(ui, ("read_state", "dicom_files", "t1_images", "t2_images",
                                    "spacing")), outputs, **private)
    for dd in (ui["t1_dd"], ui["t2_dd"]):
        dd.input(bind(ctx, ui, rh.change_series),
                 pick(ui, ("read_state", "t1_dd", "t2_dd", "slice_sl", "box_tb")),
                 pick(ui, ("slice_sl", "spine_md", "spine_df", "dicom_prepare", "dicom_btn",
                           "dicom_note", *rh.VIEW_OUTPUTS)),
                 **private)
    ui["dicom_prepare"].click(bind(ctx, ui, prepare_dicom), [ui["read_state"]],
                              pick(ui, ("dicom_btn", "status")), **private)
    ui["level_rd"].input(bind(ctx, ui, rh.pick_level),
                         pick(ui, ("read_state", "level_rd", "opacity")),
                         pick(ui, ("slice_sl", "box_tb", "report_btn",
                                   *rh.VIEW_OUTPUTS)),
                         **private)
    ui["level_fix_btn"].click(bind(ctx, ui, correct_levels),
                              pick(ui, ("read_state", "level_fix_dd", "opacity")),
                              pick(ui, ("slice_sl", "box_tb", "report_btn", "spine_md",
                                        "spine_df", "dicom_prepare", "dicom_btn", "dicom_note",
                                        *rh.VIEW_OUTPUTS)), **private)
    _wire_viewer(ctx, ui)

    def on_select(st: Any, k: Any, size: float, evt: gr.SelectData) -> dict:
        out = rh.click_centre(ctx, st, k, size, tuple(evt.index[:2]))
        return {ui[name]: value for name, value in out.items()}

    ui["slice_img"].select(on_select, pick(ui, ("read_state", "slice_sl", "size_sl")),
                           pick(ui, ("box_tb", *rh.VIEW_OUTPUTS)), **private)
    ui["size_sl"].release(bind(ctx, ui, rh.resize_box),
                          pick(ui, ("read_state", "slice_sl", "size_sl")),
                          pick(ui, ("box_tb", *rh.VIEW_OUTPUTS)), **private)
    ui["predict_btn"].click(bind(ctx, ui, rh.run_predict),
                            pick(ui, ("read_state", "slice_sl", "box_tb", "opacity")),
                            pick(ui, ("read_state", "status", "result_md", "overlay",
                                       "roi_gal", "details", "report_btn")), **private)
    ui["occlusion_btn"].click(bind(ctx, ui, show_occlusion), pick(ui, ("read_state", "opacity")),
                              pick(ui, ("read_state", "status", "result_md", "overlay",
                                        "roi_gal", "details", "report_btn")), **private)
    ui["opacity"].release(bind(ctx, ui, rh.restyle), pick(ui, ("read_state", "opacity")),
                          pick(ui, ("status", "overlay", "roi_gal")), **private)


def _wire_viewer(ctx: DemoContext, ui: UI) -> None:
    """Scrolling (slider, arrow keys, the wheel script), typing a box, W/L and zoom redraw at
    once: ``.input`` with ``always_last`` (a burst of key presses renders the last slice only);
    the outputs include the result, cleared when it goes out of date."""
    quiet: dict[str, Any] = {"api_visibility": "private", "trigger_mode": "always_last",
                             "show_progress": "hidden"}
    view = pick(ui, rh.VIEW_OUTPUTS)
    slice_inputs = pick(ui, ("read_state", "slice_sl", "box_tb"))
    ui["slice_sl"].input(bind(ctx, ui, rh.show_slice), slice_inputs, view, **quiet)
    ui["box_tb"].input(bind(ctx, ui, rh.type_box), slice_inputs, view, **quiet)
    ui["wl_preset"].input(bind(ctx, ui, rh.set_preset),
                          pick(ui, ("read_state", "wl_preset", "slice_sl", "box_tb")),
                          pick(ui, ("wl_level", "wl_width", *rh.VIEW_OUTPUTS)), **quiet)
    window_inputs = pick(ui, ("read_state", "wl_level", "wl_width", "zoom_rd", "slice_sl",
                              "box_tb"))
    for control in (ui["wl_level"], ui["wl_width"], ui["zoom_rd"]):
        control.input(bind(ctx, ui, rh.set_window), window_inputs, view, **quiet)


def _end_sessions(app: gr.Blocks) -> None:
    """A closed or reloaded tab ends its session now (a reload is a new session anyway): its
    states are deleted, so :func:`drop_state` removes the session's folder at once instead of
    gradio's hour for a closed session's state."""
    def end_session(request: gr.Request) -> None:
        if request is not None and request.session_hash:
            app.state_holder.delete_state(request.session_hash)
    app.unload(end_session)


def _endpoint(ctx: DemoContext, fn: Callable) -> Callable:
    def endpoint(*inputs: Any) -> Any:
        return fn(ctx, *inputs)
    endpoint.__name__, endpoint.__doc__ = fn.__name__, fn.__doc__
    return endpoint


def _wire_api(ctx: DemoContext, ui: UI) -> None:
    result = pick(ui, ("api_json", "api_overlay"))
    where = pick(ui, ("api_slice", "api_box", "api_center", "api_size"))
    btns = ui["api_btns"]
    btns[0].click(_endpoint(ctx, api.predict_case),
                  pick(ui, ("api_files", "api_t1_series", "api_t2_series")) + where, result,
                  api_name="predict_case")
    btns[1].click(_endpoint(ctx, api.predict_images),
                  pick(ui, ("api_t1_images", "api_t2_images", "api_spacing")) + where, result,
                  api_name="predict_images")
    btns[2].click(_endpoint(ctx, api.predict_example), [ui["api_example"]], result,
                  api_name="predict_example")
    btns[3].click(_endpoint(ctx, api.model_info), None, [ui["api_json"]],
                  api_name="model_info")


def build_app(model: str | PathLike | None = None, cases_dir: str | PathLike | None = None,
              *, cache_dir: str | PathLike | None = None, concurrency: int | None = None,
              temp_dir: str | PathLike | None = None,
              upload_grace_s: float | None = None, allow_outside: bool = False) -> gr.Blocks:
    """The demo app. ``model``: a model folder (None = the bundled model; if it is missing the
    page says so and everything but prediction works). ``cases_dir``: an instructor's folder
    with manifest.csv for teaching mode (None = the bundled SYNTHETIC teaching set);
    ``allow_outside``: its series may lie outside that folder."""
    concurrency = int(concurrency or os.environ.get("SPINEFX_DEMO_CONCURRENCY")
                      or DEFAULT_CONCURRENCY)
    if upload_grace_s is None:
        upload_grace_s = float(os.environ.get("SPINEFX_DEMO_UPLOAD_GRACE_S", 20))
    ctx = DemoContext.create(model, cases_dir, cache_dir, concurrency, temp_dir,
                             [gr.utils.get_upload_folder()], upload_grace_s, allow_outside)
    ui: UI = {}
    # gradio's copies of outputs and uploads go after 15 min (sessions' own files go at their
    # end, everything at close or exit)
    with DemoBlocks(title=APP_TITLE, delete_cache=(300, 900), analytics_enabled=False) as app:
        app.spinefx_context = ctx           # for tests and tools
        app.spinefx_workdir, app.spinefx_library = ctx.work, ctx.library
        app.spinefx_model, app.spinefx_janitor = ctx.model, ctx.janitor
        gr.Markdown(f"# {APP_TITLE}")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        gr.Markdown(("Model " if ctx.model.ready else "**No model loaded:** ")
                    + ctx.model.message, elem_id="model-status")
        ui["read_state"] = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=drop_state)
        ui["teach_state"] = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Tabs():
            with gr.Tab("Read", id="read"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        _load_column(ctx, ui)
                        _mark_column(ctx, ui)
                    with gr.Column(scale=3):
                        _result_column(ui)
            with gr.Tab("Teaching", id="teaching"):
                teaching_tab(ctx, ui)
        _api_inputs(ui)
        _end_sessions(app)
        _wire_read(ctx, ui)
        wire_teaching(ctx, ui)
        _wire_api(ctx, ui)
    app.queue(default_concurrency_limit=concurrency)
    atexit.register(remove_served_files, app)
    return app


#: Sessions whose state the server keeps (gradio's default is 10,000). Every API call made
#: without a session (plain curl) opens one that copies the app's config, ~0.3 MiB: measured
#: +75 MiB over 200 such calls. 200 sessions bound that to ~60 MiB; beyond 200 open tabs the
#: oldest session loses its Read-tab state (teaching progress lives in SQLite, not here).
STATE_SESSION_CAPACITY = 200


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any):
    """Serve the app with the page style and upload limits (what `spinefx demo` and app.py do)."""
    options: dict[str, Any] = dict(server_name=host, server_port=port, css=CSS, head=VIEWER_JS,
                                   max_file_size=MAX_FILE_SIZE, footer_links=["api"],
                                   show_error=False,
                                   state_session_capacity=STATE_SESSION_CAPACITY)
    options.update(kwargs)
    return app.launch(**options)
