"""The Teaching tab's resident handlers: join or resume, next case, scroll, commit and reveal.

Each is ``handler(ctx, store, session, *inputs) -> {component name: value}`` (see
``context.py``). A resident who gives a session code is stored server-side
(:mod:`teaching_store`): their reads are the store's, so a reload or another tab resumes at the
next unread case with the score so far. Without a code the resident practises alone; that
session lives in this tab only. A teaching case is a :class:`Study` kept by the library, so T2
is aligned once per case and the model's read goes through the same runtime service as the
Read tab and the CLI.
"""
from __future__ import annotations

import secrets
from typing import Any

import gradio as gr
import numpy as np

from spinefx.runtime import Case, SpineFXError
from spinefx.runtime.provenance import SYNTHETIC_CAPTION
from spinefx.runtime.study import Study

from . import teaching as tm
from .context import DemoContext, Updates, page_guard
from .service import predict
from .teaching_cases import InstructorLibrary
from .teaching_store import Resident, TeachingStore, case_order
from .views import error_markdown, overlay_image, slice_view

TEACH_OUTPUTS = ("teach_state", "teach_browser", "code_tb", "reader_tb", "who_md", "case_md",
                 "t_t1", "t_t2", "t_slice", "call_radio", "feats", "reveal_md", "t_overlay",
                 "key_md", "t_status", "score_md", "csv_btn")
COMMIT_OUTPUTS = ("teach_state", "reveal_md", "key_md", "t_status", "t_overlay", "score_md",
                  "csv_btn", "who_md")
PRACTICE_NOTE = ("Practising alone: your reads stay in this tab only (a reload starts again). "
                 "Enter the session code your teacher gave you and your name to be scored.")


def all_cases(ctx: DemoContext, store: TeachingStore) -> dict[str, Case]:
    """The server's teaching set and the instructor's own cases, by id."""
    cases = {c.case_id: c for c in ctx.library.teaching_cases()}
    for case in InstructorLibrary(store.library_dir).cases():
        cases.setdefault(case.case_id, case)
    return cases


def case_source(ctx: DemoContext, store: TeachingStore, case: Case) -> tuple[str, str]:
    """(what the case is, as the user must be told; the instructor's notes)."""
    note = InstructorLibrary(store.library_dir).notes().get(case.case_id)
    if note is not None:
        return note.caption, note.notes
    return ("SYNTHETIC phantom" if ctx.library.synthetic_teaching else ""), ""


def _case_study(ctx: DemoContext, case: Case) -> Study:
    return ctx.library.teaching_study(case, ctx.config.default_size_mm)


def _current_case(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession) -> Case:
    if session.current is None:
        raise SpineFXError("press 'Start / next case' first")
    case = all_cases(ctx, store).get(session.current)
    if case is None:
        raise SpineFXError(f"case {session.current} is no longer in this server's library")
    return case


def _resident(session: tm.TeachingSession) -> Resident | None:
    if session.resident_id is None or session.code is None:
        return None
    return Resident(session.resident_id, session.code, session.reader)


def _refresh(store: TeachingStore, session: tm.TeachingSession) -> None:
    """Reads committed in another tab count here too."""
    resident = _resident(session)
    if resident is not None:
        session.reads = store.reads_of(resident)


def _identify(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession | None,
              code: str | None, name: str | None) -> tuple[tm.TeachingSession, str]:
    """(the session for this code and name, a line saying who the resident is now)."""
    ids = list(all_cases(ctx, store))
    if not (code or "").strip():
        if session is not None and session.code is None:
            return session, ""
        seed = f"practice-{secrets.token_hex(8)}"   # a fresh shuffle for each practice
        return tm.TeachingSession(order=case_order(seed, "practice", ids)), PRACTICE_NOTE
    info = store.session(code)
    resident, resumed = store.join(info.code, name)
    known = set(ids)
    order = [c for c in case_order(info.code, resident.name, info.case_ids) if c in known]
    if session is not None and session.resident_id == resident.id:
        session.order = order              # the teacher may have added a case since
        _refresh(store, session)
        return session, ""
    fresh = tm.TeachingSession(reader=resident.name, code=info.code, resident_id=resident.id,
                               order=order, reads=store.reads_of(resident))
    missing = len(info.case_ids) - len(order)
    note = (f" {missing} of the session's cases are not in this server's library and are "
            "skipped." if missing else "")
    if resumed:
        return fresh, (f"Welcome back: **{tm.md_escape(resident.name)}** is already in "
                       f"session {info.code}, "
                       f"so you continue as that resident ({len(fresh.reads)} of {len(order)} "
                       "read). If that is not you, choose another name." + note)
    return fresh, f"Joined session {info.code} as **{tm.md_escape(resident.name)}**." + note


def who_markdown(session: tm.TeachingSession) -> str:
    done = f"{len(session.read_ids() & set(session.order))} of {len(session.order)} cases read"
    if session.code is None:
        return f"**Practice** (not saved) · {done}"
    return (f"Session **{session.code}** · resident **{tm.md_escape(session.reader)}** · "
            f"{done}")


def _csv_file(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession) -> str | None:
    if not session.reads:
        return None
    text = tm.readers_csv(session)
    if session.code is None:
        return ctx.reads_file(session.reader, text)
    token = f"{session.code}-r{session.resident_id}-{secrets.token_hex(8)}"
    return str(store.export(token, f"spinefx_reads_{tm.clean_reader(session.reader)}.csv", text))


def teaching_views(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession,
                   k: int | None = None) -> Updates:
    case = _current_case(ctx, store, session)
    study = _case_study(ctx, case)
    pair = study.aligned(study.default_pair or study.choose_pair())
    k = case.slice if k is None else int(np.clip(k, 0, pair.t1.n_slices - 1))
    img1, _ = slice_view(pair.t1, k, study.default_box)
    img2, _ = slice_view(pair.t2, k, study.default_box)
    return {"t_t1": ctx.outbox.png(img1), "t_t2": ctx.outbox.png(img2)}


@page_guard("t_status")
def next_case(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession | None,
              code: str | None, name: str | None) -> Updates:
    session, hello = _identify(ctx, store, session, code, name)
    out: Updates = {"teach_state": session, "who_md": who_markdown(session),
                    "score_md": tm.score_markdown(session.reads),
                    "csv_btn": _csv_file(ctx, store, session)}
    if session.code is not None:
        out.update({"teach_browser": {"code": session.code, "name": session.reader},
                    "code_tb": session.code, "reader_tb": session.reader})
    case_id = session.next_case_id()
    if case_id is None:
        session.current = None
        return {**out, "case_md": "", "t_status": (hello + "\n\n" if hello else "")
                + "You have read every case of this session. Download your CSV below."}
    session.current, session.committed = case_id, False
    case = all_cases(ctx, store)[case_id]
    n_slices = _case_study(ctx, case).volume("T1").n_slices
    source, _ = case_source(ctx, store, case)
    synth = f"{source} · " if source else ""
    level = f" · vertebra {case.level}" if case.level else ""
    out.update({
        "case_md": f"### Case {len(session.reads) + 1} of {len(session.order)}: `{case_id}`"
                   f"\n\n{synth}the box marks the fractured vertebral body on slice "
                   f"{case.slice}{level}. Scroll the slices, then commit.",
        "t_slice": gr.update(minimum=0, maximum=max(n_slices - 1, 1), value=case.slice),
        "call_radio": None, "feats": [], "reveal_md": "", "t_overlay": None, "key_md": "",
        "t_status": hello})
    out.update(teaching_views(ctx, store, session))
    return out


def resume(ctx: DemoContext, store: TeachingStore, remembered: Any) -> Updates:
    """On page load: the resident this browser remembers continues where they left off."""
    if not isinstance(remembered, dict) or not remembered.get("code"):
        return {"t_status": gr.skip()}   # (gradio reads an empty dict as one value)
    try:
        store.session(remembered.get("code"))
    except SpineFXError as exc:   # the session is gone (another data folder?): forget it
        return {"teach_browser": {"code": "", "name": ""}, "t_status": error_markdown(str(exc))}
    return next_case(ctx, store, None, remembered.get("code"), remembered.get("name"))


@page_guard("t_status")
def teach_slice(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession | None,
                k: Any) -> Updates:
    if session is None or session.current is None:
        return {"t_status": gr.skip()}
    return teaching_views(ctx, store, session, k)


def _model_read(ctx: DemoContext, case: Case, read: tm.Read) -> Updates:
    """The model's call on the case (stored with the read) and its map."""
    if not ctx.model.ready:
        return {"reveal_md": "\n\n" + error_markdown(ctx.model.message)}
    study = _case_study(ctx, case)
    result = predict(ctx.model, study, study.default_pair or study.choose_pair(), None)
    pred = result.prediction
    read.model_probability, read.model_label = pred.probability, pred.label
    return {"t_overlay": ctx.outbox.png(overlay_image(pred, 0.45, result.synthetic_model)),
            "reveal_md": (f"\n\nThe model: P(malignant) = {pred.probability:.2f} → "
                          f"**{pred.label}** (threshold {pred.threshold:.2f})"
                          + (f" — {SYNTHETIC_CAPTION}" if result.synthetic_model else ""))}


@page_guard("t_status")
def commit_read(ctx: DemoContext, store: TeachingStore, session: tm.TeachingSession | None,
                call: str | None, ticked: list[str] | None) -> Updates:
    if session is None or session.current is None:
        raise SpineFXError("press 'Start / next case' first")
    case = _current_case(ctx, store, session)
    _refresh(store, session)
    read = tm.make_read(session, case, call, ticked)
    model = _model_read(ctx, case, read)
    resident = _resident(session)
    if resident is not None:
        store.record_read(resident, read)      # one transaction: stored whole or not at all
    session.reads.append(read)
    session.committed = True
    source, notes = case_source(ctx, store, case)
    notes = f"\n\n**The instructor's notes:** {notes}" if notes else ""
    return {"teach_state": session,
            "reveal_md": tm.truth_markdown(case, read, source) + notes + model["reveal_md"],
            "t_overlay": model.get("t_overlay"),
            "key_md": tm.feature_key_markdown(case, read), "t_status": "",
            "score_md": tm.score_markdown(session.reads),
            "csv_btn": _csv_file(ctx, store, session), "who_md": who_markdown(session)}
