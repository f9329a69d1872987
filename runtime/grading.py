"""Genant semi-quantitative grading of vertebral height loss from body masks (numpy only).

Per body, on its mid-sagittal slice (the slice nearest its centroid; the widest slice when
that one holds much less of the body): anterior, middle and posterior heights measured along
the local spine axis (the chord through the neighbours' centroids, so the heights are
perpendicular to the endplates' mean direction), at 10%, 50% and 90% of the body's depth
(the corners are rounded, so the walls themselves are not used). Expected heights: the median
of the same height of the nearest gradable bodies (up to two above and two below; with
gradable bodies on one side only, the nearest one alone); a body with no gradable neighbour is
compared with its own posterior height. Height loss = the
largest relative loss of the three; Genant grade 0 (< 20%), 1 (20-25%), 2 (25-40%),
3 (> 40%); shape from where the loss is (anterior: wedge, middle: biconcave, all or the
posterior wall: crush). Endplate irregularity: RMS (mm) of each endplate around a smooth
(quadratic) fit across the central 80% of the depth.

Sacral segments and bodies cut by the field of view (within 2 mm of the top/bottom row, or
widest on the first/last slice: :func:`spinefx.runtime.vertebrae.is_truncated`) are not graded
(grade None, with a note): a cut body's heights are those of its part inside the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vertebrae import EDGE_MM, Vertebra, VertebraList

GRADE_LIMITS = (0.20, 0.25, 0.40)   # Genant: grade 1 from 20%, 2 from 25%, 3 above 40%
POSITIONS = {"anterior": 0.1, "middle": 0.5, "posterior": 0.9}   # share of the depth
BAND = 0.04                          # half-width of each measuring band (share of the depth)
NEIGHBOURS = 2                       # expected height from up to this many bodies each side
IRREGULAR_MM = 1.0                   # an endplate this rough (RMS mm) is called irregular


@dataclass
class Heights:
    anterior: float
    middle: float
    posterior: float
    superior_rms: float | None = None    # endplate roughness (mm) around a quadratic fit
    inferior_rms: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {"anterior": self.anterior, "middle": self.middle, "posterior": self.posterior}


def genant_grade(loss: float) -> int:
    """0 (< 20%), 1 (20-25%), 2 (25-40%), 3 (> 40%)."""
    if loss < GRADE_LIMITS[0]:
        return 0
    if loss < GRADE_LIMITS[1]:
        return 1
    return 2 if loss <= GRADE_LIMITS[2] else 3


def spine_axis(vl: VertebraList, i: int) -> np.ndarray:
    """Unit vector (row mm, col mm) along the spine at body ``i``, pointing inferior: the
    chord between its neighbours' centroids (one neighbour: to it; none: the rows)."""
    pts = [np.array(v.centroid_mm[1:]) for v in vl.vertebrae]
    lo, hi = max(0, i - 1), min(len(pts) - 1, i + 1)
    chord = pts[hi] - pts[lo]
    norm = float(np.linalg.norm(chord))
    return chord / norm if norm > 0 else np.array([1.0, 0.0])


def measure_heights(mask2d: np.ndarray, pixel_mm: tuple[float, float],
                    axis: np.ndarray) -> Heights | None:
    """Heights (mm) of one body's 2-D sagittal mask along its own axis (:func:`body_axis`
    near ``axis``, a unit (row, col) vector pointing inferior); columns run anterior ->
    posterior. None when the mask is too small to measure."""
    p = np.argwhere(mask2d) * np.asarray(pixel_mm, dtype=np.float64)
    if len(p) < 20:
        return None
    axis = body_axis(p, axis)
    ap = np.array([-axis[1], axis[0]])       # perpendicular to the axis ...
    if ap[1] < 0:                             # ... pointing posterior (increasing columns)
        ap = -ap
    s, t = p @ axis, p @ ap
    s, t = _drop_spurs(s, t, max(pixel_mm))
    depth = float(t.max() - t.min())
    # the extent of one pixel along the axis: heights count pixels, not pixel centres
    pixel_along = float(abs(axis[0]) * pixel_mm[0] + abs(axis[1]) * pixel_mm[1])
    half = max(BAND * depth, 0.5 * max(pixel_mm))
    step = max(pixel_mm)
    heights = {}
    for name, share in POSITIONS.items():
        offset = t - (t.min() + share * depth)
        band = np.abs(offset) <= half
        if band.sum() < 2:
            return None
        # one height per pixel-wide line across the band, then their median: a narrow
        # central dip (biconcave) is not hidden by the band's highest and lowest points
        lines = np.floor((offset[band] + half) / step).astype(int)
        top = np.full(lines.max() + 1, np.inf)
        bottom = np.full(lines.max() + 1, -np.inf)
        np.minimum.at(top, lines, s[band])
        np.maximum.at(bottom, lines, s[band])
        ok = np.isfinite(top)
        heights[name] = float(np.median(bottom[ok] - top[ok])) + pixel_along
    sup, inf = _endplate_rms(s, t, depth, max(pixel_mm))
    return Heights(heights["anterior"], heights["middle"], heights["posterior"], sup, inf)


def _drop_spurs(s: np.ndarray, t: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop the pixel lines (across the depth) shorter than 30% of the tallest: osteophytes
    and spurs at a corner would otherwise set where the anterior or posterior wall is."""
    lines = np.floor((t - t.min()) / step).astype(int)
    top = np.full(lines.max() + 1, np.inf)
    bottom = np.full(lines.max() + 1, -np.inf)
    np.minimum.at(top, lines, s)
    np.maximum.at(bottom, lines, s)
    tall = (bottom - top) >= 0.3 * np.max(bottom - top)
    keep = tall[lines]
    return s[keep], t[keep]


def body_axis(points: np.ndarray, chord: np.ndarray, search_deg: float = 25.0) -> np.ndarray:
    """The body's own superior-inferior axis: of the directions within ``search_deg`` of the
    spine's ``chord``, the one whose aligned bounding box is smallest (a body is close to a
    rectangle, so that box lies along its walls and endplates; the chord alone misses a body
    tilted against its neighbours, as at the lordosis)."""
    base = np.arctan2(chord[1], chord[0])
    angles = base + np.radians(np.arange(-search_deg, search_deg + 0.1, 1.0))
    dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)           # (n, 2) row, col
    perp = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1)
    s, t = points @ dirs.T, points @ perp.T
    area = np.ptp(s, axis=0) * np.ptp(t, axis=0)
    return dirs[int(np.argmin(area))]


def _endplate_rms(s: np.ndarray, t: np.ndarray, depth: float,
                  step: float) -> tuple[float | None, float | None]:
    """RMS (mm) of the superior and inferior endplate profiles around quadratic fits."""
    t0 = t.min() + 0.1 * depth
    bins = np.floor((t - t0) / step).astype(int)
    n_bins = int(0.8 * depth / step)
    if n_bins < 8:
        return None, None
    inside = (bins >= 0) & (bins < n_bins)
    top = np.full(n_bins, np.inf)
    bottom = np.full(n_bins, -np.inf)
    np.minimum.at(top, bins[inside], s[inside])
    np.maximum.at(bottom, bins[inside], s[inside])
    out: list[float | None] = []
    for profile in (top, bottom):
        ok = np.isfinite(profile)
        if ok.sum() < 8:
            out.append(None)
            continue
        x = np.nonzero(ok)[0].astype(float)
        fit = np.polyval(np.polyfit(x, profile[ok], 2), x)
        out.append(float(np.sqrt(np.mean((profile[ok] - fit) ** 2))))
    return out[0], out[1]


def mid_sagittal_slice(vl: VertebraList, i: int) -> int:
    """The slice nearest the body's centroid, unless it holds under 70% of the widest slice's
    area (then the widest)."""
    v = vl.vertebrae[i]
    k = int(round(v.centroid[2]))
    area = int((vl.labels[k] == v.value).sum())
    widest = int((vl.labels[v.slice] == v.value).sum())
    return k if area >= 0.7 * widest else v.slice


def _gradable(v: Vertebra) -> bool:
    return not v.truncated and not v.level.startswith("S")


def grade_vertebrae(vl: VertebraList) -> VertebraList:
    """Heights, expected heights, loss, grade, shape and endplate roughness of every body,
    written into each :attr:`Vertebra.grading` (see the module docstring). In place."""
    pixel = (vl.spacing_mm[1], vl.spacing_mm[2])
    measured: list[Heights | None] = []
    for i, v in enumerate(vl.vertebrae):
        k = mid_sagittal_slice(vl, i)
        h = measure_heights(vl.labels[k] == v.value, pixel, spine_axis(vl, i))
        measured.append(h if _gradable(v) else None)
        v.grading = {"heights_mm": None if h is None else
                     {key: round(val, 1) for key, val in h.as_dict().items()},
                     "height_slice": k}
    for i, v in enumerate(vl.vertebrae):
        h = measured[i]
        if h is None:
            why = ("sacral segment: not graded" if v.level.startswith("S") else
                   f"truncated: cut by the image's edge (within {EDGE_MM:g} mm of the top/"
                   "bottom row or widest on the first/last slice): not graded" if v.truncated
                   else
                   "too small to measure on its mid-sagittal slice")
            v.grading.update(height_loss=None, grade=None, shape=None, grade_note=why)
            continue
        v.grading.update(_grade_one(h, _neighbour_heights(measured, i)))
    return vl


def _neighbour_heights(measured: list[Heights | None], i: int) -> list[Heights]:
    """Up to :data:`NEIGHBOURS` gradable bodies on each side; with gradable bodies on one
    side only, just the nearest: heights grow down the spine, so two bodies on one side
    would bias the expected height (L1 against L2 and L3 read as a wedge on healthy vb3)."""
    sides = []
    for side in (-1, 1):
        found: list[Heights] = []
        j = i + side
        while 0 <= j < len(measured) and len(found) < NEIGHBOURS:
            h = measured[j]
            if h is not None:
                found.append(h)
            j += side
        sides.append(found)
    above, below = sides
    if above and below:
        return above + below
    return (above or below)[:1]


def _grade_one(h: Heights, neighbours: list[Heights]) -> dict:
    own = h.as_dict()
    if neighbours:
        expected = {k: float(np.median([n.as_dict()[k] for n in neighbours])) for k in own}
        basis = (f"median of {len(neighbours)} neighbouring bodies" if len(neighbours) > 1
                 else "the nearest gradable body (none on the other side)")
    else:
        expected = {"anterior": h.posterior, "middle": h.posterior, "posterior": h.posterior}
        basis = "the body's own posterior height (no gradable neighbour)"
    losses = {k: max(0.0, 1.0 - own[k] / expected[k]) if expected[k] > 0 else 0.0 for k in own}
    loss = max(losses.values())
    grade = genant_grade(loss)
    rough = [r for r in (h.superior_rms, h.inferior_rms) if r is not None]
    return {"expected_heights_mm": {k: round(e, 1) for k, e in expected.items()},
            "expected_from": basis, "losses": {k: round(x, 3) for k, x in losses.items()},
            "height_loss": round(loss, 3), "grade": grade,
            "shape": fracture_shape(losses) if grade > 0 else "normal",
            "endplate_irregularity_mm": {"superior": _round(h.superior_rms),
                                         "inferior": _round(h.inferior_rms)},
            "endplate_irregular": bool(rough) and max(rough) > IRREGULAR_MM}


def fracture_shape(losses: dict[str, float]) -> str:
    """wedge (the anterior height lost most), biconcave (the middle), crush (the posterior
    wall, or anterior and middle alike: the whole body)."""
    a, m, p = losses["anterior"], losses["middle"], losses["posterior"]
    worst = max(a, m, p)
    if p >= GRADE_LIMITS[0] or p == worst or min(a, m) >= 0.8 * worst:
        return "crush"
    return "wedge" if a >= m else "biconcave"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
