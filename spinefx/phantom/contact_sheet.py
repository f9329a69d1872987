"""PNG overviews: a cohort's contact sheet, and phantoms beside real spine MRI.

- :func:`write_contact_sheet`: lesion slice on T1 and T2 with the ROI box, label and case id.
  Images are read back through the runtime's own DICOM ingestion
  (:func:`spinefx.runtime.load_series`), so the sheet also shows that what was written is what
  a user of the runtime will see (slice order, T2 grid).
- :func:`write_comparison_sheet`: three labelled bands, phantoms at variation 0 (the v1-like
  look), phantoms at variation 1 (randomised extremes) and real volumes from
  ``../shared/data/real-spine``, so a person can judge how far the phantoms are from real MRI.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinefx.runtime import load_series
from spinefx.runtime.overlay import window

from .case import PhantomCase
from .stream import plan_cohort, render_planned

TILE = 200          # px per image
COLUMNS = 4         # cases per row (each case: T1 | T2)
CAPTION = 20        # px of text above each case
TITLE = 36
COLOURS = {"benign": (90, 210, 120), "malignant": (240, 90, 80)}
BOX_COLOUR = (255, 220, 0)


def write_contact_sheet(manifest_path: str | PathLike, out_png: str | PathLike,
                        max_cases: int = 24) -> Path:
    """Draw the first ``max_cases`` cases of a manifest into one PNG; returns its path."""
    manifest_path = Path(manifest_path)
    with open(manifest_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    total = len(rows)
    rows = rows[:max(1, max_cases)]
    base = manifest_path.parent
    font = ImageFont.load_default(size=13)
    title_font = ImageFont.load_default(size=20)
    n_rows = (len(rows) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * 2 * TILE, TITLE + n_rows * (TILE + CAPTION)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), "SYNTHETIC phantom cohort - not patient data", fill=(255, 255, 255),
              font=title_font)
    draw.text((460, 12), f"{manifest_path.name}: {len(rows)} of {total} cases; lesion slice, "
              "T1W | T2W, yellow = ROI box", fill=(190, 190, 190), font=font)

    for n, row in enumerate(rows):
        t1 = load_series(base / row["t1"])
        t2 = load_series(base / row["t2"])
        i = int(row["slice"])
        box = (int(row["box_x0"]), int(row["box_y0"]), int(row["box_x1"]), int(row["box_y1"]))
        x = (n % COLUMNS) * 2 * TILE
        y = TITLE + (n // COLUMNS) * (TILE + CAPTION)
        label = row["label"]
        patient = row.get("patient_id") or row["case_id"]
        who = row["case_id"] if patient == row["case_id"] else f"{row['case_id']} ({patient})"
        draw.text((x + 4, y + 2), f"{who}  {label}  {row['level']}  slice {i}",
                  fill=COLOURS.get(label, (255, 255, 255)), font=font)
        shape = t1.data.shape[1:]
        for j, vol in enumerate((t1, t2)):
            img = vol.data[i]
            if img.shape != shape:  # T2 on its own grid covering the same field of view
                img = np.asarray(Image.fromarray(img).resize(shape[::-1],
                                                             Image.Resampling.BILINEAR))
            tile = _tile(img, box)
            sheet.paste(tile, (x + j * TILE, y + CAPTION))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def _tile(img: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    grey = window(img)  # the same display window as the prediction overlays
    scale = TILE / max(img.shape)
    tile = Image.fromarray(grey).convert("RGB").resize(
        (round(img.shape[1] * scale), round(img.shape[0] * scale)), Image.Resampling.BILINEAR)
    x0, y0, x1, y1 = (v * scale for v in box)
    ImageDraw.Draw(tile).rectangle([x0 - 1, y0 - 1, x1, y1], outline=BOX_COLOUR, width=1)
    return tile


# --- comparison sheet: phantoms at variation 0 and 1 beside real spine MRI -----------------

SHEET_TILES = 8      # tiles per row of the comparison sheet
BAND_TITLE = 30      # px of band title
REAL_SPINE = Path("..") / "shared" / "data" / "real-spine"   # beside the repository clone
BANDS = ("SYNTHETIC v2, variation 0 (v1-style)",
         "SYNTHETIC v2, variation 1 (randomised extremes)",
         "REAL (../shared/data/real-spine: DzZ T1/T2, vb3, spinesource)")
BAND_COLOURS = ((120, 200, 255), (255, 170, 90), (230, 230, 230))


@dataclass
class Entry:
    """One tile group: a caption over one or more titled images (T1 | T2, or one contrast)."""
    caption: str
    images: list[tuple[str, np.ndarray]]


def write_comparison_sheet(out_png: str | PathLike, real_dir: str | PathLike | None = None,
                           seed: int = 0, n_scan: int = 24) -> Path:
    """Phantoms at variation 0, phantoms at variation 1 (the most extreme of ``n_scan`` seeded
    cases: thinnest and thickest slices, T2 on its own grid, every variant a case exposes) and
    real volumes (``real_dir``, default ``../shared/data/real-spine``; the band is left out,
    with a printed note, when it is absent). Returns the PNG's path."""
    bands = [(BANDS[0], _nominal_entries(seed)), (BANDS[1], _extreme_entries(seed, n_scan))]
    real = Path(real_dir) if real_dir is not None else REAL_SPINE
    if real.is_dir():
        bands.append((BANDS[2], _real_entries(real)))
    else:
        print(f"comparison sheet: no real spine MRI at {real}; REAL band left out")
    rows_per_band = [len(_flow(entries)) for _, entries in bands]
    height = TITLE + sum(BAND_TITLE + n * (TILE + CAPTION) for n in rows_per_band)
    sheet = Image.new("RGB", (SHEET_TILES * TILE, height), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font, title_font = ImageFont.load_default(size=13), ImageFont.load_default(size=20)
    draw.text((8, 6), "SYNTHETIC phantoms (spinefx.phantom v2) beside REAL spine MRI - "
              "synthetic images are not patient data", fill=(255, 255, 255), font=title_font)
    y = TITLE
    for (title, entries), colour in zip(bands, BAND_COLOURS):
        draw.text((8, y + 6), title, fill=colour, font=title_font)
        y += BAND_TITLE
        for line in _flow(entries):
            x = 0
            for entry in line:
                draw.text((x + 4, y + 2), entry.caption, fill=colour, font=font)
                for name, img in entry.images:
                    sheet.paste(_fit_tile(img, name, font), (x, y + CAPTION))
                    x += TILE
            y += TILE + CAPTION
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def _flow(entries: list[Entry]) -> list[list[Entry]]:
    """Entries in rows of at most SHEET_TILES images (an entry never splits)."""
    lines: list[list[Entry]] = [[]]
    used = 0
    for entry in entries:
        if used + len(entry.images) > SHEET_TILES and lines[-1]:
            lines.append([])
            used = 0
        lines[-1].append(entry)
        used += len(entry.images)
    return [line for line in lines if line]


def _fit_tile(img: np.ndarray, name: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
              ) -> Image.Image:
    """The windowed image fitted into a TILE x TILE square (aspect kept), titled in a corner."""
    grey = Image.fromarray(window(np.asarray(img, dtype=np.float32)))
    scale = TILE / max(grey.size)
    grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                       Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (TILE, TILE), (0, 0, 0))
    tile.paste(grey.convert("RGB"), ((TILE - grey.width) // 2, (TILE - grey.height) // 2))
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, 7 * len(name) + 6, 16], fill=(0, 0, 0))
    draw.text((3, 1), name, fill=(255, 255, 0), font=font)
    return tile


def _case_entry(case: PhantomCase, case_id: str, notes: list[str]) -> Entry:
    t1, t2 = case.t1[case.slice], case.t2[case.slice]
    if t2.shape != t1.shape:  # T2 on its own grid covering the same field of view
        t2 = np.asarray(Image.fromarray(t2).resize(t1.shape[::-1], Image.Resampling.BILINEAR))
    caption = "  ".join([case_id, case.label, case.level, f"{case.slice_thickness:g} mm",
                         *notes])
    # tiles titled by the sequence variant (T1, T1_RED; T2, T2_FS, STIR)
    return Entry(caption=caption[:62], images=[(case.t1_variant, t1), (case.t2_variant, t2)])


def _nominal_entries(seed: int) -> list[Entry]:
    plans = plan_cohort(seed, 4, 2)
    return [_case_entry(render_planned(p, 1.0, 0.0), p.case_id, []) for p in plans]


def _extreme_entries(seed: int, n_scan: int) -> list[Entry]:
    """The most extreme of ``n_scan`` cases at variation 1, each with why it was picked."""
    plans = plan_cohort(seed + 1, max(2, n_scan), max(1, n_scan // 2))
    cases = [(p.case_id, render_planned(p, 1.0, 1.0)) for p in plans]
    picks: dict[str, list[str]] = {}

    def pick(case_id: str, why: str) -> None:
        picks.setdefault(case_id, []).append(why)

    by_thickness = sorted(cases, key=lambda c: c[1].slice_thickness)
    pick(by_thickness[0][0], "thinnest")
    pick(by_thickness[-1][0], "thickest")
    by_spacing = sorted(cases, key=lambda c: c[1].pixel_spacing[0])
    pick(by_spacing[0][0], "finest px")
    pick(by_spacing[-1][0], "coarsest px")
    seen: set[str] = set()
    for case_id, case in cases:
        if not case.t2_same_grid and "T2 own grid" not in seen:
            seen.add("T2 own grid")
            pick(case_id, "T2 own grid")
        for variant in variant_names(case):
            if variant not in seen:
                seen.add(variant)
                pick(case_id, variant)
    chosen = [(cid, case) for cid, case in cases if cid in picks][:SHEET_TILES]
    return [_case_entry(case, cid, picks[cid]) for cid, case in chosen]


def variant_names(case: PhantomCase) -> list[str]:
    """The contrast variants (T1_RED, T2_FS, STIR) and artefacts ("T2 ghosting") of a case,
    as short words; none for the plain T1/T2 look without artefacts."""
    names = [v for v, plain in ((case.t1_variant, "T1"), (case.t2_variant, "T2")) if v != plain]
    for series, artefacts in sorted(case.artefacts.items()):
        names += [f"{series.upper()} {name}" for name in artefacts]
    return names


def _real_entries(real: Path) -> list[Entry]:
    """Mid-spine slices of the real volumes that are present (each source is optional)."""
    entries = []
    dzz = [real / "dzz_t1.npz", real / "dzz_t2.npz"]
    if all(p.is_file() for p in dzz):
        pair = [_npz_slice(p, crop_mm=300) for p in dzz]
        entries.append(Entry("DzZ T1 TSE | T2 TSE (1 mm)", [("T1W", pair[0]), ("T2W", pair[1])]))
    vb3 = real / "vb3" / "vb3_01.npz"
    if vb3.is_file():
        entries.append(Entry("vb3_01 water (Dixon)", [("T2-like", _npz_slice(vb3))]))
    for exam, what in (("AKa3", "T1 FSE"), ("F02", "T2 SE, fracture"), ("AKS7", "TIRM")):
        slices = sorted((real / "spinesource" / "slices").glob(f"{exam}_*.png"),
                        key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        if slices:
            with Image.open(slices[len(slices) // 2]) as im:
                img = np.asarray(im.convert("L"))
            entries.append(Entry(f"spinesource {exam} {what}", [(what.split(",")[0], img)]))
    return entries


def _npz_slice(path: Path, crop_mm: int | None = None) -> np.ndarray:
    """The sagittal slice (axis 2) with the most vertebral-body mask, optionally cropped to a
    ``crop_mm`` square (1 mm pixels) centred on the bodies."""
    with np.load(path, allow_pickle=False) as z:
        image, bodies = z["image"], z["vertebral_bodies"]
    k = int(np.argmax(bodies.sum(axis=(0, 1))))
    img, mask = image[:, :, k], bodies[:, :, k] > 0
    if crop_mm is None or not mask.any():
        return img
    rows, cols = np.nonzero(mask)
    half = crop_mm // 2
    r0 = int(np.clip((rows.min() + rows.max()) // 2 - half, 0, max(0, img.shape[0] - crop_mm)))
    c0 = int(np.clip((cols.min() + cols.max()) // 2 - half, 0, max(0, img.shape[1] - crop_mm)))
    return img[r0:r0 + crop_mm, c0:c0 + crop_mm]
