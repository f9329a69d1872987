"""Per-case tissue contrast: sequence variants and randomised tissue signals (SynthSeg style).

Billot et al. (SynthSeg) train on intensities drawn far beyond the real range so that a
network can only rely on shape and *relative* signal. Here each case draws, per series:

- a sequence variant (rates at ``variation`` 1, see :data:`T1_VARIANTS`, :data:`T2_VARIANTS`;
  at ``variation`` v every non-nominal rate is scaled by v, so v = 0 is always "T1" / "T2"):

  * ``T1``: fatty (yellow) marrow, bright; ``T1_RED``: young, red marrow, darker;
  * ``T2``: plain TSE; ``T2_FS``: fat-saturated TSE; ``STIR``: fat (and fatty marrow) nulled,
    fluid and oedema bright;
- per-tissue signals jittered around :data:`~spinefx.phantom.tissues.TISSUE_SIGNAL`
  (log-normal, spread growing with ``variation``), and in a small share of cases
  (:data:`EXTREME_RATE` x v) fully random values per tissue class (ordering not preserved).

Physics that must hold in every variant is imposed *after* the draws: lesion tissues are
ratios to the case's marrow (oedema / tumour is water, so with fat suppression it is a ratio to
the marrow's water signal and stays bright against the nulled marrow), and the benign
confounders are built from the tissues they are made of (:func:`_confounders`). Nothing here
sees the label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tissues import N_TISSUES, signal_table
from .tissues import Tissue as T

T1_VARIANTS: dict[str, float] = {"T1": 0.7, "T1_RED": 0.3}
T2_VARIANTS: dict[str, float] = {"T2": 0.5, "T2_FS": 0.25, "STIR": 0.25}
EXTREME_RATE = 0.08      # share of series with fully random tissue signals at variation 1
JITTER = (0.04, 0.25)    # log-normal sigma of per-tissue signals at variation 0 / 1
EXTREME_RANGE = (40.0, 2400.0)

# Fat share of each tissue's T2 signal: what fat saturation / STIR removes.
FAT_FRACTION: dict[T, float] = {
    T.FAT: 1.0, T.EPIDURAL_FAT: 1.0, T.MARROW: 0.6, T.SKIN: 0.3, T.VISCERA: 0.15,
    T.MUSCLE: 0.1, T.MEDIASTINUM: 0.1,
}
# Derived tissues: never drawn freely, always rebuilt from the case's other values.
DERIVED = (T.LESION, T.LESION_BRIGHT, T.HAEMANGIOMA, T.MODIC1, T.MODIC2, T.MODIC3,
           T.FOCAL_FAT, T.SCHMORL)
FLUIDS = (T.CSF, T.FLUID, T.NUCLEUS, T.IVC)


@dataclass(frozen=True)
class SeriesContrast:
    variant: str
    lut: np.ndarray         # (N_TISSUES,) float32 signal per label
    extreme: bool           # fully random tissue signals this series


def variant_rates(table: dict[str, float], variation: float) -> dict[str, float]:
    """Rates of each variant at ``variation``: the first (nominal) one takes what the others,
    scaled by ``variation``, leave."""
    names = list(table)
    rates = {n: table[n] * variation for n in names[1:]}
    return {names[0]: 1.0 - sum(rates.values()), **rates}


def draw_variant(rng: np.random.Generator, table: dict[str, float], variation: float) -> str:
    rates = variant_rates(table, variation)
    u = float(rng.random())  # always one number, whatever the variation
    edges = np.cumsum(list(rates.values()))
    return list(rates)[min(int(np.searchsorted(edges, u, side="right")), len(rates) - 1)]


def draw_contrast(rng: np.random.Generator, variation: float, lesion_t1: float,
                  lesion_t2: float, bright_t2: float,
                  forced: tuple[str | None, str | None] = (None, None)
                  ) -> tuple[SeriesContrast, SeriesContrast]:
    """T1 and T2 look-up tables of one case (always the same count of random numbers).

    ``forced``: a T1 and/or T2 variant to use instead of the drawn one (the draw still
    happens, so everything else stays as the seed draws it)."""
    table = signal_table()
    out = []
    for col, variants in ((0, T1_VARIANTS), (1, T2_VARIANTS)):
        variant = draw_variant(rng, variants, variation)
        if forced[col] is not None:
            if forced[col] not in variants:
                raise ValueError(f"{('t1', 't2')[col]}_variant must be one of "
                                 f"{list(variants)}, got {forced[col]!r}")
            variant = str(forced[col])
        extreme = float(rng.random()) < EXTREME_RATE * variation
        sigma = JITTER[0] + (JITTER[1] - JITTER[0]) * variation
        jitter = np.exp(sigma * rng.standard_normal(N_TISSUES)).astype(np.float32)
        lo, hi = np.log(EXTREME_RANGE)
        random = np.exp(rng.uniform(lo, hi, N_TISSUES)).astype(np.float32)
        red = float(rng.uniform(0.5, 0.7))        # red-marrow T1 factor
        suppress = float(rng.uniform(0.75, 0.95))  # fat saturation efficiency
        ratios = rng.uniform(0.0, 1.0, 8)          # confounder mixing draws
        base = table[:, col].copy()
        lut = random if extreme else base * jitter
        lut[T.AIR] = 0.0
        water_marrow = float(lut[T.MARROW])        # marrow before any suppression
        if variant == "T1_RED":
            lut[T.MARROW] *= red
        if variant in ("T2_FS", "STIR"):
            lut = _suppress_fat(lut, 0.98 if variant == "STIR" else suppress, variant == "STIR")
        lut = _lesion(lut, col, variant, water_marrow, lesion_t1, lesion_t2, bright_t2)
        lut = _confounders(lut, col, water_marrow, ratios)
        out.append(SeriesContrast(variant=variant, lut=lut.astype(np.float32), extreme=extreme))
    return out[0], out[1]


def _suppress_fat(lut: np.ndarray, efficiency: float, stir: bool) -> np.ndarray:
    lut = lut.copy()
    for tissue, share in FAT_FRACTION.items():
        lut[tissue] *= 1.0 - share * efficiency
    if stir:  # inversion recovery adds T1 weighting: long-T1 fluid brighter, muscle darker
        for tissue in FLUIDS:
            lut[tissue] *= 1.15
        lut[T.MUSCLE] *= 0.8
    return lut


def _lesion(lut: np.ndarray, col: int, variant: str, water_marrow: float, t1_ratio: float,
            t2_ratio: float, bright_t2: float) -> np.ndarray:
    """Lesion signal as ratios to marrow (lesion.py's t1/t2 ratios)."""
    marrow = float(lut[T.MARROW])
    if col == 0:
        lut[T.LESION] = marrow * t1_ratio
        lut[T.LESION_BRIGHT] = marrow * t1_ratio * 0.9
    elif variant == "T2":
        lut[T.LESION] = marrow * t2_ratio
        lut[T.LESION_BRIGHT] = marrow * bright_t2
    else:  # oedema / tumour is water: not suppressed, so bright against the nulled marrow
        lut[T.LESION] = water_marrow * t2_ratio * 0.9
        lut[T.LESION_BRIGHT] = water_marrow * bright_t2 * 0.9
    return lut


def _confounders(lut: np.ndarray, col: int, water_marrow: float, r: np.ndarray) -> np.ndarray:
    """Benign confounders from what they are made of, so their physics holds in any variant."""
    fat, marrow = float(lut[T.FAT]), float(lut[T.MARROW])
    fluid = float(max(lut[T.CSF], lut[T.FLUID]))
    lut[T.FOCAL_FAT] = fat * (0.95 + 0.1 * r[0])                   # fat
    lut[T.MODIC2] = (0.5 + 0.2 * r[1]) * fat + (0.5 - 0.2 * r[1]) * marrow   # fatty marrow
    if col == 0:  # haemangioma: fat and slow-flowing blood / fluid
        lut[T.HAEMANGIOMA] = max(0.6 * fat + 0.4 * marrow, 1.2 * marrow) * (1.0 + 0.1 * r[2])
        lut[T.MODIC1] = marrow * (0.45 + 0.2 * r[3])               # oedema: dark T1
    else:
        lut[T.HAEMANGIOMA] = max(0.5 * fat + 0.5 * fluid, 1.3 * marrow) * (1.0 + 0.1 * r[2])
        lut[T.MODIC1] = max(water_marrow, marrow) * (1.3 + 0.4 * r[3])  # oedema: bright T2
    lut[T.MODIC3] = min(float(lut[T.CORTEX]), 0.25 * marrow) * (1.2 + 0.8 * r[4])  # sclerosis
    lut[T.SCHMORL] = lut[T.NUCLEUS] * (0.85 + 0.15 * r[5])         # disc material
    return lut
