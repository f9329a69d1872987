"""The teacher's dashboard: create a session, watch its residents live, export every read,
add teaching cases from uploaded studies (``teaching_cases.py``).

The tables are plain functions of the session's reads (``(resident name, read)`` rows from the
store); the handlers follow the tab's convention ``handler(ctx, store, ...) -> {name: value}``.
The dashboard needs the session's teacher key (shown once, at creation): the code the
residents join with does not open other residents' results.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import gradio as gr

from spinefx.runtime import FEATURES, SpineFXError
from spinefx.runtime.service import parse_box

from . import teaching as tm
from .context import DemoContext, Updates, page_guard, upload_paths, upload_title
from .ingest import load_dicom_upload, load_image_upload
from .teaching_cases import InstructorLibrary
from .teaching_handlers import all_cases
from .teaching_store import SessionInfo, TeachingStore

REFRESH_S = 3.0
RESIDENT_HEADERS = ["resident", "reads", "accuracy", "sensitivity", "specificity", "TP", "FN",
                    "TN", "FP", "agrees with model", "feature sensitivity",
                    "feature specificity", "feature kappa"]
CASE_HEADERS = ["case", "truth", "reads", "wrong calls", "wrong", "features missed"]
FEATURE_HEADERS = ["feature", "leans", "present (reads)", "missed", "miss rate",
                   "ticked when absent"]
TEACHER_OUTPUTS = ("teacher_state", "teacher_browser", "dash_timer", "dash_md",
                   "dash_residents", "dash_cases", "dash_features", "export_btn",
                   "teacher_status")
ADD_INPUTS = ("teacher_state", "add_files", "add_t1", "add_t2", "add_spacing", "add_label",
              "add_slice", "add_box", "add_level", "add_features", "add_notes",
              "add_provenance", "add_confirm")
ADD_OUTPUTS = ("add_status", "add_files", "add_t1", "add_t2")
REFRESH_OUTPUTS = ("teacher_state", "dash_md", "dash_residents", "dash_cases",
                   "dash_features", "export_btn")

Rows = list[tuple[str, tm.Read]]


def _by_resident(rows: Rows, names: list[str]) -> dict[str, list[tm.Read]]:
    grouped: dict[str, list[tm.Read]] = {n: [] for n in names}
    for name, read in rows:
        grouped.setdefault(name, []).append(read)
    return grouped


def resident_rows(rows: Rows, names: list[str]) -> list[list[Any]]:
    """One row per resident (those who joined and read nothing yet too)."""
    table = []
    for name, reads in _by_resident(rows, names).items():
        s = tm.score(reads)
        kappa = "–" if s["feature_kappa"] is None else f"{s['feature_kappa']:.2f}"
        model = (f"{tm.pct(s['model_agreement'])} of {s['model_n']}" if s["model_n"]
                 else "–")
        table.append([name, s["n"], tm.pct(s["accuracy"]), tm.pct(s["sensitivity"]),
                      tm.pct(s["specificity"]), s["tp"], s["fn"], s["tn"], s["fp"], model,
                      tm.pct(s["feature_sensitivity"]), tm.pct(s["feature_specificity"]),
                      kappa])
    return table


def hardest_cases(rows: Rows) -> list[list[Any]]:
    """Cases by wrong calls (most first), then by features missed."""
    cases: dict[str, dict[str, Any]] = {}
    for _, r in rows:
        c = cases.setdefault(r.case_id, {"truth": r.truth, "n": 0, "wrong": 0, "missed": 0})
        c["n"] += 1
        c["wrong"] += int(r.call != r.truth)
        c["missed"] += sum(1 for k, v in r.features_truth.items()
                           if v and k not in r.features_seen)
    order = sorted(cases.items(), key=lambda kv: (-kv[1]["wrong"] / kv[1]["n"],
                                                  -kv[1]["missed"], kv[0]))
    return [[cid, c["truth"], c["n"], c["wrong"], tm.pct(c["wrong"] / c["n"]), c["missed"]]
            for cid, c in order]


def missed_features(rows: Rows) -> list[list[Any]]:
    """Features by how often residents missed them where present (most missed first)."""
    counts = tm.feature_counts(r for _, r in rows)
    table = []
    for f in FEATURES:
        c = counts[f.key]
        present = c["tp"] + c["fn"]
        rate = c["fn"] / present if present else None
        table.append([f.title, f.leaning, present, c["fn"], tm.pct(rate), c["fp"]])
    return sorted(table, key=lambda row: (-(row[3] / row[2]) if row[2] else 1.0, row[0]))


def model_markdown(rows: Rows) -> str:
    """The model's own calls on the cases the residents read (each case once)."""
    calls = {r.case_id: (r.model_label, r.truth) for _, r in rows if r.model_label is not None}
    if not calls:
        return "The model's calls: none recorded yet (no model loaded, or no reads)."
    s = tm.score([tm.Read(cid, label, truth, [], {}) for cid, (label, truth) in calls.items()])
    return (f"**The model** on the {s['n']} case{'s' if s['n'] != 1 else ''} read so far: "
            f"accuracy {tm.pct(s['accuracy'])} · sensitivity {tm.pct(s['sensitivity'])} · "
            f"specificity {tm.pct(s['specificity'])} (TP {s['tp']}, FN {s['fn']}, TN {s['tn']}, "
            f"FP {s['fp']})")


def summary_markdown(info: SessionInfo, n_residents: int, rows: Rows) -> str:
    title = f" · {tm.md_escape(info.title)}" if info.title else ""
    n_reads = len(rows)
    return (f"### Session {info.code}{title}\n\nResidents join with the code **{info.code}** "
            f"and their name · {len(info.case_ids)} cases · {n_residents} resident"
            f"{'s' if n_residents != 1 else ''} · {n_reads} read{'s' if n_reads != 1 else ''}"
            f" · updated {time.strftime('%H:%M:%S')} (every {REFRESH_S:.0f} s)\n\n"
            + model_markdown(rows))


def _export_token(info: SessionInfo) -> str:
    return f"{info.code}-t{hashlib.sha256(info.teacher_key.encode()).hexdigest()[:20]}"


@page_guard("teacher_status")
def refresh(ctx: DemoContext, store: TeachingStore, state: Any) -> Updates:
    """The live tables; the export file is rewritten only when the reads changed."""
    if not isinstance(state, dict) or not state.get("code"):
        return {"teacher_status": gr.skip()}   # (gradio reads an empty dict as one value)
    info = store.teacher_session(state["code"], state["key"])
    rows = store.session_reads(info.code)
    names = [r.name for r in store.residents(info.code)]
    out: Updates = {"dash_md": summary_markdown(info, len(names), rows),
                    "dash_residents": resident_rows(rows, names),
                    "dash_cases": hardest_cases(rows), "dash_features": missed_features(rows)}
    if state.get("exported") != len(rows):
        path = store.export(_export_token(info), f"spinefx_reads_session_{info.code}.csv",
                            tm.reads_csv(rows))
        state = {**state, "exported": len(rows)}
        out.update({"export_btn": str(path), "teacher_state": state})
    return out


@page_guard("teacher_status")
def watch_session(ctx: DemoContext, store: TeachingStore, code: str | None,
                  key: str | None) -> Updates:
    info = store.teacher_session(code, key)
    state = {"code": info.code, "key": info.teacher_key, "exported": None}
    out = {"teacher_state": state, "teacher_browser": {"code": info.code,
                                                       "key": info.teacher_key},
           "dash_timer": gr.Timer(REFRESH_S, active=True), "teacher_status": ""}
    return {**out, **refresh(ctx, store, state)}


@page_guard("teacher_status")
def create_session(ctx: DemoContext, store: TeachingStore, title: str | None) -> Updates:
    ids = list(all_cases(ctx, store))
    info = store.create_session(ids, title or "")
    out = watch_session(ctx, store, info.code, info.teacher_key)
    out["teacher_status"] = (f"Created session **{info.code}**. Your teacher key is "
                             f"**{info.teacher_key}**: keep it, it reopens this dashboard "
                             "(residents need only the code).")
    return out


def restore(ctx: DemoContext, store: TeachingStore, remembered: Any) -> Updates:
    """On page load: the dashboard this browser last watched."""
    if not isinstance(remembered, dict) or not remembered.get("code"):
        return {"teacher_status": gr.skip()}
    return watch_session(ctx, store, remembered.get("code"), remembered.get("key"))


@page_guard("add_status")
def add_case(ctx: DemoContext, store: TeachingStore, state: Any, files: Any, t1_images: Any,
             t2_images: Any, spacing: float | None, label: str | None, k: Any,
             box_text: str | None, level: str | None, present: list[str] | None,
             notes: str | None, provenance: str | None, confirmed: bool) -> Updates:
    """An uploaded study (DICOM, or PNG slices for T1 and T2) becomes a teaching case in the
    instructor's library, and joins the session on the dashboard, if one is open."""
    if not confirmed:
        raise SpineFXError("confirm first that the study is de-identified (or synthetic) and "
                           "may be used for teaching")
    dicom, t1s, t2s = upload_paths(files), upload_paths(t1_images), upload_paths(t2_images)
    ctx.janitor.hold(dicom + t1s + t2s)
    try:
        if dicom and (t1s or t2s):
            raise SpineFXError("upload either DICOM or PNG/JPEG slices, not both at once")
        if dicom:
            study = load_dicom_upload(dicom, ctx.work, title=upload_title(dicom, "DICOM"))
        else:
            study = load_image_upload(t1s, t2s, spacing or None,
                                      title=upload_title(t1s + t2s, "image slices"))
    finally:
        ctx.janitor.release(dicom + t1s + t2s)
    pair = study.aligned(study.default_pair or study.choose_pair())
    keys = [tm.TITLE_TO_KEY[t] for t in present or [] if t in tm.TITLE_TO_KEY]
    case = InstructorLibrary(store.library_dir).add(
        pair.t1, pair.t2, label, int(k if k is not None else -1), parse_box(box_text), keys,
        notes or "", provenance, level or "")
    message = (f"Added **{case.case_id}** ({case.label}, {len(keys)} feature"
               f"{'s' if len(keys) != 1 else ''} present) to the instructor's library: every "
               "new session includes it.")
    if isinstance(state, dict) and state.get("code"):
        store.add_case(state["code"], case.case_id)
        message += f" Session {state['code']} has it too."
    return {"add_status": message, "add_files": None, "add_t1": None, "add_t2": None}
