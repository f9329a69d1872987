"""The Teaching tab: layout and wiring (the handlers are in ``teaching_handlers.py``)."""
from __future__ import annotations

import gradio as gr

from . import teaching as tm
from . import teaching_handlers as th
from .context import DemoContext
from .wiring import UI, bind, pick


def teaching_tab(ctx: DemoContext, ui: UI) -> None:
    gr.Markdown("Read the case, commit your call and the features you see, then compare with "
                "the truth and the model. Case library: " + ctx.library.teaching_source + ".")
    with gr.Row():
        ui["reader_tb"] = gr.Textbox(label="your name or initials (goes into the CSV)",
                                     value="resident", scale=2)
        ui["next_btn"] = gr.Button("Start / next case", variant="secondary",
                                   elem_id="next-case", scale=1)
    ui["case_md"] = gr.Markdown(elem_id="case-info")
    with gr.Row():
        ui["t_t1"] = gr.Image(label="T1", interactive=False, format="png", height=380)
        ui["t_t2"] = gr.Image(label="T2", interactive=False, format="png", height=380)
    ui["t_slice"] = gr.Slider(0, 1, value=0, step=1,
                              label="slice (the box marks the lesion slice)")
    ui["call_radio"] = gr.Radio(list(tm.CALLS), label="your call", elem_id="call")
    ui["feats"] = gr.CheckboxGroup(tm.feature_titles(), label="features you see (8 "
                                   "malignant-leaning first, then 7 benign-leaning)",
                                   elem_id="features")
    ui["commit_btn"] = gr.Button("Commit and reveal", variant="primary", elem_id="commit")
    ui["t_status"] = gr.Markdown(elem_id="teach-status")
    ui["reveal_md"] = gr.Markdown(elem_id="reveal")
    ui["t_overlay"] = gr.Image(label="the model's Grad-CAM", interactive=False, format="png")
    ui["key_md"] = gr.Markdown()
    ui["score_md"] = gr.Markdown(elem_id="score")
    ui["csv_btn"] = gr.DownloadButton("Download this session's reads (CSV)", value=None,
                                      elem_id="download-csv")


def wire_teaching(ctx: DemoContext, ui: UI) -> None:
    private = {"api_visibility": "private"}
    ui["next_btn"].click(bind(ctx, ui, th.next_case), pick(ui, ("teach_state", "reader_tb")),
                         pick(ui, th.TEACH_OUTPUTS), **private)
    ui["t_slice"].release(bind(ctx, ui, th.teach_slice), pick(ui, ("teach_state", "t_slice")),
                          pick(ui, ("t_t1", "t_t2", "t_status")), **private)
    ui["commit_btn"].click(bind(ctx, ui, th.commit_read),
                           pick(ui, ("teach_state", "reader_tb", "call_radio", "feats")),
                           pick(ui, th.COMMIT_OUTPUTS), **private)
