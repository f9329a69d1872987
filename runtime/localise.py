"""``spinefx localise``: one sagittal series -> its vertebral bodies, levels and Genant grades.

:func:`localise_series` reads the series (a study folder, a series folder, a DICOM file, a
NIfTI file or a :class:`Volume`), gets a body-probability map and a sacrum map (the ONNX
localiser through :func:`spinefx.runtime.segmentation.segment_spine`, or a ``probability``
map the caller gives, e.g. a ground-truth mask), finds and grades the bodies
(:mod:`spinefx.runtime.vertebrae`, :mod:`spinefx.runtime.grading`) and writes
``OUT/vertebrae.json``, ``OUT/vertebrae_mask.nii.gz`` and ``OUT/overview.png``. No torch.

Coordinates in the outputs are those of the series as ``spinefx inspect`` / ``predict`` see
it (slice index = position in the loaded series; x = column, y = row). Internally the arrays
are flipped so rows run superior -> inferior and columns anterior -> posterior.
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .errors import SeriesError, SpineFXError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_png
from .grading import grade_vertebrae
from .outputs import check_output_folder
from .provenance import DISCLAIMER
from .vertebrae import THRESHOLD, VertebraList, find_vertebrae, relabel
from .volume import Volume

if TYPE_CHECKING:
    from .segmentation import SpineMaps

JSON_FILE, MASK_FILE, OVERVIEW_FILE = "vertebrae.json", "vertebrae_mask.nii.gz", "overview.png"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "localiser"
SERIES_PREFERENCE = ("T1", "T2", "STIR", "unknown")   # issue 13: T1 first, then T2


@dataclass
class Localisation:
    """What :func:`localise_series` found and wrote."""
    document: dict[str, Any]
    vertebrae: VertebraList
    volume: Volume
    files: dict[str, Path] = field(default_factory=dict)
    #: wall seconds of each stage (segmentation, postprocess, grading, document, writing)
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------
def read_sagittal(source: str | PathLike | Volume, series: str | None = None) -> Volume:
    """The one sagittal series to localise on: ``source`` itself when it is a volume or a
    NIfTI file, else the named series of the DICOM folder, else its sagittal T1 (then T2,
    STIR, unknown). Axial / coronal or single-slice series are errors naming the file."""
    if isinstance(source, Volume):
        volume = source
    elif str(source).lower().endswith((".nii", ".nii.gz")):
        from .images import load_nifti

        volume = load_nifti(source)
    else:
        volume = _from_study(Path(source), series)
    where = volume.source or (str(source) if not isinstance(source, Volume) else "the series")
    if volume.plane != "sagittal":
        raise SeriesError(f"{volume.plane} series: localise needs a sagittal series (the "
                          "vertebral bodies are found on sagittal slices)", where)
    if volume.n_slices < 2:
        raise SeriesError("a 1-slice series: localise needs a sagittal stack of at least 2 "
                          "slices (bodies are 3-D)", where)
    return volume


def _from_study(path: Path, series: str | None) -> Volume:
    from .study import Study

    if not path.exists():
        raise SpineFXError("no such file or folder", path)
    study = Study.open(path)
    if series:
        return study.volume(series)
    usable = study.usable
    if not usable:
        raise SeriesError("no readable image series found", path)
    sagittal = [e for e in usable if e.plane == "sagittal"]
    if not sagittal:
        first = usable[0]
        raise SeriesError(f"{first.plane} series only ('{first.label}'): localise needs a "
                          "sagittal series", path)
    ranked = sorted(sagittal, key=lambda e: (SERIES_PREFERENCE.index(e.weighting)
                                             if e.weighting in SERIES_PREFERENCE else 9,
                                             -e.n_slices))
    return study.volume(ranked[0].key)


def canonical_flips(volume: Volume) -> tuple[bool, bool]:
    """(flip rows, flip columns) that bring ``volume`` to rows superior -> inferior and
    columns anterior -> posterior (DICOM LPS: +z superior, +y posterior)."""
    return bool(volume.column_direction[2] > 0), bool(volume.row_direction[1] < 0)


def _flip(a: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    if flips[0]:
        a = a[:, ::-1, :]
    if flips[1]:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def localiser_maps(volume: Volume, model_dir: str | PathLike | None = None) -> SpineMaps:
    """The localiser's body (and, from a two-output model, sacrum) probability on the volume's
    grid; a clear error naming the model folder when the localiser is not installed."""
    folder = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    if not (folder / "model.onnx").is_file():
        raise SpineFXError("vertebral-body localiser model not found: the folder needs "
                           "model.onnx and model.json (give another with --model)", folder)
    try:
        from .segmentation import segment_spine
    except ImportError as exc:
        raise SpineFXError(f"the vertebral-body localiser is not installed ({exc})",
                           folder) from exc
    spacing = (abs(volume.slice_spacing) or 1.0, *volume.pixel_spacing)
    return segment_spine(volume.data, spacing, model_dir=folder)


def body_probability(volume: Volume, model_dir: str | PathLike | None = None) -> np.ndarray:
    """The localiser's body probability on the volume's grid (see :func:`localiser_maps`)."""
    return np.asarray(localiser_maps(volume, model_dir).body, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------
def localise_series(source: str | PathLike | Volume, out_dir: str | PathLike | None = None,
                    series: str | None = None, model_dir: str | PathLike | None = None,
                    probability: np.ndarray | None = None,
                    probability_source: str = "", sacrum: np.ndarray | None = None,
                    anchor: tuple[int, str] | None = None) -> Localisation:
    """Find, label and grade the vertebral bodies of one sagittal series; with ``out_dir``
    write vertebrae.json, vertebrae_mask.nii.gz and overview.png there. ``probability`` (on
    the series grid) replaces the localiser, e.g. a ground-truth mask; ``probability_source``
    says what it is in the document; ``sacrum`` (same grid), the sacrum map that goes with it
    (the localiser's second output; None: levels from the gaps alone). ``anchor`` = (index,
    level): a person's correction of the count, body ``index`` (0 = the most superior) is
    ``level``
    (:func:`spinefx.runtime.vertebrae.relabel`)."""
    volume = read_sagittal(source, series)
    clock = _StageClock()
    if probability is None:
        maps = localiser_maps(volume, model_dir)
        probability, sacrum = maps.body, maps.sacrum
        probability_source = probability_source or "vertebral-body localiser (ONNX)"
        clock.lap("segmentation")
    probability = np.asarray(probability, dtype=np.float32)
    if probability.shape != volume.data.shape:
        raise SpineFXError(f"body probability {probability.shape} does not match the series "
                           f"grid {volume.data.shape}")
    flips = canonical_flips(volume)
    spacing = (abs(volume.slice_spacing) or 1.0, *volume.pixel_spacing)
    # threshold before flipping: a bool grid is a quarter of the float map to copy
    vl = find_vertebrae(_flip(probability >= THRESHOLD, flips), spacing,
                        sacrum=None if sacrum is None else _flip(sacrum, flips))
    if anchor is not None:
        if not vl.vertebrae:
            raise SpineFXError("cannot set a level: no vertebra was found")
        try:
            relabel(vl, anchor[0], anchor[1])
        except ValueError as exc:
            raise SpineFXError(str(exc)) from exc
    clock.lap("postprocess")
    grade_vertebrae(vl)
    clock.lap("grading")
    doc = vertebrae_document(vl, volume, flips, probability_source or "given probability map")
    result = Localisation(doc, vl, volume, seconds=clock.seconds)
    clock.lap("document")
    if out_dir is not None:
        result.files = write_localisation(result, out_dir, source)
        clock.lap("writing")
    return result


class _StageClock:
    """Wall seconds between successive laps, by stage name (the benchmark reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now


def _to_series(vl: VertebraList, volume: Volume, flips: tuple[bool, bool]
               ) -> tuple[list[tuple[float, float]], list[list[int]]]:
    """Centroids (x, y) and boxes [x0, y0, x1, y1] back on the series' own grid."""
    h, w = volume.data.shape[1:]
    centres, boxes = [], []
    for v in vl.vertebrae:
        x, y = v.centroid[0], v.centroid[1]
        x0, y0, x1, y1 = v.box
        if flips[1]:
            x, x0, x1 = w - 1 - x, w - x1, w - x0
        if flips[0]:
            y, y0, y1 = h - 1 - y, h - y1, h - y0
        centres.append((x, y))
        boxes.append([int(x0), int(y0), int(x1), int(y1)])
    return centres, boxes


def vertebrae_document(vl: VertebraList, volume: Volume, flips: tuple[bool, bool],
                       probability_source: str) -> dict[str, Any]:
    """vertebrae.json: one entry per body (issue 13's schema) and how sure the levels are."""
    centres, boxes = _to_series(vl, volume, flips)
    entries = []
    for v, (x, y), box in zip(vl.vertebrae, centres, boxes):
        g = v.grading
        entry = {"level": v.level, "level_confidence": round(v.level_confidence, 2),
                 "slice": int(v.slice), "box": box,
                 "centroid": [round(x, 1), round(y, 1), round(v.centroid[2], 2)],
                 "heights_mm": g.get("heights_mm"), "height_loss": g.get("height_loss"),
                 "grade": g.get("grade"), "shape": g.get("shape"),
                 "mask_value": v.value, "volume_ml": round(v.volume_mm3 / 1000.0, 2),
                 "truncated": v.truncated}
        if v.sacral is not None:   # the localiser's sacrum output, which anchors the count
            entry["sacrum_probability"] = round(v.sacral, 3)
        for key in ("endplate_irregularity_mm", "endplate_irregular", "expected_heights_mm",
                    "expected_from", "grade_note", "height_slice"):
            if key in g:
                entry[key] = g[key]
        entries.append(entry)
    synthetic = "synthetic" in f"{volume.description} {volume.metadata}".lower()
    return {
        "status": "ok", "vertebrae": entries,
        "reason": vl.reason or None,
        "levels_uncertain": bool(entries) and vl.level_confidence < 0.8,
        "level_confidence": round(vl.level_confidence, 2), "level_reason": vl.level_reason,
        "mask_labels": {str(v.value): v.level for v in vl.vertebrae},
        "series": {"description": volume.description, "weighting": volume.weighting,
                   "slices": volume.n_slices, "matrix": list(volume.data.shape[1:]),
                   "pixel_spacing_mm": list(volume.pixel_spacing),
                   "slice_spacing_mm": round(volume.slice_spacing, 3)},
        "probability_source": probability_source, "synthetic_input": synthetic,
        "grading": "Genant semi-quantitative from the body masks: grade 1 20-25%, "
                   "2 25-40%, 3 > 40% height loss; not a diagnosis",
        "disclaimer": DISCLAIMER,
    }


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def write_localisation(result: Localisation, out_dir: str | PathLike,
                       source: str | PathLike | Volume,
                       annotations: Sequence[str] | None = None) -> dict[str, Path]:
    """vertebrae_mask.nii.gz, overview.png, then vertebrae.json (last: it lists the others);
    ``annotations``: one extra text per vertebra on the overview (see :func:`overview_image`)."""
    inputs = [] if isinstance(source, Volume) else [source]
    out = check_output_folder(out_dir, inputs)
    out.mkdir(parents=True, exist_ok=True)
    flips = canonical_flips(result.volume)
    labels = _flip(result.vertebrae.labels, flips)     # a flip is its own inverse
    files = {"mask": write_label_nifti(out / MASK_FILE, labels, result.volume),
             "overview": atomic_write_png(out / OVERVIEW_FILE,
                                          overview_image(result, labels,
                                                         annotations=annotations))}
    result.document["files"] = {k: p.name for k, p in files.items()}
    files["vertebrae"] = atomic_write_json(out / JSON_FILE, result.document)
    return files


def write_label_nifti(path: Path, labels: np.ndarray, volume: Volume) -> Path:
    """The label map as NIfTI (voxel i, j, k = column, row, slice; RAS affine from the
    series geometry), so it overlays the series in any viewer."""
    try:
        import nibabel as nib
    except ImportError as exc:
        raise SpineFXError("writing vertebrae_mask.nii.gz needs nibabel: "
                           "pip install 'spinefx[nifti]'") from exc
    affine = np.eye(4)
    affine[:3, 0] = volume.row_direction * volume.pixel_spacing[1]
    affine[:3, 1] = volume.column_direction * volume.pixel_spacing[0]
    affine[:3, 2] = volume.normal * (volume.slice_spacing or 1.0)
    affine[:3, 3] = volume.positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine          # LPS -> RAS
    data = np.transpose(labels.astype(np.uint8 if labels.max() < 256 else np.int16), (2, 1, 0))
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.header.set_xyzt_units("mm")
    # gzip with mtime 0: the same series gives the same bytes; level 6, not 9: 8x faster on
    # a 15 x 512^2 label map (0.03 vs 0.2 s), 20 vs 17 kB
    return atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def overview_image(result: Localisation, labels: np.ndarray, scale: int = 2,
                   annotations: Sequence[str] | None = None) -> Image.Image:
    """The series' middle body slice with each body outlined on it and its level written;
    graded fractures in red with their grade. ``annotations`` (one per vertebra, in the
    document's order; '' for none) are written after the level, e.g. predict's probability."""
    vol, doc = result.volume, result.document
    entries = doc["vertebrae"]
    k = int(np.median([e["slice"] for e in entries])) if entries else vol.n_slices // 2
    img = vol.data[k]
    lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0.0, 1.0)
    grey = np.clip((img - lo) / max(float(hi - lo), 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    for e in entries:
        inside = labels[k] == e["mask_value"]
        edge = inside & ~_eroded(inside)
        rgb[edge] = (230, 40, 40) if (e["grade"] or 0) >= 1 else (60, 210, 90)
    canvas = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale),
                                         Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    notes = list(annotations) if annotations is not None else [""] * len(entries)
    if len(notes) != len(entries):
        raise ValueError(f"{len(notes)} annotations for {len(entries)} vertebrae")
    for e, note in zip(entries, notes):
        x, y = e["box"][2] * scale + 4, e["centroid"][1] * scale - 6
        fractured = (e["grade"] or 0) >= 1
        text = e["level"] + (f" G{e['grade']}" if fractured else "") + (f" {note}" if note else "")
        draw.text((x, y), text, fill=(255, 60, 60) if fractured else (255, 255, 120))
    caption = "levels uncertain - check them" if doc["levels_uncertain"] else ""
    if doc["synthetic_input"]:
        caption = "SYNTHETIC image. " + caption
    if not entries:
        caption = (doc["reason"] or "no vertebra found") + ". " + caption
    draw.text((4, canvas.height - 14), f"slice {k}. {caption}"[:120], fill=(255, 255, 255))
    return canvas


def _eroded(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner
