"""Put a T2 series on the T1 grid: slice matching by patient-space position, then in-plane
resampling when the two series differ in matrix, spacing or field of view.

T1 defines the grid because the manifest's slice index and box are given in T1 pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GeometryError
from .volume import Volume

_PARALLEL_COS = np.cos(np.deg2rad(5.0))  # normals within 5 degrees count as the same plane


def match_slices(t1: Volume, t2: Volume, tolerance_mm: float | None = None) -> np.ndarray:
    """For each T1 slice, the index of the T2 slice nearest in patient space.

    Both volumes must be parallel. ``tolerance_mm`` defaults to half the larger slice spacing:
    a T1 slice with no T2 slice that close gets index -1; if *no* T1 slice has a partner the
    series do not overlap and a :class:`GeometryError` is raised.
    """
    cos = abs(float(np.dot(t1.normal, t2.normal)))
    if cos < _PARALLEL_COS:
        angle = np.degrees(np.arccos(min(cos, 1.0)))
        raise GeometryError(f"T1 ({t1.plane}) and T2 ({t2.plane}) slices are not parallel "
                            f"({angle:.0f} degrees apart); choose series of the same plane",
                            t2.source or None)
    if tolerance_mm is None:
        tolerance_mm = 0.5 * max(t1.slice_spacing, t2.slice_spacing, 1e-3) + 0.05
    # distance along T1's normal of every T2 slice to every T1 slice
    c1 = t1.positions @ t1.normal
    c2 = t2.positions @ t1.normal
    dist = np.abs(c1[:, None] - c2[None, :])
    nearest = dist.argmin(axis=1)
    ok = dist[np.arange(len(c1)), nearest] <= tolerance_mm
    if not ok.any():
        raise GeometryError(
            f"T1 and T2 do not overlap: T1 spans {c1.min():.1f}..{c1.max():.1f} mm and T2 spans "
            f"{c2.min():.1f}..{c2.max():.1f} mm along the slice normal (tolerance "
            f"{tolerance_mm:.1f} mm)", t2.source or None)
    return np.where(ok, nearest, -1)


def same_grid(a: Volume, b: Volume, tol_mm: float = 1e-3) -> bool:
    return (a.data.shape[1:] == b.data.shape[1:]
            and np.allclose(a.pixel_spacing, b.pixel_spacing, atol=tol_mm)
            and np.allclose(a.row_direction, b.row_direction, atol=1e-4)
            and np.allclose(a.column_direction, b.column_direction, atol=1e-4))


def resample_slice(src: Volume, index: int, dst: Volume, dst_index: int) -> np.ndarray:
    """Bilinearly sample slice ``index`` of ``src`` at the pixel centres of ``dst`` slice
    ``dst_index`` (projected in-plane). Outside ``src``'s field of view the result is 0."""
    rows, cols = np.mgrid[0:dst.data.shape[1], 0:dst.data.shape[2]]
    with np.errstate(all="ignore"):  # absurd geometry gives inf/NaN: outside, filled below
        points = dst.pixel_to_patient(dst_index, rows, cols) - src.positions[index]
        c = points @ src.row_direction / src.pixel_spacing[1]
        r = points @ src.column_direction / src.pixel_spacing[0]
    return bilinear(src.data[index], r, c)


def bilinear(image: np.ndarray, r: np.ndarray, c: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Sample ``image`` at fractional (r, c); points outside the image, and non-finite
    coordinates (NaN, inf), get ``fill``."""
    h, w = image.shape
    r = np.asarray(r, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    finite = np.isfinite(r) & np.isfinite(c)
    r = np.where(finite, r, 0.0)
    c = np.where(finite, c, 0.0)
    inside = finite & (r >= -0.5) & (r <= h - 0.5) & (c >= -0.5) & (c <= w - 0.5)
    r = np.clip(r, 0, h - 1)
    c = np.clip(c, 0, w - 1)
    r0 = np.minimum(np.floor(r).astype(np.int64), h - 2) if h > 1 else np.zeros_like(r, int)
    c0 = np.minimum(np.floor(c).astype(np.int64), w - 2) if w > 1 else np.zeros_like(c, int)
    fr = (r - r0) if h > 1 else np.zeros_like(r)
    fc = (c - c0) if w > 1 else np.zeros_like(c)
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    img = image.astype(np.float64)
    out = (img[r0, c0] * (1 - fr) * (1 - fc) + img[r0, c1] * (1 - fr) * fc
           + img[r1, c0] * fr * (1 - fc) + img[r1, c1] * fr * fc)
    return np.where(inside, out, fill).astype(np.float32)


def align_to(t1: Volume, t2: Volume, tolerance_mm: float | None = None) -> Volume:
    """T2 resliced onto the T1 grid: same shape, positions and directions as ``t1``.

    T1 slices without a T2 partner (partial overlap) are NaN so preprocessing can refuse a
    lesion slice that has no T2, instead of silently feeding zeros.
    """
    index = match_slices(t1, t2, tolerance_mm)
    out = np.full(t1.data.shape, np.nan, dtype=np.float32)
    grid_equal = same_grid(t1, t2)
    for i, j in enumerate(index):
        if j < 0:
            continue
        offset = t2.positions[j] - t1.positions[i]
        in_plane = offset - np.dot(offset, t1.normal) * t1.normal
        if grid_equal and np.linalg.norm(in_plane) < 1e-3:
            out[i] = t2.data[j]  # identical grids (the usual case): no interpolation blur
        else:
            out[i] = resample_slice(t2, int(j), t1, i)
    return t2.with_data(out, positions=t1.positions.copy(), pixel_spacing=t1.pixel_spacing,
                        row_direction=t1.row_direction.copy(),
                        column_direction=t1.column_direction.copy(),
                        slice_sources=tuple(t2.slice_sources[j] if j >= 0 and t2.slice_sources
                                            else "" for j in index),
                        metadata={**t2.metadata, "matched_t2_slices": index.tolist()})


def on_t1_grid(t1: Volume, t2: Volume, tolerance_mm: float | None = None) -> Volume:
    """``t2`` itself when it already shares T1's slices and pixels, else :func:`align_to`."""
    if t2.data.shape == t1.data.shape and np.allclose(t2.positions, t1.positions) \
            and same_grid(t1, t2):
        return t2
    return align_to(t1, t2, tolerance_mm)


@dataclass(frozen=True)
class AlignedPair:
    """A T1 volume and its T2 on the T1 grid (same slices, pixels and directions).

    Made once per T1/T2 choice by :func:`align_pair`; preprocessing, the overlay and every
    slider move of the demo reuse it, so T2 is never resampled twice for one prediction."""
    t1: Volume
    t2: Volume

    def __post_init__(self) -> None:
        if self.t2.data.shape != self.t1.data.shape:
            raise ValueError("AlignedPair needs T2 on the T1 grid: use align_pair(t1, t2)")


def align_pair(t1: Volume, t2: Volume, tolerance_mm: float | None = None) -> AlignedPair:
    """The one place a T1/T2 pair is aligned (see :func:`on_t1_grid`)."""
    return AlignedPair(t1, on_t1_grid(t1, t2, tolerance_mm))

