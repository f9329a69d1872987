"""The Read tab's viewer pictures (numpy + Pillow; no gradio): T1 and the T2 resliced onto the
T1 grid side by side, one window/level and zoom for both, the slice number, the vertebrae's
level labels and the box drawn on both panels.

A :class:`ViewSpec` is everything one picture depends on, so a session caches the encoded PNG
per spec (``ViewCache``) and scrolling back to a slice costs nothing. :class:`View` maps a
click on either panel back to T1 pixels (the panels share the T1 grid).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinefx.runtime import RoiError, square_roi
from spinefx.runtime.preprocess import Box

PANEL_MIN = 420          # the shorter side of one panel on screen, about
GAP = 6                  # pixels between the T1 and T2 panels
#: Window/level presets: (level, width) in percent of the volume's 1-99th percentile range
#: (MR has no absolute units: the range of this series is the only common scale).
WL_PRESETS: dict[str, tuple[float, float]] = {
    "auto (1-99%)": (50.0, 100.0),
    "contrast": (50.0, 60.0),
    "bright": (35.0, 80.0),
    "dark": (65.0, 80.0),
    "wide": (50.0, 140.0),
}
DEFAULT_PRESET = "auto (1-99%)"
ZOOMS = (1.0, 1.5, 2.0, 3.0)
YELLOW, GREEN, RED = (255, 220, 0), (0, 230, 120), (255, 60, 60)
ORANGE, CYAN, WHITE = (255, 140, 0), (90, 200, 255), (255, 255, 255)


@dataclass(frozen=True)
class Marker:
    """A vertebra label on the picture: level at the body's box, flagged when graded >= 1."""
    level: str
    box: tuple[float, float, float, float]
    grade: int | None
    selected: bool = False


@dataclass(frozen=True)
class ViewSpec:
    """Everything one picture depends on (its cache key)."""
    pair: tuple[str, str]
    k: int
    level: float = 50.0
    width: float = 100.0
    zoom: float = 1.0
    focus: tuple[float, float] | None = None
    box: Box | None = None
    centre: tuple[float, float] | None = None
    markers: tuple[Marker, ...] = ()
    roi_margin: float | None = None
    note: str = ""


@dataclass(frozen=True)
class View:
    """How a displayed picture maps back to T1 pixels: pixel = origin + display / scale; a
    click on the T2 panel maps as one on T1 (the same grid)."""
    x0: float = 0.0
    y0: float = 0.0
    scale: float = 1.0
    panel_width: int = 0

    def to_pixels(self, dx: float, dy: float) -> tuple[float, float]:
        if self.panel_width and dx >= self.panel_width + GAP:
            dx -= self.panel_width + GAP
        return self.x0 + dx / self.scale, self.y0 + dy / self.scale


def robust_range(data: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of a volume's finite voxels (the W/L sliders' 0-100%)."""
    finite = data[np.isfinite(data)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.0])
    return float(lo), float(max(hi, lo + 1e-6))


Span = tuple[float, float]


def series_spans(cache: dict[str, Span], aligned: Any, pair: Any) -> tuple[Span, Span]:
    """The T1 and resliced T2's 1-99% ranges (the W/L sliders' scale), computed once per
    series in ``cache`` (a session's)."""
    keys = (pair.t1, f"{pair.t1}->{pair.t2}")
    for key, vol in zip(keys, (aligned.t1, aligned.t2)):
        if key not in cache:
            cache[key] = robust_range(vol.data)
    return cache[keys[0]], cache[keys[1]]


def apply_window(plane: np.ndarray, span: tuple[float, float], level: float,
                 width: float) -> np.ndarray:
    """uint8 grey of ``plane`` with the window centred at ``level``% of ``span``, ``width``%
    wide (NaN, i.e. no T2 partner, shows black)."""
    lo, hi = span
    centre = lo + (hi - lo) * level / 100.0
    half = max((hi - lo) * width / 200.0, 1e-6)
    scaled = np.clip((np.nan_to_num(plane, nan=centre - half) - (centre - half)) / (2 * half),
                     0, 1)
    return (scaled * 255).astype(np.uint8)


def crop_window(shape: tuple[int, int], zoom: float,
                focus: tuple[float, float] | None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the part shown at ``zoom`` around ``focus`` (image centre if None),
    kept inside the image."""
    h, w = shape
    zoom = max(1.0, float(zoom))
    cw, ch = max(8, round(w / zoom)), max(8, round(h / zoom))
    fx, fy = focus if focus is not None else (w / 2, h / 2)
    x0 = int(np.clip(round(fx - cw / 2), 0, max(0, w - cw)))
    y0 = int(np.clip(round(fy - ch / 2), 0, max(0, h - ch)))
    return x0, y0, min(w, x0 + cw), min(h, y0 + ch)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:          # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _panel(grey: np.ndarray, window_box: tuple[int, int, int, int], scale: float) -> Image.Image:
    x0, y0, x1, y1 = window_box
    img = Image.fromarray(grey[y0:y1, x0:x1]).convert("RGB")
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR)


def _draw_marks(img: Image.Image, spec: ViewSpec, view: View, title: str) -> None:
    draw = ImageDraw.Draw(img)
    line = max(1, img.width // 250)
    font, small = _font(max(12, img.width // 30)), _font(max(11, img.width // 38))

    def to_display(x: float, y: float) -> tuple[float, float]:
        return (x - view.x0) * view.scale, (y - view.y0) * view.scale

    for m in spec.markers:
        bx0, by0 = to_display(m.box[0], m.box[1])
        bx1, by1 = to_display(m.box[2], m.box[3])
        flagged = (m.grade or 0) >= 1
        colour = ORANGE if flagged else CYAN
        if m.selected or flagged:
            draw.rectangle([bx0, by0, bx1 - 1, by1 - 1], outline=colour, width=line)
        text = m.level + (f" g{m.grade}" if flagged else "")
        draw.text((bx1 + 4, (by0 + by1) / 2), text, fill=colour, font=small, anchor="lm",
                  stroke_width=2, stroke_fill=(0, 0, 0))
    if spec.box is not None:
        x0, y0 = to_display(spec.box[0], spec.box[1])
        x1, y1 = to_display(spec.box[2], spec.box[3])
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=YELLOW, width=line)
        if spec.roi_margin is not None:
            try:
                r = square_roi(spec.box, spec.roi_margin)
                (r0, r1), (r2, r3) = to_display(r[0], r[1]), to_display(r[2], r[3])
                draw.rectangle([r0, r1, r2 - 1, r3 - 1], outline=GREEN, width=line)
            except RoiError:
                pass
    if spec.centre is not None:
        cx, cy = to_display(*spec.centre)
        s = 4 * line
        draw.line([cx - s, cy, cx + s, cy], fill=RED, width=line)
        draw.line([cx, cy - s, cx, cy + s], fill=RED, width=line)
    draw.text((6, 6), title, fill=WHITE, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    if spec.note:
        draw.text((6, img.height - 6), spec.note, fill=WHITE, font=small, anchor="ld",
                  stroke_width=2, stroke_fill=(0, 0, 0))


def render_pair(t1: np.ndarray, t2: np.ndarray, spans: tuple[tuple[float, float],
                tuple[float, float]], spec: ViewSpec, n_slices: int) -> tuple[Image.Image, View]:
    """The T1 and T2 planes of slice ``spec.k`` side by side, windowed, zoomed and marked."""
    shape = (int(t1.shape[0]), int(t1.shape[1]))
    window_box = crop_window(shape, spec.zoom, spec.focus)
    shown = min(window_box[2] - window_box[0], window_box[3] - window_box[1])
    scale = max(1.0, PANEL_MIN / max(1, shown))
    view = View(window_box[0], window_box[1], scale, 0)
    panels = []
    for name, plane, span in (("T1", t1, spans[0]), ("T2", t2, spans[1])):
        img = _panel(apply_window(plane, span, spec.level, spec.width), window_box, scale)
        zoom = f"  x{spec.zoom:g}" if spec.zoom > 1 else ""
        _draw_marks(img, spec, view, f"{name}  slice {spec.k} / {n_slices - 1}{zoom}")
        panels.append(img)
    canvas = Image.new("RGB", (panels[0].width * 2 + GAP, panels[0].height), (40, 40, 40))
    canvas.paste(panels[0], (0, 0))
    canvas.paste(panels[1], (panels[0].width + GAP, 0))
    return canvas, View(view.x0, view.y0, scale, panels[0].width)


def markers_of(entries: Sequence[dict], selected: int | None, k: int) -> tuple[Marker, ...]:
    """Labels for the localiser's vertebrae: all of them on every slice (a sagittal slab shows
    each level); the picked one is outlined."""
    out = []
    for i, e in enumerate(entries):
        box = tuple(float(v) for v in e["box"])
        out.append(Marker(str(e["level"]), (box[0], box[1], box[2], box[3]),
                          e.get("grade"), selected == i))
    return tuple(out)


class ViewCache:
    """Encoded PNG files per key (a :class:`ViewSpec`, or a channel strip's key), newest last;
    an entry whose files the outbox pruned is a miss (re-rendered)."""

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict[Hashable, tuple[tuple[str, ...], Any]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[tuple[str, ...], Any] | None:
        hit = self._items.get(key)
        if hit is None or not all(Path(p).is_file() for p in hit[0]):
            return None
        self._items.move_to_end(key)
        return hit

    def copy(self) -> "ViewCache":
        twin = ViewCache(self.size)
        twin._items = OrderedDict(self._items)
        return twin

    def put(self, key: Hashable, paths: Sequence[str], payload: Any = None) -> None:
        self._items[key] = (tuple(paths), payload)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
