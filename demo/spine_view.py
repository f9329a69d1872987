"""Click-free reading: on load the runtime's whole-spine analysis (localiser + one prediction per
vertebra, :func:`spinefx.runtime.study_analysis.analyse_spine`) lists every vertebra with its
level, grade and probability; picking a level jumps to its slice and box and shows its result.
If localising fails the page says so in plain words and the click/box path stays.
"""
from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from spinefx.runtime import SpineFXError
from spinefx.runtime.study_analysis import SpineAnalysis, analyse_spine
from spinefx.runtime.vertebrae import LEVELS

from .context import ReadState, Updates
from .wiring import UI

log = logging.getLogger("spinefx.demo")

NEEDS_SPACING = ("automatic reading needs the pixel spacing: give it (mm) when uploading images, "
                 "or click the vertebra")
SPINE_HEADERS = ["level", "slice", "grade", "height loss", "P(malignant)", "call", "OOD", "note"]


def spine_panel(ui: UI) -> None:
    """Click-free reading: every vertebra the localiser found, a level picker, and the level
    correction (the picked vertebra's true level; the others follow in order)."""
    ui["spine_md"] = gr.Markdown(elem_id="spine-summary")
    ui["level_rd"] = gr.Radio([], label="vertebrae found (pick one: its slice, box and result)",
                              elem_id="levels")
    with gr.Row():
        ui["level_fix_dd"] = gr.Dropdown(list(LEVELS), value=None, label="the picked vertebra "
                                         "is really (corrects every level)", elem_id="level-fix")
        ui["level_fix_btn"] = gr.Button("Correct the levels", size="sm", elem_id="level-fix-btn")
    with gr.Accordion("all vertebrae (level, grade, probability)", open=False):
        ui["spine_df"] = gr.Dataframe(headers=SPINE_HEADERS, interactive=False, wrap=True,
                                      elem_id="vertebrae")


def run_localiser(predictor: Any, st: ReadState,
                  anchor: tuple[int, str] | None = None) -> None:
    """Analyse the loaded pair into ``st.spine`` (or ``st.spine_error`` in plain words);
    ``anchor`` = (index, level): the user's correction of the level count."""
    study, pair = st.require()
    st.spine, st.picked, st.spine_error = None, None, ""
    if predictor is None:
        st.spine_error = "no model is loaded, so the vertebrae were not classified"
        return
    if not study.volume(pair.t1).spacing_known:
        # the localiser's sizes are in mm: on a guessed 1 mm grid it finds spurious vertebrae
        st.spine_error = NEEDS_SPACING
        return
    try:
        st.spine = analyse_spine(predictor, study, pair, anchor=anchor)
    except SpineFXError as exc:
        log.info("localiser found nothing usable (%s)", type(exc).__name__)
        st.spine_error = str(exc)


def grade_text(entry: dict) -> str:
    grade = entry.get("grade")
    if grade is None:
        return "not graded (cut by the image edge)" if entry.get("truncated") else "not graded"
    return f"FRACTURE grade {grade}" if grade >= 1 else "0"


def spine_rows(spine: SpineAnalysis) -> list[list]:
    """One table row per vertebra, superior to inferior."""
    rows = []
    for entry, result, error in zip(spine.localisation.document["vertebrae"], spine.results,
                                    spine.errors):
        loss = entry.get("height_loss")
        p = result.prediction if result is not None else None
        ood = "" if p is None else ("unlike training data" if p.ood_flagged
                                    else ("ok" if p.ood else "not checked"))
        rows.append([entry["level"], entry["slice"], grade_text(entry),
                     "" if loss is None else f"{100 * loss:.0f}%",
                     "" if p is None else f"{p.probability:.2f}",
                     "" if p is None else p.label, ood,
                     error or entry.get("grade_note") or ""])
    return rows


def level_choices(spine: SpineAnalysis) -> list[tuple[str, str]]:
    out = []
    for i, (entry, result) in enumerate(zip(spine.localisation.document["vertebrae"],
                                            spine.results)):
        flag = f" · FRACTURE grade {entry['grade']}" if (entry.get("grade") or 0) >= 1 else ""
        prob = f" · P={result.prediction.probability:.2f}" if result is not None else ""
        out.append((f"{entry['level']}{flag}{prob}", str(i)))
    return out


def spine_summary(spine: SpineAnalysis | None, error: str) -> str:
    if spine is None:
        return ("**Automatic reading unavailable:** " + (error or "the localiser did not run")
                + ". Mark the vertebra yourself: click its centre on the image or type a box.")
    doc = spine.localisation.document
    entries = doc["vertebrae"]
    fractured = [f"{e['level']} (grade {e['grade']})" for e in entries
                 if (e.get("grade") or 0) >= 1]
    most = entries[spine.primary_index]["level"]
    text = (f"**{len(entries)} vertebrae found** on {spine.localised_on}"
            + (" (levels uncertain: " + str(doc.get("level_reason") or "") + ")"
               if doc.get("levels_uncertain") else "")
            + ". Fractured (height loss, Genant grade >= 1): "
            + (", ".join(fractured) if fractured else "none")
            + f". Most suspicious: **{most}**. Pick a level to see it; the click/box path "
              "still works.")
    if spine.notes:
        text += "\n\nNotes: " + "; ".join(spine.notes)
    return text


def spine_updates(st: ReadState) -> Updates:
    """The vertebra table, the level picker and the summary line."""
    if st.spine is None:
        return {"spine_md": spine_summary(None, st.spine_error), "spine_df": [],
                "level_rd": gr.update(choices=[], value=None)}
    return {"spine_md": spine_summary(st.spine, ""), "spine_df": spine_rows(st.spine),
            "level_rd": gr.update(choices=level_choices(st.spine),
                                  value=None if st.picked is None else str(st.picked))}


def picked_entry(st: ReadState, choice: Any) -> tuple[int, dict]:
    if st.spine is None:
        raise SpineFXError("no vertebrae were found automatically: mark the vertebra by hand")
    entries = st.spine.localisation.document["vertebrae"]
    try:
        i = int(choice)
        return i, entries[i]
    except (TypeError, ValueError, IndexError):
        raise SpineFXError(f"no vertebra {choice!r} in this study") from None
