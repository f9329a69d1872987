"""A PNG overview of a cohort: lesion slice on T1 and T2 with the ROI box, label and case id.

Images are read back through the runtime's own DICOM ingestion
(:func:`spinefx.runtime.load_series`), so the sheet also shows that what was written is what a
user of the runtime will see (slice order, T2 grid).
"""
from __future__ import annotations

import csv
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinefx.runtime import load_series
from spinefx.runtime.overlay import window

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
        draw.text((x + 4, y + 2), f"{row['case_id']}  {label}  {row['level']}  slice {i}",
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
