"""The report to take away: one self-contained, print-ready HTML page (images embedded as base64
PNG) with the findings per vertebra, the result on screen with its explanation, the model's id,
sha256 and limits from model.json, the disclaimer and SYNTHETIC labels.

No PHI: the page is built only from PHI-free parts: the series' descriptions (as the series
table shows them), the localiser's findings, the prediction, model.json. An upload's title
(made from its file names, which can carry a patient's name) is never used; DICOM patient-module
values never reach a Study. No clock time either: the same inputs give the same bytes.
"""
from __future__ import annotations

import base64
import html
import io
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gradio as gr
from PIL import Image

from spinefx.runtime import SpineFXError
from spinefx.runtime.explain import explain_prediction
from spinefx.runtime.files import atomic_write_text
from spinefx.runtime.provenance import DISCLAIMER
from spinefx.runtime.study import Study
from spinefx.runtime.study_analysis import vertebra_entries

from .context import DemoContext, ReadState, Updates, page_guard
from .ingest import HeldSeries
from .views import synthetic_case

REPORT_NAME = "spinefx_report.html"
DICOM_ZIP_NAME = "spinefx_dicom_results.zip"
DICOM_NOTE = ("**DICOM results** (for a DICOM upload): a Comprehensive SR of the findings, a "
              "SEG of the vertebral bodies and a Secondary Capture of the map, in your study. "
              "**They carry the patient module of your upload (name, ID, birth date) by "
              "design**, so that they join the study in your PACS: handle the .zip as patient "
              "data. It is written only when you ask, in this session's folder on the server, "
              "and removed when the session ends.")
_CSS = """
body {font-family: system-ui, sans-serif; margin: 24px; color: #111; max-width: 1000px;}
h1 {font-size: 20px;} h2 {font-size: 16px; margin-top: 22px; border-bottom: 1px solid #ccc;}
table {border-collapse: collapse; font-size: 13px;} td, th {border: 1px solid #bbb;
padding: 3px 8px; text-align: left;} .flag {color: #b45309; font-weight: 600;}
.warn {border: 2px solid #d97706; padding: 6px 10px; background: #fff7ed;}
.synthetic {color: #7c2d12; font-weight: 700;} img {max-width: 100%; margin: 6px 0;}
p {font-size: 13px; line-height: 1.45;}
@media print {body {margin: 8mm;} h2 {break-after: avoid;} img {break-inside: avoid;}}
"""


@dataclass
class ReportInput:
    """What one report shows (all PHI-free by construction, see the module doc)."""
    source: str                                  # "uploaded DICOM study", an example's title
    series: Sequence[str]                        # the T1 and T2 series' descriptions
    model: Mapping[str, Any]                     # model.json
    model_id: str
    model_sha256: str
    synthetic_model: bool
    synthetic_case: bool
    vertebrae: Sequence[Mapping[str, Any]] = ()  # vertebra_entries(): level, grade, p, ...
    spine_note: str = ""                         # why there are no vertebrae, or notes
    result: Mapping[str, Any] | None = None      # Result.to_json() of the result on screen
    explanation: Mapping[str, Any] | None = None
    images: list[tuple[str, Image.Image]] = field(default_factory=list)


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _vertebra_rows(vertebrae: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for v in vertebrae:
        grade, loss, p = v.get("grade"), v.get("height_loss"), v.get("probability")
        flagged = (grade or 0) >= 1
        ood = v.get("ood")
        ood_text = ("not checked" if not v.get("classified") or ood is None
                    else ("unlike training data" if ood.get("flagged") else "ok"))
        cells = [v.get("level"), v.get("slice"),
                 f"grade {grade}" if grade is not None else "not graded",
                 "" if loss is None else f"{100 * float(loss):.0f}%",
                 "" if p is None else f"{float(p):.3f}", v.get("label") or "", ood_text,
                 v.get("error") or v.get("grade_note") or ""]
        cls = ' class="flag"' if flagged else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("level", "slice", "grade (Genant)", "height loss",
                                             "P(malignant)", "call", "OOD", "note"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _result_section(result: Mapping[str, Any], explanation: Mapping[str, Any] | None) -> str:
    roi = result.get("roi")
    out = [f"<p><b>P(malignant) = {float(result['probability']):.3f} &rarr; "
           f"{_e(result['label'])}</b> (threshold {float(result['threshold']):.2f}); "
           f"slice {_e(result.get('slice'))}, box {_e(result.get('box'))}, "
           f"square ROI {_e(roi)}.</p>"]
    truth = result.get("truth") or {}
    if truth.get("label"):
        out.append(f"<p>Ground truth (SYNTHETIC phantom): <b>{_e(truth['label'])}</b>"
                   + (f" at {_e(truth['level'])}" if truth.get("level") else "") + ".</p>")
    for warning in result.get("warnings") or []:
        out.append(f'<p class="warn">Warning: {_e(warning)}</p>')
    if explanation:
        op, cal, ood = (explanation["operating_point"], explanation["calibration"],
                        explanation["ood"])
        for head, text in (("What the threshold means", explanation["threshold_meaning"]),
                           ("What it gives", op["statement"]),
                           ("Calibration", cal["statement"]),
                           (f"Out of distribution: {ood['verdict']}", ood["statement"]),
                           ("The map", explanation["map"])):
            out.append(f"<p><b>{_e(head)}.</b> {_e(text)}</p>")
    return "".join(out)


def _model_section(r: ReportInput) -> str:
    raw = r.model
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), Mapping) else {}
    training: Mapping[str, Any] = (raw["training_data"] if isinstance(raw.get("training_data"),
                                                                       Mapping) else {})
    versions = ((raw.get("export") or {}).get("versions") or {}) if isinstance(
        raw.get("export"), Mapping) else {}
    limits = [("intended use", raw.get("intended_use") or "not stated in model.json"),
              ("trained on", training.get("description") or "not stated in model.json"),
              ("evaluated", (metrics or {}).get("source") or (metrics or {}).get("mode")
               or "model.json records no evaluation"),
              ("out-of-distribution check", (raw.get("ood") or {}).get("method")
               if isinstance(raw.get("ood"), Mapping) else "none in model.json")]
    rows = [("model", r.model_id), ("name", raw.get("name")),
            ("spinefx version", versions.get("spinefx") or "not recorded"),
            ("sha256", r.model_sha256), ("threshold", raw.get("threshold")), *limits]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    synthetic = ('<p class="synthetic">The model was trained on SYNTHETIC phantoms '
                 "(procedurally generated images, not patients).</p>" if r.synthetic_model
                 else "")
    return f"<h2>Model and its limits</h2>{synthetic}<table>{body}</table>"


def build_report(r: ReportInput) -> str:
    """The report's HTML (deterministic: the same input gives the same text)."""
    banner = []
    if r.synthetic_case:
        banner.append("SYNTHETIC case (a phantom, not a patient)")
    if r.synthetic_model:
        banner.append("model trained on SYNTHETIC phantoms")
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>spinefx report (research, not for diagnosis)</title>",
             f"<style>{_CSS}</style></head><body>",
             "<h1>spinefx: vertebral compression fracture, benign vs malignant</h1>",
             f'<p class="warn"><b>{_e(DISCLAIMER)}</b> Research software, not a medical '
             "device: this report is not a diagnosis and must not guide care.</p>"]
    if banner:
        parts.append(f'<p class="synthetic">{_e("; ".join(banner))}.</p>')
    parts.append(f"<h2>Study</h2><p>{_e(r.source)}. Series: "
                 f"{_e('; '.join(r.series))}.</p>")
    parts.append("<h2>Vertebrae found automatically</h2>")
    if r.vertebrae:
        parts.append(_vertebra_rows(r.vertebrae))
    if r.spine_note:
        parts.append(f"<p>{_e(r.spine_note)}</p>")
    parts.append("<h2>The result on screen</h2>")
    parts.append(_result_section(r.result, r.explanation) if r.result
                 else "<p>No result: nothing was predicted.</p>")
    for caption, image in r.images:
        parts.append(f"<figure><img alt='{_e(caption)}' src='{png_data_uri(image)}'>"
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    parts.append(_model_section(r))
    parts.append(f"<p><i>{_e(DISCLAIMER)}</i></p></body></html>")
    return "\n".join(parts)


def write_report(work: Path, text: str, previous: str | None = None) -> str:
    """The report in a fresh private folder under ``work`` (a session's folder: removed with
    it); the session's ``previous`` report is deleted."""
    reports = work / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="report-", dir=reports))
    path = atomic_write_text(folder / REPORT_NAME, text)
    if previous and Path(previous).parent.parent == reports:
        shutil.rmtree(Path(previous).parent, ignore_errors=True)
    return str(path)


def view_at_result(ctx: DemoContext, st: ReadState,
                   render: Callable[..., str | None]) -> Image.Image | None:
    """The T1 | T2 picture at the current result's own slice and box (``render``: the read
    tab's cached renderer), leaving the session's click mapping on the picture on screen."""
    if st.last is None:
        return None
    shown = st.view
    path = render(ctx, st, st.last.roi.slice_index, st.last.roi.box)
    st.view = shown
    if path is None:
        return None
    with Image.open(path) as picture:
        return picture.convert("RGB")


def report_text(ctx: DemoContext, st: ReadState, view: Image.Image | None) -> str:
    """The report of a session's study, vertebrae and current result (``view``: the T1 | T2
    picture at the result's slice)."""
    study, pair = st.require()
    predictor = ctx.model.predictor
    raw = predictor.spec.raw if predictor is not None else {}
    result = st.last
    images: list[tuple[str, Image.Image]] = []
    if result is not None and view is not None:
        images.append((f"T1 | T2 at slice {result.roi.slice_index}: the box (yellow) and the "
                       "square ROI the model crops (green); vertebrae labelled", view))
    if result is not None:
        method = ("Grad-CAM" if result.prediction.map_method == "cam"
                  else "Occlusion map (probability drop when each part of the box is hidden)")
        images.append((f"{method} on the T1 and T2 lesion slices", result.overlay(0.45)))
    report = ReportInput(
        source=st.source, series=[study.labels[pair.t1], study.labels[pair.t2]], model=raw,
        model_id=predictor.model_id if predictor is not None else "no model loaded",
        model_sha256=predictor.sha256 if predictor is not None else "",
        synthetic_model=ctx.model.synthetic, synthetic_case=synthetic_case(study, pair),
        vertebrae=vertebra_entries(st.spine) if st.spine is not None else [],
        spine_note=st.spine_error, result=result.to_json() if result is not None else None,
        explanation=(explain_prediction(result.prediction, raw, result.synthetic_model)
                     if result is not None else None), images=images)
    return build_report(report)


def session_report(ctx: DemoContext, st: ReadState, view: Image.Image | None) -> str:
    """Write :func:`report_text` in the session's folder; returns its path and deletes the
    session's previous report."""
    text = report_text(ctx, st, view)
    st.report = write_report(ctx.session_outbox(st).folder, text, st.report)
    return st.report


def dicom_source(st: ReadState) -> HeldSeries | None:
    """The T1 series' held source files when the session's study is a DICOM upload with a
    whole-spine analysis (the DICOM results need both), else None."""
    if st.study is None or st.pair is None or st.spine is None or st.study.kind != "dicom":
        return None
    held = st.study.entries[st.pair.t1].loader
    return held if isinstance(held, HeldSeries) and held.sources else None


def dicom_updates(st: ReadState) -> Updates:
    """The DICOM results' controls: offered for a DICOM upload's analysis, hidden otherwise."""
    offered = dicom_source(st) is not None
    return {"dicom_prepare": gr.update(visible=offered),
            "dicom_btn": gr.update(value=None, visible=False),
            "dicom_note": gr.update(visible=offered)}


def write_dicom_results(ctx: DemoContext, st: ReadState) -> str:
    """SR, SEG and SC of the session's analysis (``spinefx.runtime.dicom_outputs``) in one zip
    under the session's folder; the source headers are staged in a private folder for the
    build and removed."""
    from spinefx.runtime.dicom_outputs import dicom_results, encode_dataset, result_seed

    held, predictor = dicom_source(st), ctx.model.require()
    if held is None or st.spine is None:
        raise SpineFXError("DICOM results need a DICOM upload whose vertebrae were found")
    study, pair = st.require()
    folder = ctx.session_outbox(st).folder
    with tempfile.TemporaryDirectory(prefix="sources-", dir=folder) as tmp:
        t1 = held.source_volume(study.volume(pair.t1), Path(tmp))
        source = Study.from_volumes({pair.t1: ("T1", t1),
                                     pair.t2: ("T2", study.volume(pair.t2))},
                                    title="", kind="dicom")
        datasets = dicom_results(st.spine, source, predictor.spec, st.spine.primary.overlay(),
                                 seed=result_seed(st.spine, source))
        encoded = [encode_dataset(ds) for ds in datasets]
    target = folder / f"dicom-{uuid.uuid4().hex}"
    target.mkdir()
    path = target / DICOM_ZIP_NAME
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in zip(("SR.dcm", "SEG.dcm", "SC.dcm"), encoded):
            zf.writestr(name, data)
    if st.dicom_zip:
        shutil.rmtree(Path(st.dicom_zip).parent, ignore_errors=True)
    st.dicom_zip = str(path)
    return st.dicom_zip


@page_guard("status")
def prepare_dicom(ctx: DemoContext, st: ReadState | None) -> Updates:
    """The "prepare DICOM results" button: the zip, then its download button."""
    if st is None:
        raise SpineFXError("load a DICOM study first")
    path = write_dicom_results(ctx, st)
    return {"dicom_btn": gr.update(value=path, visible=True),
            "status": "DICOM results ready (SR, SEG, capture): they carry the patient data of "
                      "your upload."}
