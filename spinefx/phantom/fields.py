"""Smooth random fields defined in millimetres.

Random numbers are drawn on a coarse lattice whose size depends only on the physical extent,
never on the pixel grid, and are sampled bilinearly. So the T1 grid and a T2 grid with another
pixel spacing see the same lesion outline and the same texture: the two series of a case show
one anatomy.
"""
from __future__ import annotations

import numpy as np


class SmoothField:
    """Zero-mean, roughly unit-variance field on ``[origin, origin + extent]`` (two axes, mm)."""

    def __init__(self, rng: np.random.Generator, origin: tuple[float, float],
                 extent: tuple[float, float], cell: float):
        self.origin = np.asarray(origin, dtype=np.float32)
        self.cell = float(cell)
        shape = (int(np.ceil(extent[0] / cell)) + 3, int(np.ceil(extent[1] / cell)) + 3)
        # float32 throughout (numpy keeps it for Python-scalar operands; the stubs say float64)
        raw: np.ndarray = rng.standard_normal(shape).astype(np.float32)
        # one [1,2,1] pass per axis hides the lattice (bilinear white noise looks like tiles)
        raw = (np.roll(raw, 1, 0) + 2 * raw + np.roll(raw, -1, 0)) / 4
        raw = (np.roll(raw, 1, 1) + 2 * raw + np.roll(raw, -1, 1)) / 4
        self.values = raw / (raw.std() + 1e-6)

    def sample(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Field value at positions ``(p, q)`` mm (broadcastable arrays)."""
        fp = (np.asarray(p, dtype=np.float32) - self.origin[0]) / self.cell
        fq = (np.asarray(q, dtype=np.float32) - self.origin[1]) / self.cell
        n0, n1 = self.values.shape
        fp = np.clip(fp, 0, n0 - 1.001)
        fq = np.clip(fq, 0, n1 - 1.001)
        i = fp.astype(np.intp)
        j = fq.astype(np.intp)
        a = fp - i
        b = fq - j
        v = self.values
        return ((1 - a) * ((1 - b) * v[i, j] + b * v[i, j + 1])
                + a * ((1 - b) * v[i + 1, j] + b * v[i + 1, j + 1]))


def lattice(rng: np.random.Generator, extent: tuple[float, float], cell: float) -> np.ndarray:
    """Coarse white-noise lattice covering ``extent`` mm, to be upsampled by :func:`upsample`."""
    shape = (int(np.ceil(extent[0] / cell)) + 1, int(np.ceil(extent[1] / cell)) + 1)
    return rng.standard_normal(shape).astype(np.float32)


def upsample(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Smooth (bicubic) resize of a lattice onto an image grid covering the same extent."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(coarse, dtype=np.float32))  # float32 -> mode "F"
    out = img.resize((shape[1], shape[0]), resample=Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.float32)


class DetailLattices:
    """Grid-independent lattices of the fine textures (drawn once per case, in mm).

    Marrow is not flat: trabecular grain (1 mm; sampled from real vertebral bodies by
    :func:`~spinefx.phantom.real_anatomy.real_marrow_texture` when the data is there),
    patchy fatty / red marrow (2.5 mm) and
    scattered fatty islands (a thresholded 6 mm field, positive only). Muscle has fibres:
    a lattice 10x coarser along the rows (superior-inferior, roughly along the spine) than
    across, which upsamples to streaks.
    """

    def __init__(self, rng: np.random.Generator, extent: tuple[float, float]):
        self.fine = lattice(rng, extent, 1.0)
        self.mid = lattice(rng, extent, 2.5)
        self.patch = lattice(rng, extent, 6.0)
        shape = (int(np.ceil(extent[0] / 12.0)) + 1, int(np.ceil(extent[1] / 1.2)) + 1)
        self.fibre = rng.standard_normal(shape).astype(np.float32)
        # Real trabecular grain where ../shared/data/real-spine is present (1 mm per element,
        # like the fine lattice); the procedural grain otherwise.
        from .real_anatomy import real_marrow_texture

        real = real_marrow_texture(rng, self.fine.shape, 1.0)
        if real is not None:
            self.fine = real

    def fields(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(detail, fibre) fields on an image grid of ``shape`` covering the extent."""
        islands = np.maximum(upsample(self.patch, shape) - 0.7, 0.0)
        detail = 0.45 * upsample(self.fine, shape) + 0.55 * upsample(self.mid, shape) + islands
        return detail, upsample(self.fibre, shape)
