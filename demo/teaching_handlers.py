"""The Teaching tab's handlers: next case, scroll, commit and reveal.

Each is ``handler(ctx, session, *inputs) -> {component name: value}`` (see ``context.py``).
A teaching case is a :class:`Study` kept by the library, so T2 is aligned once per case and
the model's read goes through the same runtime service as the Read tab and the CLI.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from spinefx.runtime import Case, SpineFXError
from spinefx.runtime.provenance import SYNTHETIC_CAPTION
from spinefx.runtime.study import Study

from . import teaching as tm
from .context import DemoContext, Updates, page_guard
from .service import predict
from .views import error_markdown, overlay_image, slice_view

TEACH_OUTPUTS = ("teach_state", "case_md", "t_t1", "t_t2", "t_slice", "call_radio", "feats",
                 "reveal_md", "t_overlay", "key_md", "t_status")
COMMIT_OUTPUTS = ("teach_state", "reveal_md", "key_md", "t_status", "t_overlay", "score_md",
                  "csv_btn")


def _case_study(ctx: DemoContext, case: Case) -> Study:
    return ctx.library.teaching_study(case, ctx.config.default_size_mm)


def _current_case(ctx: DemoContext, session: tm.TeachingSession) -> Case:
    if session.current is None:
        raise SpineFXError("press 'Start / next case' first")
    return ctx.library.teaching_cases()[session.current]


def teaching_views(ctx: DemoContext, session: tm.TeachingSession,
                   k: int | None = None) -> Updates:
    case = _current_case(ctx, session)
    study = _case_study(ctx, case)
    pair = study.aligned(study.default_pair or study.choose_pair())
    k = case.slice if k is None else int(np.clip(k, 0, pair.t1.n_slices - 1))
    img1, _ = slice_view(pair.t1, k, study.default_box)
    img2, _ = slice_view(pair.t2, k, study.default_box)
    return {"t_t1": ctx.outbox.png(img1), "t_t2": ctx.outbox.png(img2)}


@page_guard("t_status")
def next_case(ctx: DemoContext, session: tm.TeachingSession | None, reader: str) -> Updates:
    cases = ctx.library.teaching_cases()
    session = session or tm.TeachingSession()
    session.reader = tm.clean_reader(reader)
    session.n_cases = len(cases)
    i = session.next_index(cases)
    if i is None:
        return {"teach_state": session, "t_status": "You have read every case in the "
                "library. Download the CSV below; reload the page for a new session."}
    session.current, session.committed = i, False
    case = cases[i]
    n_slices = _case_study(ctx, case).volume("T1").n_slices
    synth = "SYNTHETIC phantom · " if ctx.library.synthetic_teaching else ""
    level = f" · vertebra {case.level}" if case.level else ""
    out: Updates = {
        "teach_state": session,
        "case_md": f"### Case {len(session.reads) + 1} of {len(cases)}: `{case.case_id}`\n\n"
                   f"{synth}the box marks the fractured vertebral body on slice "
                   f"{case.slice}{level}. Scroll the slices, then commit.",
        "t_slice": gr.update(minimum=0, maximum=max(n_slices - 1, 1), value=case.slice),
        "call_radio": None, "feats": [], "reveal_md": "", "t_overlay": None, "key_md": "",
        "t_status": ""}
    out.update(teaching_views(ctx, session))
    return out


@page_guard("t_status")
def teach_slice(ctx: DemoContext, session: tm.TeachingSession | None, k: Any) -> Updates:
    if session is None or session.current is None:
        return {}
    return teaching_views(ctx, session, k)


@page_guard("t_status")
def commit_read(ctx: DemoContext, session: tm.TeachingSession | None, reader: str,
                call: str | None, ticked: list[str] | None) -> Updates:
    if session is None or session.current is None:
        raise SpineFXError("press 'Start / next case' first")
    session.reader = tm.clean_reader(reader)
    case = _current_case(ctx, session)
    read = tm.commit(session, case, call, ticked)
    out: Updates = {"teach_state": session,
                    "reveal_md": tm.truth_markdown(case, read, ctx.library.synthetic_teaching),
                    "key_md": tm.feature_key_markdown(case, read), "t_status": ""}
    if ctx.model.ready:
        study = _case_study(ctx, case)
        result = predict(ctx.model, study, study.default_pair or study.choose_pair(), None)
        pred = result.prediction
        read.model_probability, read.model_label = pred.probability, pred.label
        out["t_overlay"] = ctx.outbox.png(overlay_image(pred, 0.45, result.synthetic_model))
        out["reveal_md"] += (f"\n\nThe model: P(malignant) = {pred.probability:.2f} → "
                             f"**{pred.label}** (threshold {pred.threshold:.2f})"
                             + (f" — {SYNTHETIC_CAPTION}" if result.synthetic_model else ""))
    else:
        out["reveal_md"] += "\n\n" + error_markdown(ctx.model.message)
    out["score_md"] = tm.score_markdown(session.reads)
    out["csv_btn"] = ctx.reads_file(session.reader, tm.readers_csv(session))
    return out
