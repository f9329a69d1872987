"""Pictures of a prediction (numpy + Pillow only): the class-activation map as a colour map on
the T1 and T2 lesion slices, the ROI box, and a legend with the probability and a plain
"not for diagnosis" line."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .provenance import DISCLAIMER

# Anchor colours of a perceptually ordered "inferno"-like map: dark = low, yellow = high.
_ANCHORS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                     [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)
COLOURMAP = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)),
                                _ANCHORS[:, c]) for c in range(3)], axis=1).astype(np.uint8)


def window(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """uint8 display of an MR slice by robust percentiles (MR has no fixed window)."""
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [low, high]) if finite.size else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(image) - lo) / max(hi - lo, 1e-6), 0, 1)
    return (scaled * 255).astype(np.uint8)


def blend(grey: np.ndarray, cam: np.ndarray, opacity: float = 0.45,
          floor: float = 0.2) -> np.ndarray:
    """RGB uint8: ``grey`` under the coloured ``cam`` (0..1); below ``floor`` stays grey so the
    anatomy the model did not weigh remains readable."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    colour = COLOURMAP[np.clip(cam * 255, 0, 255).astype(np.uint8)].astype(np.float32)
    alpha = np.where(cam >= floor, float(np.clip(opacity, 0, 1)), 0.0)[..., None]
    return (rgb * (1 - alpha) + colour * alpha).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def overlay_panel(image: np.ndarray, cam: np.ndarray | None, roi: tuple[int, int, int, int] | None,
                  title: str, opacity: float = 0.45) -> Image.Image:
    grey = window(image)
    rgb = blend(grey, cam, opacity) if cam is not None else np.repeat(grey[..., None], 3, 2)
    panel = Image.fromarray(rgb)
    draw = ImageDraw.Draw(panel)
    if roi is not None:
        draw.rectangle([roi[0], roi[1], roi[2] - 1, roi[3] - 1], outline=(0, 255, 120),
                       width=max(1, panel.width // 200))
    draw.text((4, 4), title, fill=(255, 255, 255), font=_font(max(10, panel.width // 28)),
              stroke_width=2, stroke_fill=(0, 0, 0))
    return panel


# the colour bar's caption per map method (runtime.occlusion.METHODS); short: it sits under the bar
MAP_LEGENDS = {"cam": "Grad-CAM: low -> high attention",
               "occlusion": "occlusion: low -> high P drop"}


def render_overlay(t1_slice: np.ndarray, t2_slice: np.ndarray, cam_slice: np.ndarray,
                   roi: tuple[int, int, int, int], probability: float, threshold: float,
                   label: str, opacity: float = 0.45, model_note: str = "",
                   height: int = 512, map_method: str = "cam") -> Image.Image:
    """T1 and T2 lesion slices with the map and the ROI box side by side, plus a legend that
    says which map it is."""
    panels = [overlay_panel(t1_slice, cam_slice, roi, "T1W", opacity),
              overlay_panel(t2_slice, cam_slice, roi, "T2W", opacity)]
    scale = height / panels[0].height
    panels = [p.resize((max(1, round(p.width * scale)), height), Image.Resampling.BILINEAR)
              for p in panels]
    legend_h = max(64, height // 6)
    width = sum(p.width for p in panels)
    canvas = Image.new("RGB", (width, height + legend_h), (16, 16, 16))
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width
    draw = ImageDraw.Draw(canvas)
    bar_w = min(256, width // 3)
    bar = np.repeat(COLOURMAP[np.linspace(0, 255, bar_w).astype(int)][None], 12, axis=0)
    canvas.paste(Image.fromarray(bar), (8, height + 8))
    small = _font(max(11, legend_h // 5))
    draw.text((8, height + 22), MAP_LEGENDS[map_method], fill=(200, 200, 200),
              font=small)
    text = (f"P(malignant) = {probability:.2f}  (threshold {threshold:.2f}: {label})"
            + (f"  {model_note}" if model_note else ""))
    draw.text((bar_w + 24, height + 6), text, fill=(255, 255, 255), font=small)
    draw.text((bar_w + 24, height + 6 + legend_h // 3), DISCLAIMER, fill=(255, 190, 90),
              font=small)
    return canvas
