"""Pictures and words the page shows (numpy + Pillow; no gradio here)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from spinefx.runtime import ModelInput, PreprocessConfig, RoiError, Volume, square_roi
from spinefx.runtime.inference import Prediction
from spinefx.runtime.ood import OOD_WARNING
from spinefx.runtime.overlay import blend, render_overlay, window
from spinefx.runtime.preprocess import crop
from spinefx.runtime.provenance import DISCLAIMER as RESULT_DISCLAIMER
from spinefx.runtime.provenance import SYNTHETIC_CAPTION
from spinefx.runtime.study import SeriesPair, Study

DISPLAY_MIN = 448   # small slices are enlarged for display; clicks are scaled back
ROI_DISPLAY = 256

DISCLAIMER = (
    f"**{RESULT_DISCLAIMER}** The bundled model was trained on "
    "SYNTHETIC phantoms (procedurally generated images, not patients); it demonstrates the "
    "pipeline of Yeh et al., Eur Spine J 2022, and says nothing reliable about a real patient. "
    "Uploaded files are read in memory and deleted at once; no patient name, ID or birth date is "
    "shown, logged or stored, except in the DICOM results of a DICOM upload, written only when "
    "you ask for them (they carry your upload's patient module for your PACS) and removed when "
    "your session ends.")

CAM_CAPTION = (
    "**How to read the map.** Bright colours mark the parts of the box that pushed the model's "
    "score the most (Grad-CAM of the last convolutional block, computed inside the ONNX graph). "
    "The map is normalised per case: it shows *where* the model looked, not *how sure* it is, "
    "and it is bright somewhere even when the probability is low. It is not a segmentation of "
    "tumour or fracture, it does not prove the model used the right reason, and it only covers "
    "the box you chose: the model never sees anything outside it. Measured on held-out "
    "SYNTHETIC malignant phantoms, this map's peak lay inside the fractured body in only 3-4% "
    "of cases (mostly in the disc below it); the occlusion map, which hides each part of the "
    "box in turn and measures the drop in probability, did so in 40-53%.")


def display_scale(shape: tuple[int, int]) -> int:
    """Integer enlargement so the shorter side reaches about DISPLAY_MIN pixels."""
    return max(1, int(np.ceil(DISPLAY_MIN / max(1, min(shape)))))


def slice_view(vol: Volume, k: int, box=None, config: PreprocessConfig | None = None,
               center=None, title: str = "") -> tuple[np.ndarray, int]:
    """RGB display of slice ``k`` with the box (yellow), the square ROI the model will crop
    (green) and the clicked centre; returns (image, scale) - click (x, y) / scale = pixels."""
    k = int(np.clip(k, 0, vol.n_slices - 1))
    grey = window(vol.data[k])
    scale = display_scale(grey.shape)
    img = Image.fromarray(grey).convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    width = max(1, img.width // 250)
    if box is not None:
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0), width=width)
        if config is not None:
            try:
                r = [v * scale for v in square_roi(box, config.roi_margin)]
                draw.rectangle([r[0], r[1], r[2] - 1, r[3] - 1], outline=(0, 230, 120),
                               width=width)
            except RoiError:
                pass
    if center is not None:
        cx, cy = center[0] * scale, center[1] * scale
        s = 4 * width
        draw.line([cx - s, cy, cx + s, cy], fill=(255, 60, 60), width=width)
        draw.line([cx, cy - s, cx, cy + s], fill=(255, 60, 60), width=width)
    if title:
        draw.text((6, 6), title, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(img), scale


def channel_gallery(model_input: ModelInput) -> list[tuple[np.ndarray, str]]:
    """The six channels the network sees, as (uint8 image, caption)."""
    names = model_input.config.channel_names
    out = []
    t2 = model_input.t2_slices or model_input.slices
    for name, ch, idx in zip(names, model_input.array, list(model_input.slices) + list(t2)):
        img = Image.fromarray((np.clip(ch, 0, 1) * 255).astype(np.uint8))
        img = img.resize((ROI_DISPLAY, ROI_DISPLAY), Image.Resampling.BILINEAR)
        out.append((np.asarray(img), f"{name} (slice {idx})"))
    return out


def overlay_image(pred: Prediction, opacity: float, synthetic_model: bool) -> Image.Image:
    note = f"({SYNTHETIC_CAPTION})" if synthetic_model else ""
    return render_overlay(pred.t1_slice, pred.t2_slice, pred.cam_slice, pred.roi,
                          pred.probability, pred.threshold, pred.label, opacity=opacity,
                          model_note=note, height=448, map_method=pred.map_method)


def roi_images(pred: Prediction, opacity: float) -> list[tuple[np.ndarray, str]]:
    """T1 and T2 crops of the ROI with the map, enlarged."""
    out = []
    for name, image in (("T1", pred.t1_slice), ("T2", pred.t2_slice)):
        patch = crop(np.nan_to_num(image), pred.roi, fill=np.nan)
        filled = np.where(np.isfinite(patch), patch, np.nanmin(patch) if np.isfinite(patch).any()
                          else 0.0)
        rgb = blend(window(filled), pred.cam_roi, opacity)
        img = Image.fromarray(rgb).resize((ROI_DISPLAY, ROI_DISPLAY), Image.Resampling.BILINEAR)
        out.append((np.asarray(img), f"{name} ROI + map"))
    return out


def result_markdown(pred: Prediction, synthetic_model: bool, truth: dict | None = None,
                    slice_index: int | None = None) -> str:
    p = pred.probability
    lines = [f"### P(malignant) = {p:.2f} → **{pred.label}** "
             f"(threshold {pred.threshold:.2f})"]
    if pred.ood_flagged:  # the same words as result.json's warnings and the CLI
        lines.append(f"**Warning: {OOD_WARNING}.**")
    if synthetic_model:
        lines.append("_Model trained on SYNTHETIC phantoms: a pipeline demonstration, not a "
                     "clinical result._")
    if truth is not None:
        if truth.get("label"):
            agree = "agrees" if truth["label"] == pred.label else "disagrees"
            lines.append(f"Ground truth (SYNTHETIC phantom): **{truth['label']}**"
                         f"{' at ' + truth['level'] if truth.get('level') else ''} — the model "
                         f"{agree}.")
        else:
            lines.append("Real MRI, **no ground truth**: this is not a fracture case; the number "
                         "only shows that the pipeline runs on real anatomy.")
    t = pred.timings_ms
    timing = ", ".join(f"{k} {v:.0f} ms" for k, v in t.items())
    where = f"slice {slice_index}, " if slice_index is not None else ""
    lines.append(f"{where}ROI {list(pred.roi)} · model `{pred.model_id}` "
                 f"(sha256 {pred.model_sha256[:12]}…) · {timing}")
    if pred.roi_snap is not None:
        lines.append(roi_snap_line(pred.roi_snap))
    if pred.model_input.notes:
        lines.append("Notes: " + "; ".join(pred.model_input.notes))
    return "\n\n".join(lines)


def roi_snap_line(snap: dict) -> str:
    """Which box the model saw: fitted to the vertebral body under the given box or click, or
    the given one kept (and why)."""
    given = ", ".join(f"{v:g}" for v in snap["box_given"])
    if snap["snapped"]:
        used = ", ".join(f"{v:g}" for v in snap["box"])
        return (f"Box: your box or click ({given}) was fitted to the vertebral body the localiser "
                f"finds under its centre ({used}), so any box or click on this body gives this "
                "answer.")
    return f"Box: yours ({given}) was used as given: {snap['reason'].removeprefix('box kept: ')}."


def explanation_markdown(explanation: dict) -> str:
    """The explained result (runtime.explain) as the lines under the probability."""
    op, cal, ood = (explanation["operating_point"], explanation["calibration"],
                    explanation["ood"])
    lines = [f"**What the threshold means.** {explanation['threshold_meaning']}",
             f"**What it gives.** {op['statement']}",
             f"**Calibration.** {cal['statement']}",
             f"**Out of distribution: {ood['verdict']}.** {ood['statement']}",
             f"**The map.** {explanation['map']}"]
    if explanation.get("synthetic_note"):
        lines.append(f"_{explanation['synthetic_note']}_")
    return "\n\n".join(lines)


def synthetic_case(study: Study, pair: SeriesPair | None = None) -> bool:
    """A SYNTHETIC case: a phantom with its truth, or series whose descriptions say so."""
    if study.truth is not None and study.truth.get("label"):
        return True
    keys = (pair.t1, pair.t2) if pair is not None else tuple(study.labels)
    return any("synthetic" in study.labels.get(key, "").lower() for key in keys)


def error_markdown(message: str) -> str:
    return f"**Could not do that:** {message}"


def series_table(rows: list[dict]) -> list[list]:
    """Rows for the series table (PHI-free summaries)."""
    out = []
    for r in rows:
        sp = r.get("pixel_spacing_mm")
        spacing = ("x".join(f"{v:g}" for v in sp) + " mm") if sp else "spacing unknown"
        what = (f"{r.get('description') or '(no description)'} ({r.get('modality') or '?'}, "
                f"{r.get('plane') or '?'}, {r.get('matrix') or '?'}, {spacing})")
        out.append([r.get("series_number") if r.get("series_number") is not None else "",
                    what, r.get("weighting") or "", r.get("slices"), r.get("status") or ""])
    return out


SERIES_HEADERS = ["#", "series", "weighting", "slices", "status"]
