"""The Teaching tab: layout and wiring (handlers: ``teaching_handlers.py`` for residents,
``teaching_dashboard.py`` for the teacher).

The data folder (:func:`teaching_store.default_data_dir`) is resolved when the tab is built;
its ``exports`` subfolder is served as static files so CSV downloads stay in the data folder
(gradio does not copy them into its cache). The resident's session code and name, and the
teacher's code and key, are kept in the browser's localStorage (``gr.BrowserState``) so a
reload or a new tab resumes; the progress itself is on the server.
"""
from __future__ import annotations

from os import PathLike

import gradio as gr

from . import teaching as tm
from . import teaching_dashboard as td
from . import teaching_handlers as th
from .context import DemoContext
from .teaching_store import TeachingStore, default_data_dir
from .wiring import UI, bind, pick

STORE = "teaching_store"   # the ui entry holding the tab's TeachingStore (not a component)


def _resident_panel(ctx: DemoContext, ui: UI) -> None:
    gr.Markdown("Read the case, commit your call and the features you see, then compare with "
                "the truth and the model. Case library: " + ctx.library.teaching_source + ".")
    with gr.Row():
        ui["code_tb"] = gr.Textbox(label="session code (from your teacher; empty = practise "
                                         "alone)", elem_id="session-code", scale=1)
        ui["reader_tb"] = gr.Textbox(label="your name or initials (required in a session; "
                                           "unique in it)", elem_id="reader-name", scale=2)
        ui["next_btn"] = gr.Button("Start / next case", variant="secondary",
                                   elem_id="next-case", scale=1)
    ui["who_md"] = gr.Markdown(elem_id="teach-who")
    ui["t_status"] = gr.Markdown(elem_id="teach-status")
    ui["case_md"] = gr.Markdown(elem_id="case-info")
    with gr.Row():
        ui["t_t1"] = gr.Image(label="T1", interactive=False, format="png", height=380)
        ui["t_t2"] = gr.Image(label="T2", interactive=False, format="png", height=380)
    ui["t_slice"] = gr.Slider(0, 1, value=0, step=1,
                              label="slice (the box marks the lesion slice)")
    ui["call_radio"] = gr.Radio(list(tm.CALLS), label="your call", elem_id="call")
    ui["feats"] = gr.CheckboxGroup(tm.feature_titles(), label=tm.CHECKLIST_LABEL,
                                   elem_id="features")
    ui["commit_btn"] = gr.Button("Commit and reveal", variant="primary", elem_id="commit")
    ui["reveal_md"] = gr.Markdown(elem_id="reveal")
    ui["t_overlay"] = gr.Image(label="the model's Grad-CAM", interactive=False, format="png")
    ui["key_md"] = gr.Markdown()
    ui["score_md"] = gr.Markdown(elem_id="score")
    ui["csv_btn"] = gr.DownloadButton("Download your reads (CSV)", value=None,
                                      elem_id="download-csv")


def _teacher_panel(ui: UI) -> None:
    gr.Markdown("Create a session and give its code to the residents; their results appear "
                "below as they commit. The teacher key (shown once) reopens this dashboard.")
    with gr.Row():
        ui["title_tb"] = gr.Textbox(label="session title (optional)", elem_id="session-title",
                                    scale=2)
        ui["create_btn"] = gr.Button("Create a session", variant="primary",
                                     elem_id="create-session", scale=1)
    with gr.Row():
        ui["watch_code_tb"] = gr.Textbox(label="…or reopen a session: its code",
                                         elem_id="watch-code")
        ui["watch_key_tb"] = gr.Textbox(label="teacher key", type="password",
                                        elem_id="watch-key")
        ui["watch_btn"] = gr.Button("Open dashboard", elem_id="watch")
    ui["teacher_status"] = gr.Markdown(elem_id="teacher-status")
    ui["dash_md"] = gr.Markdown(elem_id="dash-summary")
    ui["dash_residents"] = gr.Dataframe(headers=td.RESIDENT_HEADERS, interactive=False,
                                        label="residents", elem_id="dash-residents", wrap=True)
    ui["dash_cases"] = gr.Dataframe(headers=td.CASE_HEADERS, interactive=False,
                                    label="hardest cases (most wrong calls first)",
                                    elem_id="dash-cases", wrap=True, max_height=320)
    ui["dash_features"] = gr.Dataframe(headers=td.FEATURE_HEADERS, interactive=False,
                                       label="most-missed features (miss rate where present)",
                                       elem_id="dash-features", wrap=True, max_height=320)
    ui["export_btn"] = gr.DownloadButton("Download all reads of the session (CSV for "
                                         "`spinefx evaluate --readers`)", value=None,
                                         elem_id="export-session")
    ui["dash_timer"] = gr.Timer(td.REFRESH_S, active=False)
    _add_case_panel(ui)


def _add_case_panel(ui: UI) -> None:
    with gr.Accordion("Add a teaching case (instructor-provided)", open=False):
        gr.Markdown("Upload one study: its T1 and T2 pixels are kept (no DICOM header, so no "
                    "patient name, ID or dates), with the truth, the feature key and your notes, "
                    "in the library folder beside the sessions. Pixels are kept as they are: "
                    "upload only studies free of burned-in identifiers. Residents see the case "
                    "labelled instructor-provided, real or synthetic as you state it.")
        with gr.Row():
            ui["add_files"] = gr.File(file_count="multiple", label="DICOM files or a .zip",
                                      elem_id="add-files")
            ui["add_t1"] = gr.File(file_count="multiple", label="…or T1 PNG/JPEG slices",
                                   file_types=["image"])
            ui["add_t2"] = gr.File(file_count="multiple", label="…and T2 slices",
                                   file_types=["image"])
        with gr.Row():
            ui["add_label"] = gr.Radio(list(tm.CALLS), label="truth", elem_id="add-label")
            ui["add_provenance"] = gr.Radio([("real MRI, de-identified", "real"),
                                             ("synthetic", "synthetic")],
                                            label="the study is", elem_id="add-provenance")
            ui["add_spacing"] = gr.Number(label="pixel spacing in mm (PNG slices only)",
                                          value=None, minimum=0)
        with gr.Row():
            ui["add_slice"] = gr.Number(label="lesion slice (T1, from 0)", precision=0,
                                        elem_id="add-slice")
            ui["add_box"] = gr.Textbox(label="lesion box x0, y0, x1, y1 (T1 pixels)",
                                       elem_id="add-box")
            ui["add_level"] = gr.Textbox(label="vertebra (e.g. L1; optional)")
        ui["add_features"] = gr.CheckboxGroup(tm.feature_titles(),
                                              label="features present in this case (the key)",
                                              elem_id="add-features")
        ui["add_notes"] = gr.Textbox(label="teaching notes (shown after the resident commits)",
                                     lines=3)
        ui["add_confirm"] = gr.Checkbox(label="I confirm this study is de-identified (or "
                                              "synthetic) and may be used for teaching",
                                        elem_id="add-confirm")
        ui["add_btn"] = gr.Button("Add the case", elem_id="add-case")
        ui["add_status"] = gr.Markdown(elem_id="add-status")


def teaching_tab(ctx: DemoContext, ui: UI, data_dir: str | PathLike | None = None) -> None:
    """``data_dir``: the teaching data folder (None: :func:`default_data_dir`, resolved now)."""
    store = TeachingStore(data_dir if data_dir is not None else default_data_dir())
    gr.set_static_paths([store.exports_dir])
    ui[STORE] = store
    # Rendered at the page's top level by wire_teaching: a BrowserState inside a tab that is
    # not shown is not mounted, so on a reload (the Read tab shows) it would read its default.
    ui["teach_browser"] = gr.BrowserState({"code": "", "name": ""}, render=False,
                                          storage_key="spinefx-teaching-resident")
    ui["teacher_browser"] = gr.BrowserState({"code": "", "key": ""}, render=False,
                                            storage_key="spinefx-teaching-teacher")
    ui["teacher_state"] = gr.State(None)
    with gr.Tabs():
        with gr.Tab("Resident", id="teaching-resident"):
            _resident_panel(ctx, ui)
        with gr.Tab("Teacher dashboard", id="teaching-teacher"):
            _teacher_panel(ui)


def wire_teaching(ctx: DemoContext, ui: UI) -> None:
    """Wire the tab; called at the page's top level (outside the tabs), see teaching_tab."""
    private = {"api_visibility": "private"}
    ui["teach_browser"].render()
    ui["teacher_browser"].render()
    store = ui[STORE]
    teach = pick(ui, th.TEACH_OUTPUTS)
    ui["next_btn"].click(bind(ctx, ui, th.next_case, store),
                         pick(ui, ("teach_state", "code_tb", "reader_tb")), teach, **private)
    ui["t_slice"].release(bind(ctx, ui, th.teach_slice, store),
                          pick(ui, ("teach_state", "t_slice")),
                          pick(ui, ("t_t1", "t_t2", "t_status")), **private)
    ui["commit_btn"].click(bind(ctx, ui, th.commit_read, store),
                           pick(ui, ("teach_state", "call_radio", "feats")),
                           pick(ui, th.COMMIT_OUTPUTS), **private)
    teacher = pick(ui, td.TEACHER_OUTPUTS)
    ui["create_btn"].click(bind(ctx, ui, td.create_session, store), [ui["title_tb"]], teacher,
                           **private)
    ui["watch_btn"].click(bind(ctx, ui, td.watch_session, store),
                          pick(ui, ("watch_code_tb", "watch_key_tb")), teacher, **private)
    # Cheap SQLite reads: off the queue's model-sized concurrency limit, no progress bar.
    ui["dash_timer"].tick(bind(ctx, ui, td.refresh, store), [ui["teacher_state"]],
                          pick(ui, td.REFRESH_OUTPUTS + ("teacher_status",)),
                          concurrency_limit=None, show_progress="hidden", **private)
    ui["add_btn"].click(bind(ctx, ui, td.add_case, store), pick(ui, td.ADD_INPUTS),
                        pick(ui, td.ADD_OUTPUTS), **private)
    page = gr.context.Context.root_block
    assert page is not None, "wire_teaching runs inside the app's gr.Blocks"
    page.load(bind(ctx, ui, th.resume, store), [ui["teach_browser"]], teach,
              api_visibility="private")
    page.load(bind(ctx, ui, td.restore, store), [ui["teacher_browser"]], teacher,
              api_visibility="private")
