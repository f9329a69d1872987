"""From tissue labels to T1W / T2W magnitude images, and the acquisition that frames them.

Steps per slice: per-case signal look-up (:mod:`spinefx.phantom.contrast`: sequence variant,
tissue values, lesion values from the lesion), multiplicative textures (coarse, fine marrow /
fat detail, muscle fibres), averaging of SUPER x SUPER sub-pixels and of sub-slices across the
slice thickness (partial volume), coil bias field, artefacts
(:mod:`spinefx.phantom.artefacts`), receiver gain, Rician noise (magnitude of complex
Gaussian noise), 12-bit quantisation.

Every range widens with ``variation`` (0: the v1 look, 1: SynthSeg-style randomisation);
:func:`span` interpolates them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import SUPER, Canvas
from .artefacts import Artefacts, apply_artefacts
from .contrast import draw_contrast
from .lesion import draw_level
from .spine import LESION_LEVELS, LEVEL_NAMES
from .tissues import LESION_MARROW, N_TISSUES, member_lut, signal_table
from .tissues import Tissue as T

MAX_VALUE = 4095  # BitsStored 12
T2_SCALES = (0.9, 1.2)   # T2 pixel spacing / T1 pixel spacing when the grids differ
T2_OTHER_GRID_P = 0.3    # share of cases whose T2 has its own in-plane grid
MATRIX_RANGE = (192, 448)
FOV_RANGE = (220.0, 380.0)  # mm: five or more vertebrae in view
MAX_SLICES = 16          # bounds the cost of thin-slice cases (their slab is thinner)
RENDER_BUDGET = 16       # slices x sub-slices painted per grid: bounds the cost of a case


def span(rng: np.random.Generator, nominal: tuple[float, float], wide: tuple[float, float],
         variation: float) -> float:
    """Uniform draw from the range interpolated between ``nominal`` (v = 0) and ``wide``."""
    lo = nominal[0] + (wide[0] - nominal[0]) * variation
    hi = nominal[1] + (wide[1] - nominal[1]) * variation
    return float(rng.uniform(lo, hi))


def sub_slices(thickness: float, n_slices: int) -> int:
    """Sub-slices averaged across the slab (partial volume): 1 up to 2 mm, 2 up to 3.5 mm,
    3 above, but at most :data:`RENDER_BUDGET` paintings per grid (many slices: fewer)."""
    wanted = 1 if thickness <= 2.0 else 2 if thickness <= 3.5 else 3
    return max(1, min(wanted, RENDER_BUDGET // n_slices))


@dataclass(frozen=True)
class Acquisition:
    """Slices, spacing, grid and patient position of one case."""
    level: str
    n: int                  # number of slices
    thickness: float        # slice thickness, mm
    gap: float              # mm between slices
    ps: float               # T1 pixel spacing, mm
    matrix: int             # T1 rows = columns
    t2_scale: float         # T2 pixel spacing / T1 pixel spacing
    centre_offset: int      # lesion centre slice relative to the middle slice
    slice_jitter: float     # lesion centre's offset from its slice, in slice spacings
    x_mid: float            # patient x of the spine's midline, mm
    corner_y: float         # FOV corner position (share of the FOV / patient z, mm)
    corner_z: float
    n_sub: int              # sub-slices averaged across the thickness

    @property
    def sbs(self) -> float:
        """Spacing between slice centres, mm."""
        return self.thickness + self.gap

    @property
    def centre(self) -> int:
        """Index of the lesion centre slice."""
        return self.n // 2 + self.centre_offset

    @property
    def sub_offsets(self) -> np.ndarray:
        """LR offsets (mm) of the sub-slices from each slice centre."""
        return ((np.arange(self.n_sub) + 0.5) / self.n_sub - 0.5) * self.thickness


def draw_acquisition(rng: np.random.Generator, variation: float,
                     overrides: dict) -> Acquisition:
    """Draw every acquisition parameter (always all of them, in this order), then apply the
    ``level`` / ``n_slices`` / ``t2_scale`` overrides."""
    v = variation
    level = draw_level(rng)
    n_nominal = int(rng.integers(12, 17))
    thickness = round(span(rng, (3.0, 4.0), (1.0, 5.0), v), 1)
    gap = round(span(rng, (0.3, 0.8), (0.0, 1.0), v), 1)
    ps_nominal = float(rng.uniform(1.1, 1.4))
    matrix_free = MATRIX_RANGE[0] + (MATRIX_RANGE[1] - MATRIX_RANGE[0]) * float(rng.random()) ** 3
    fov_free = float(rng.uniform(*FOV_RANGE))
    coverage = float(rng.uniform(40.0, 70.0))   # mm of slab
    t2_scale = float(rng.choice(T2_SCALES)) if rng.random() < T2_OTHER_GRID_P else 1.0
    centre_offset = int(rng.integers(-1, 2))
    slice_jitter = float(rng.uniform(-0.3, 0.3))
    x_mid = float(rng.uniform(-3, 3))
    corner_y = float(rng.uniform(0.5, 0.6))
    corner_z = float(rng.uniform(50, 250))

    fov = 256 * ps_nominal + v * (fov_free - 256 * ps_nominal)
    matrix = int(round(256 + v * (matrix_free - 256)))
    matrix = int(np.clip(matrix, np.ceil(fov / 1.5), np.floor(fov / 0.5)))
    ps = round(fov / matrix, 4)
    n_free = int(np.clip(round(coverage / (thickness + gap)), 8, MAX_SLICES))
    n = int(round(n_nominal + v * (n_free - n_nominal)))
    level = overrides.get("level", level)
    if level not in LESION_LEVELS:
        raise ValueError(f"level must be one of {list(LESION_LEVELS)}, got {level!r}")
    n = int(overrides.get("n_slices", n))
    if not 5 <= n <= 40:
        raise ValueError(f"n_slices must be within 5..40, got {n}")
    t2_scale = float(overrides.get("t2_scale", t2_scale))
    return Acquisition(level=level, n=n, thickness=thickness, gap=gap, ps=ps, matrix=matrix,
                       t2_scale=t2_scale, centre_offset=centre_offset, slice_jitter=slice_jitter,
                       x_mid=x_mid, corner_y=corner_y, corner_z=corner_z,
                       n_sub=sub_slices(thickness, n) if v > 0 else 1)


@dataclass
class SeriesPhysics:
    variant: str           # sequence variant (see contrast.py)
    extreme: bool          # fully random tissue signals
    lut: np.ndarray        # (N_TISSUES,) nominal signal per label
    texture: np.ndarray    # (N_TISSUES,) coarse texture amplitude per label
    detail: np.ndarray     # (N_TISSUES,) fine multi-scale texture (marrow, fat) amplitude
    fibre: np.ndarray      # (N_TISSUES,) fibre texture (muscle) amplitude
    gain: float
    noise: float           # Rician sigma (before gain)


@dataclass
class CasePhysics:
    t1: SeriesPhysics
    t2: SeriesPhysics
    bias: np.ndarray       # 6 coefficients of the coil sensitivity (shared: same coil)


DETAIL = {T.MARROW: 0.16, T.LESION: 0.08, T.SKIP: 0.06, T.FOCAL_FAT: 0.08, T.MODIC2: 0.1,
          T.HAEMANGIOMA: 0.15, T.FAT: 0.05, T.EPIDURAL_FAT: 0.04}
FIBRE = {T.MUSCLE: 0.14}


def _amplitudes(rng: np.random.Generator, table: dict, variation: float) -> np.ndarray:
    amp = np.zeros(N_TISSUES, dtype=np.float32)
    scale = rng.uniform(0.5, 1.5, len(table))
    for (tissue, a), s in zip(table.items(), scale):
        amp[tissue] = a * s * variation   # v1 had no fine textures
    return amp


def draw_physics(rng: np.random.Generator, lesion_t1: float, lesion_t2: float,
                 bright_t2: float, variation: float = 1.0,
                 variants: tuple[str | None, str | None] = (None, None)) -> CasePhysics:
    """Per-case scanner and tissue variation; lesion values are ratios to normal marrow.
    ``variants``: forced T1 / T2 sequence variants (None = drawn)."""
    v = variation
    contrasts = draw_contrast(rng, v, lesion_t1, lesion_t2, bright_t2, variants)
    coarse = signal_table()[:, 2].copy()
    detail, fibre = _amplitudes(rng, DETAIL, v), _amplitudes(rng, FIBRE, v)
    series = []
    for c in contrasts:
        sigma = np.exp(span(rng, (np.log(12.0), np.log(30.0)), (np.log(2.0), np.log(90.0)), v))
        series.append(SeriesPhysics(variant=c.variant, extreme=c.extreme, lut=c.lut,
                                    texture=coarse, detail=detail, fibre=fibre,
                                    gain=span(rng, (0.8, 1.15), (0.6, 1.3), v),
                                    noise=float(sigma)))
    bias = np.array([span(rng, (0.45, 0.7), (0.2, 0.85), v),    # floor far from the coil
                     span(rng, (90.0, 160.0), (60.0, 220.0), v),  # coil depth scale (mm)
                     span(rng, (0.1, 0.3), (0.0, 0.5), v),        # superior-inferior falloff
                     span(rng, (-0.15, 0.15), (-0.3, 0.3), v),    # SI centre offset (of FOV)
                     span(rng, (-0.08, 0.08), (-0.25, 0.25), v),  # SI tilt
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
    along = np.clip(1 - si * (s - si_c) ** 2 * 4 + tilt * s, 0.2, None)
    field = along[:, None] * across[None, :]
    return (field / field.max() * 1.25).astype(np.float32)


@dataclass
class Textures:
    """Multiplicative texture fields on one (sub-pixel) grid or strip."""
    coarse: np.ndarray     # per slice
    detail: np.ndarray     # per grid: multi-scale marrow / fat pattern
    fibre: np.ndarray      # per grid: muscle fibres along the spine

    def at(self, index: tuple[np.ndarray, np.ndarray]) -> "Textures":
        return Textures(self.coarse[index], self.detail[index], self.fibre[index])


def modulation(labels: np.ndarray, phys: SeriesPhysics, tex: Textures) -> np.ndarray:
    """Multiplicative texture of every sub-pixel (the texture amplitudes are anatomy: one
    table for both series, so this is computed once per painting)."""
    mod = 1 + phys.texture[labels] * tex.coarse
    if phys.detail.any():
        mod += phys.detail[labels] * tex.detail + phys.fibre[labels] * tex.fibre
    return np.maximum(mod, 0.05)


def hi_signal(labels: np.ndarray, phys: SeriesPhysics, mod: np.ndarray,
              lesion_strength: float = 1.0) -> np.ndarray:
    """Noise-free signal of every sub-pixel of ``labels`` (before sub-pixel averaging)."""
    lut = phys.lut.copy()
    marrow = lut[T.MARROW]
    for t in (T.LESION, T.LESION_BRIGHT):  # lesion contrast fades towards its lateral edge
        lut[t] = marrow + lesion_strength * (lut[t] - marrow)
    return lut[labels] * mod


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
            rng: np.random.Generator, artefacts: Artefacts | None = None) -> np.ndarray:
    """Bias, artefacts, gain, Rician noise and 12-bit quantisation; integer-valued float32."""
    signal = clean * bias
    if artefacts is not None and artefacts.any:
        signal = apply_artefacts(signal, artefacts)
    noise = _noise(rng, 2 * clean.size).reshape((2,) + clean.shape) * phys.noise
    if np.iscomplexobj(signal):
        mag = np.sqrt((signal.real + noise[0]) ** 2 + (signal.imag + noise[1]) ** 2)
    else:
        mag = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2)
    return np.clip(np.rint(mag * phys.gain), 0, MAX_VALUE).astype(np.float32)


def downsample_mask(mask: np.ndarray) -> np.ndarray:
    """2x mask -> pixel mask: a pixel belongs if at least half of its sub-pixels do."""
    return (block_mean(mask.astype(np.float32)) >= 0.5).astype(np.uint8)


def block_mean(hi: np.ndarray) -> np.ndarray:
    """Mean over SUPER x SUPER blocks (strided adds: much faster than reshape().mean())."""
    out = np.zeros((hi.shape[0] // SUPER, hi.shape[1] // SUPER), dtype=np.float32)
    for di in range(SUPER):
        for dj in range(SUPER):
            out += hi[di::SUPER, dj::SUPER]
    return out / (SUPER * SUPER)


def block_label(labels: np.ndarray, counts: np.ndarray | None, samples: int) -> np.ndarray:
    """Label map -> pixel label map: the largest label of each SUPER x SUPER block, kept when at
    least half of the block's ``samples`` (sub-pixels x sub-slices) carry it. ``labels`` holds
    each sub-pixel's largest label over the sub-slices, ``counts`` how many sub-slices had it
    (None: one each)."""
    top = labels[::SUPER, ::SUPER].copy()
    for di in range(SUPER):
        for dj in range(SUPER):
            np.maximum(top, labels[di::SUPER, dj::SUPER], out=top)
    n = np.zeros(top.shape, dtype=np.int16)
    for di in range(SUPER):
        for dj in range(SUPER):
            same = labels[di::SUPER, dj::SUPER] == top
            n += same if counts is None else np.where(same, counts[di::SUPER, dj::SUPER], 0)
    return np.where((2 * n >= samples) & (top > 0), top, 0).astype(np.uint8)


# --- strip <-> image, background signal and the per-slice masks (used by case.py) -----------
LESION_LUT = member_lut(LESION_MARROW)
BODY_LUT = member_lut(np.array([T.CORTEX, T.MARROW, T.LESION, T.LESION_BRIGHT, T.BAND, T.FLUID,
                                T.VACUUM, T.SKIP, T.HAEMANGIOMA, T.MODIC1, T.MODIC2, T.MODIC3,
                                T.FOCAL_FAT, T.SCHMORL]))
DISC_LUT = member_lut(np.array([T.ANNULUS, T.NUCLEUS, T.NUCLEUS_DEGEN]))


def flat_index(cv: Canvas) -> np.ndarray:
    """The strip's positions in the flattened 2x image (1-D take / put beat 2-D indexing)."""
    if "flat" not in cv.cache:
        rows, cols = cv.index
        cv.cache["flat"] = (rows * cv.shape[1] + cols).ravel()
    return cv.cache["flat"]


def gather(cv: Canvas, image: np.ndarray) -> np.ndarray:
    return image.reshape(-1).take(flat_index(cv)).reshape(cv.u.shape)


def scatter(cv: Canvas, image: np.ndarray, strip: np.ndarray) -> None:
    image.reshape(-1)[flat_index(cv)] = strip.reshape(-1)


class Background:
    """The slice-independent soft-tissue background's signal factors on one grid."""

    def __init__(self, labels: np.ndarray, phys: SeriesPhysics, detail: np.ndarray,
                 fibre: np.ndarray):
        self.lut = phys.lut[labels]
        self.coarse = phys.texture[labels]
        self.fixed = 1 + phys.detail[labels] * detail + phys.fibre[labels] * fibre

    def signal(self, coarse: np.ndarray) -> np.ndarray:
        return self.lut * np.maximum(self.fixed + self.coarse * coarse, 0.05)


class SlabMasks:
    """One slice's masks accumulated over its sub-slices on the strip (see
    :func:`~spinefx.phantom.physics.block_label` for the label maps' majority rule)."""

    def __init__(self, cv: Canvas, level: int):
        self.cv, self.level = cv, level
        if "bodies" not in cv.cache:
            lv = cv.spec.levels
            cv.cache["bodies"] = (cv.region(-lv.depth.max() / 2 - 3, lv.depth.max() / 2 + 6),
                                  (cv.j + 1 + len(LEVEL_NAMES)).astype(np.uint8))
            cv.cache["level_no"] = (cv.cache["bodies"][0].k + 1).astype(np.uint8)
        shape = cv.u.shape
        self.vert = np.zeros(shape, np.float32)
        self.lesion = np.zeros(shape, np.float32)
        # one label map for both: bodies 1..N, discs N+1..2N (disjoint on every sub-pixel)
        self.top = np.zeros(shape, np.uint8)
        self.count: np.ndarray | None = None   # None: every label seen once (one sub-slice)
        self.n = 0

    def add(self, strip: np.ndarray, vert: np.ndarray, geo) -> None:
        rg, disc_no = self.cv.cache["bodies"]
        self.vert += vert
        self.lesion += LESION_LUT[strip] & vert
        new = np.where(DISC_LUT[strip], disc_no, 0).astype(np.uint8)
        # a body is what was painted as bone (or marrow disease) in front of its back wall:
        # the painted labels carry the outline already, the wall keeps the pedicles out
        k = rg.k
        inside = (BODY_LUT[rg.labels(strip)] & (geo.xf[k] >= 0.3)
                  & (rg.v < geo.v_back[k] + rg.bulge * geo.xf[k] + 0.3))
        bodies = np.where(inside, self.cv.cache["level_no"], 0).astype(np.uint8)
        bodies[bodies == self.level + 1] = 0
        block = new[rg.rows, rg.cols]
        np.copyto(block, bodies, where=bodies > 0)
        new[vert] = self.level + 1    # the fractured body as the lesion painter grew it
        self.n += 1
        if self.n == 1:  # the first sub-slice: its labels, once each
            self.top = new
            return
        if self.count is None:
            self.count = np.ones(new.shape, np.uint8)
        top, count = self.top, self.count
        count[new == top] += 1
        higher = new > top
        top[higher], count[higher] = new[higher], 1

    def finish(self, masks: dict[str, np.ndarray], i: int, n_sub: int) -> None:
        cv = self.cv
        if "buffers" not in cv.cache:  # zero outside the strip; the strip is overwritten
            cv.cache["buffers"] = (np.zeros(cv.shape, np.float32),
                                   np.zeros(cv.shape, np.uint8), np.zeros(cv.shape, np.uint8))
        f32, top8, count8 = cv.cache["buffers"]
        # vertebra and lesion sample counts in one pass: at most 4 x 3 < 16 samples each
        scatter(cv, f32, self.vert + 16 * self.lesion)
        total = np.rint(block_mean(f32) * (SUPER * SUPER))
        vert = total % 16 >= 2 * n_sub
        lesion = (total // 16 >= 2 * n_sub) & vert
        scatter(cv, top8, self.top)
        if self.count is not None:
            scatter(cv, count8, self.count)
        both = block_label(top8, None if self.count is None else count8, 4 * n_sub)
        n = len(LEVEL_NAMES)
        bodies = np.where(both <= n, both, 0).astype(np.uint8)
        bodies[(bodies == self.level + 1) & ~vert] = 0
        bodies[vert] = self.level + 1
        discs = np.where((both > n) & (bodies == 0), both - n, 0).astype(np.uint8)
        masks["vertebra"][i], masks["lesion"][i] = vert, lesion
        masks["bodies"][i], masks["discs"][i] = bodies, discs
