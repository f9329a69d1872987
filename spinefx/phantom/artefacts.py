"""MR acquisition artefacts, applied to one slice's noise-free signal before the noise.

Rates at ``variation`` 1 (scaled by the variation; none at 0), drawn per series:

- motion ghosting (:data:`GHOST_RATE`): periodic phase errors on the phase-encode lines
  (breathing / pulsation during the acquisition) replicate the anatomy as faint ghosts along the
  phase-encode direction;
- Gibbs ringing (:data:`GIBBS_RATE`): k-space truncated to a share of its extent, so sharp edges
  (CSF / cord, fat / muscle) ring;
- wrap-around (:data:`WRAP_RATE`): a phase-encode field of view smaller than the body; tissue
  beyond one edge folds onto the opposite edge (approximated by mirroring the edge band, since
  nothing outside the field of view is rendered).

The phase-encode axis is drawn per series: rows (superior-inferior) or columns
(anterior-posterior), both used for sagittal spine. numpy FFT only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GHOST_RATE = 0.2
GIBBS_RATE = 0.2
WRAP_RATE = 0.1


@dataclass(frozen=True)
class Artefacts:
    pe_axis: int                                  # 0: rows (SI), 1: columns (AP)
    ghost: tuple[float, float, float] | None      # amplitude (rad), period (lines), phase
    gibbs: float | None                           # share of k-space kept per axis
    wrap: tuple[float, float] | None              # band (share of the FOV), strength

    @property
    def any(self) -> bool:
        return self.ghost is not None or self.gibbs is not None or self.wrap is not None

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, v in (("ghost", self.ghost), ("gibbs", self.gibbs),
                                    ("wrap", self.wrap)) if v is not None)


def draw_artefacts(rng: np.random.Generator, variation: float) -> Artefacts:
    """One series' artefacts (always the same count of random numbers)."""
    u = rng.random(3)
    pe_axis = int(rng.integers(0, 2))
    ghost = (float(rng.uniform(0.1, 0.5)), float(rng.uniform(3.0, 12.0)),
             float(rng.uniform(0, 2 * np.pi)))
    gibbs = float(rng.uniform(0.35, 0.7))
    wrap = (float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.2, 0.6)))
    return Artefacts(pe_axis=pe_axis,
                     ghost=ghost if u[0] < GHOST_RATE * variation else None,
                     gibbs=gibbs if u[1] < GIBBS_RATE * variation else None,
                     wrap=wrap if u[2] < WRAP_RATE * variation else None)


def apply_artefacts(signal: np.ndarray, art: Artefacts) -> np.ndarray:
    """The slice as the scanner would reconstruct it (complex64 when the phase is touched)."""
    out: np.ndarray = signal
    if art.wrap is not None:
        out = _wrap(out, art.pe_axis, *art.wrap)
    if art.gibbs is not None or art.ghost is not None:
        out = _kspace(out, art)
    return out


def _wrap(img: np.ndarray, axis: int, band: float, strength: float) -> np.ndarray:
    moved = np.moveaxis(img.copy(), axis, 0)
    w = max(int(band * moved.shape[0]), 1)
    moved[-w:] += strength * moved[:w][::-1]   # beyond the first edge folds onto the last
    return np.moveaxis(moved, 0, axis)


def _kspace(img: np.ndarray, art: Artefacts) -> np.ndarray:
    """Both effects are separable per axis, so 1-D transforms suffice (half the work of 2-D)."""
    out: np.ndarray = img
    if art.gibbs is not None:  # keep the central share of k-space on both axes
        for axis in (0, 1):
            k = np.fft.rfft(out, axis=axis)
            cut = max(int(0.5 * art.gibbs * out.shape[axis]), 1)
            if axis == 0:
                k[cut:] = 0
            else:
                k[:, cut:] = 0
            out = np.fft.irfft(k, n=out.shape[axis], axis=axis)
    if art.ghost is not None:  # periodic phase error per phase-encode line
        amp, period, phase = art.ghost
        axis = art.pe_axis
        n = out.shape[axis]
        err = np.exp(1j * amp * np.sin(2 * np.pi * np.arange(n) / period + phase))
        k = np.fft.fft(out, axis=axis) * (err[:, None] if axis == 0 else err[None, :])
        return np.fft.ifft(k, axis=axis).astype(np.complex64)
    return out.astype(np.float32)
