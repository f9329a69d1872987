"""From tissue labels to T1W / T2W magnitude images.

Steps per slice: per-case signal look-up (tissue values jittered per case, lesion values from
the lesion), multiplicative texture, 2x2 averaging (partial volume), coil bias field, receiver
gain, Rician noise (magnitude of complex Gaussian noise), 12-bit quantisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import SUPER
from .tissues import N_TISSUES, signal_table
from .tissues import Tissue as T

MAX_VALUE = 4095  # BitsStored 12


@dataclass
class SeriesPhysics:
    lut: np.ndarray        # (N_TISSUES,) nominal signal per label
    texture: np.ndarray    # (N_TISSUES,) texture amplitude per label
    gain: float
    noise: float           # Rician sigma (before gain)


@dataclass
class CasePhysics:
    t1: SeriesPhysics
    t2: SeriesPhysics
    bias: np.ndarray       # 6 coefficients of the coil sensitivity (shared: same coil)


def draw_physics(rng: np.random.Generator, lesion_t1: float, lesion_t2: float,
                 bright_t2: float) -> CasePhysics:
    """Per-case scanner and tissue variation; lesion values are ratios to normal marrow."""
    table = signal_table()
    series = []
    for col in (0, 1):
        lut = table[:, col] * (1 + 0.04 * rng.standard_normal(N_TISSUES)).astype(np.float32)
        marrow = lut[T.MARROW]
        lut[T.LESION] = marrow * (lesion_t1 if col == 0 else lesion_t2)
        lut[T.LESION_BRIGHT] = marrow * (lesion_t1 * 0.9 if col == 0 else bright_t2)
        series.append(SeriesPhysics(lut=lut.astype(np.float32), texture=table[:, 2].copy(),
                                    gain=float(rng.uniform(0.8, 1.15)),
                                    noise=float(rng.uniform(12.0, 30.0))))
    bias = np.array([rng.uniform(0.45, 0.7),     # floor far from the coil
                     rng.uniform(90.0, 160.0),   # coil depth scale (mm)
                     rng.uniform(0.1, 0.3),      # superior-inferior falloff
                     rng.uniform(-0.15, 0.15),   # SI centre offset (fraction of FOV)
                     rng.uniform(-0.08, 0.08),   # SI tilt
                     rng.uniform(0.0, 1.0)])     # unused spare, keeps the stream stable
    return CasePhysics(t1=series[0], t2=series[1], bias=bias)


def bias_field(shape: tuple[int, int], spacing: float, back_a: float,
               coeffs: np.ndarray) -> np.ndarray:
    """Receive-coil sensitivity: strongest at the patient's back (spine array), smooth falloff.

    ``back_a`` is the posterior skin position (mm from the anterior FOV edge).
    """
    floor, scale, si, si_c, tilt, _ = coeffs
    s = (np.arange(shape[0]) + 0.5) / shape[0] - 0.5
    a = (np.arange(shape[1]) + 0.5) * spacing
    depth = np.clip(back_a - a, 0, None)
    across = floor + (1 - floor) * np.exp(-depth / scale)
    along = 1 - si * (s - si_c) ** 2 * 4 + tilt * s
    field = along[:, None] * across[None, :]
    return (field / field.max() * 1.25).astype(np.float32)


def clean_signal(labels: np.ndarray, phys: SeriesPhysics, texture: np.ndarray,
                 lesion_strength: float) -> np.ndarray:
    """Noise-free signal on the pixel grid from a 2x label map (partial volume by averaging)."""
    lut = phys.lut.copy()
    marrow = lut[T.MARROW]
    for t in (T.LESION, T.LESION_BRIGHT):  # lesion contrast fades towards its lateral edge
        lut[t] = marrow + lesion_strength * (lut[t] - marrow)
    hi = lut[labels] * (1 + phys.texture[labels] * texture)
    return _block_mean(hi)


_NOISE_BANK: np.ndarray | None = None
_BANK_SIZE = 1 << 22


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` standard normal numbers: a window of a fixed bank at a seeded random offset.

    Drawing fresh normals was the single largest cost of a case; windows of one bank
    (4M numbers from a fixed seed) are as good for noise and stay fully deterministic.
    """
    global _NOISE_BANK
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(20240229).standard_normal(_BANK_SIZE, dtype=np.float32)
    if n > _BANK_SIZE // 2:
        return rng.standard_normal(n, dtype=np.float32)
    start = int(rng.integers(0, _BANK_SIZE - n))
    return _NOISE_BANK[start:start + n]


def acquire(clean: np.ndarray, phys: SeriesPhysics, bias: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Bias, gain, Rician noise and 12-bit quantisation; returns integer-valued float32."""
    signal = clean * bias
    noise = _noise(rng, 2 * clean.size).reshape((2,) + clean.shape) * phys.noise
    mag = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2) * phys.gain
    return np.clip(np.rint(mag), 0, MAX_VALUE).astype(np.float32)


def downsample_mask(mask: np.ndarray) -> np.ndarray:
    """2x mask -> pixel mask: a pixel belongs if at least half of its sub-pixels do."""
    return (_block_mean(mask.astype(np.float32)) >= 0.5).astype(np.uint8)


def _block_mean(hi: np.ndarray) -> np.ndarray:
    """Mean over SUPER x SUPER blocks (strided adds: much faster than reshape().mean())."""
    out = np.zeros((hi.shape[0] // SUPER, hi.shape[1] // SUPER), dtype=np.float32)
    for di in range(SUPER):
        for dj in range(SUPER):
            out += hi[di::SUPER, dj::SUPER]
    return out / (SUPER * SUPER)
