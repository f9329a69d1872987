"""One phantom case in memory: :func:`render_case` -> :class:`PhantomCase`.

Slice order: index 0 is the slice with the largest patient x (patient left), exactly the order
:func:`spinefx.runtime.load_series` returns for ImageOrientationPatient [0,1,0,0,0,-1]
(ascending along the normal cross(row, col) = (-1, 0, 0)). Rows run superior -> inferior,
columns anterior -> posterior.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinefx.runtime.features import FEATURE_KEYS
from spinefx.runtime.volume import Volume

from .anatomy import Canvas, Grid, render_slice
from .appearance import LABELS, draw_features
from .confounders import Confounders, draw_confounders, paint_confounders
from .fields import lattice, upsample
from .lesion import Lesion, apply_fracture, draw_lesion, draw_level, paint_lesion
from .physics import CasePhysics, acquire, bias_field, clean_signal, downsample_mask, draw_physics
from .spine import LESION_LEVELS, LEVEL_NAMES, SpineSpec, draw_spine
from .tissues import LESION_MARROW, member_lut

LESION_LUT = member_lut(LESION_MARROW)


def _NO_MASK(cv) -> np.ndarray:  # noqa: N802
    return np.zeros(cv.shape, dtype=bool)


MATRIX = 256
T2_SCALES = (0.9, 1.2)   # T2 pixel spacing / T1 pixel spacing when the grids differ
T2_OTHER_GRID_P = 0.3    # share of cases whose T2 has its own in-plane grid
SETTINGS = ("level", "n_slices", "t2_scale")  # non-feature overrides


@dataclass
class PhantomCase:
    seed: int
    label: str
    difficulty: float
    t1: np.ndarray                 # (n_slices, rows, cols) float32, integer values 0..4095
    t2: np.ndarray                 # same slices; own in-plane grid if t2_pixel_spacing differs
    lesion_mask: np.ndarray        # uint8 on the T1 grid: abnormal marrow of the fractured body
    vertebra_mask: np.ndarray      # uint8 on the T1 grid: the fractured body (incl. fragment)
    slice: int                     # lesion centre slice (loaded order)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (T1 pixels, x1/y1 exclusive) on `slice`
    level: str
    features: dict[str, int]
    pixel_spacing: tuple[float, float]      # T1 (row, col) mm
    t2_pixel_spacing: tuple[float, float]
    slice_thickness: float
    spacing_between_slices: float
    slice_x: np.ndarray            # patient x (mm, LPS) of each slice centre, loaded order
    corner: tuple[float, float]    # patient (y, z) of the FOV's anterior-superior pixel edge
    lesion: Lesion | None = field(default=None, repr=False)

    @property
    def n_slices(self) -> int:
        return int(self.t1.shape[0])

    @property
    def level_names(self) -> tuple[str, ...]:
        """Names of the levels the ``bodies`` / ``discs`` label maps count (value i + 1 =
        ``level_names[i]``; a disc is numbered after the body above it)."""
        return LEVEL_NAMES

    def masks(self, series: str = "t1") -> dict[str, np.ndarray]:
        """Every mask of the case on one series' grid (uint8, (slices, rows, cols)):
        ``lesion``, ``vertebra`` (the fractured body), ``bodies`` and ``discs`` (label maps,
        see :attr:`level_names`). CONTRACT STUB: bodies/discs are filled in by the v2 renderer."""
        if series not in ("t1", "t2"):
            raise ValueError(f"series must be 't1' or 't2', got {series!r}")
        level = LEVEL_NAMES.index(self.level) + 1
        bodies = (self.vertebra_mask * level).astype(np.uint8)
        return {"lesion": self.lesion_mask, "vertebra": self.vertebra_mask, "bodies": bodies,
                "discs": np.zeros_like(bodies)}

    @property
    def t2_same_grid(self) -> bool:
        return self.t2.shape == self.t1.shape and self.t2_pixel_spacing == self.pixel_spacing

    def image_position(self, index: int, series: str = "t1") -> tuple[float, float, float]:
        """ImagePositionPatient (centre of pixel (0, 0)) of slice ``index``."""
        ps = (self.pixel_spacing if series == "t1" else self.t2_pixel_spacing)[0]
        y = self.corner[0] + ps / 2   # +y: columns run posterior
        z = self.corner[1] - ps / 2   # -z: rows run inferior
        return (float(self.slice_x[index]), float(y), float(z))


def render_case(seed: int, label: str, difficulty: float = 1.0, **overrides) -> PhantomCase:
    """Render one case in memory (about 0.1 s).

    ``overrides``: any feature key forced to 0/1 (see
    :mod:`spinefx.phantom.appearance` for the consistency rules), and ``level`` (e.g. "L1"),
    ``n_slices`` (12-16) or ``t2_scale`` (1.0 = T2 on the T1 grid). Independent random streams
    per aspect mean a forced feature leaves the rest of the case as the seed would draw it.
    """
    _check_request(label, overrides)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(7)]
    r_feat, r_acq, r_spine, r_lesion, r_phys, r_noise, r_conf = streams
    flags = draw_features(r_feat, label, difficulty,
                          {k: v for k, v in overrides.items() if k in FEATURE_KEYS})
    acq = _draw_acquisition(r_acq, overrides)
    lesion = draw_lesion(r_lesion, flags, acq.level)
    grid = Grid(MATRIX, MATRIX, acq.ps)
    scene = _draw_scene(acq, grid, lesion, r_spine, r_phys, r_noise)
    scene.confounders = draw_confounders(r_conf, scene.spec, lesion)
    grids = _grids(grid, acq.t2_scale)
    out, lesion_mask, vertebra_mask = _render(scene, grids)

    box = _box(vertebra_mask[acq.centre])
    t2_ps = grids.get("t2", grid).spacing
    return PhantomCase(
        seed=int(seed), label=label, difficulty=float(difficulty), t1=out["t1"], t2=out["t2"],
        lesion_mask=lesion_mask, vertebra_mask=vertebra_mask, slice=int(acq.centre), box=box,
        level=acq.level, features=flags, pixel_spacing=(acq.ps, acq.ps),
        t2_pixel_spacing=(t2_ps, t2_ps), slice_thickness=acq.thickness,
        spacing_between_slices=round(acq.sbs, 4),
        slice_x=(acq.x_mid + scene.x_spine).astype(np.float64),
        corner=(-grid.fov[1] * acq.corner_y, acq.corner_z), lesion=lesion)


def _check_request(label: str, overrides: dict) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be 'benign' or 'malignant', got {label!r}")
    unknown = set(overrides) - set(FEATURE_KEYS) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; "
                        f"allowed: feature keys and {SETTINGS}")


@dataclass(frozen=True)
class _Acquisition:
    """Slices, spacing, grid and patient position of one case."""
    level: str
    n: int                  # number of slices
    thickness: float        # slice thickness, mm
    gap: float              # mm between slices
    ps: float               # T1 pixel spacing, mm
    t2_scale: float         # T2 pixel spacing / T1 pixel spacing
    centre_offset: int      # lesion centre slice relative to the middle slice
    slice_jitter: float     # lesion centre's offset from its slice, in slice spacings
    x_mid: float            # patient x of the spine's midline, mm
    corner_y: float         # FOV corner position (share of the FOV / patient z, mm)
    corner_z: float

    @property
    def sbs(self) -> float:
        """Spacing between slice centres, mm."""
        return self.thickness + self.gap

    @property
    def centre(self) -> int:
        """Index of the lesion centre slice."""
        return self.n // 2 + self.centre_offset


def _draw_acquisition(rng: np.random.Generator, overrides: dict) -> _Acquisition:
    """Draw every acquisition parameter (always all of them, in this order), then apply the
    ``level`` / ``n_slices`` / ``t2_scale`` overrides."""
    level = draw_level(rng)
    n = int(rng.integers(12, 17))
    thickness = round(float(rng.uniform(3.0, 4.0)), 1)
    gap = round(float(rng.uniform(0.3, 0.8)), 1)
    ps = round(float(rng.uniform(1.1, 1.4)), 4)
    t2_scale = float(rng.choice(T2_SCALES)) if rng.random() < T2_OTHER_GRID_P else 1.0
    centre_offset = int(rng.integers(-1, 2))
    slice_jitter = float(rng.uniform(-0.3, 0.3))
    x_mid = float(rng.uniform(-3, 3))
    corner_y = float(rng.uniform(0.5, 0.6))
    corner_z = float(rng.uniform(50, 250))
    level = overrides.get("level", level)
    if level not in LESION_LEVELS:
        raise ValueError(f"level must be one of {list(LESION_LEVELS)}, got {level!r}")
    n = int(overrides.get("n_slices", n))
    if not 5 <= n <= 40:
        raise ValueError(f"n_slices must be within 5..40, got {n}")
    t2_scale = float(overrides.get("t2_scale", t2_scale))
    return _Acquisition(level=level, n=n, thickness=thickness, gap=gap, ps=ps,
                        t2_scale=t2_scale, centre_offset=centre_offset,
                        slice_jitter=slice_jitter, x_mid=x_mid, corner_y=corner_y,
                        corner_z=corner_z)


@dataclass
class _Scene:
    """Everything the slices are rendered from, shared by the T1 and T2 grids."""
    spec: SpineSpec
    lesion: Lesion
    phys: CasePhysics
    x_spine: np.ndarray     # LR position (mm, spine frame) of each slice, loaded order
    mottle: np.ndarray      # coarse lattices: background pattern, marrow texture
    shared: np.ndarray      # (common to all slices)
    own: list[np.ndarray]   # (one per slice)
    back: float             # AP position of the back's skin, for the coil bias
    rng: np.random.Generator  # acquisition noise (the texture stream, after its lattices)
    confounders: Confounders = field(default_factory=Confounders)


def _draw_scene(acq: _Acquisition, grid: Grid, lesion: Lesion, r_spine: np.random.Generator,
                r_phys: np.random.Generator, r_noise: np.random.Generator) -> _Scene:
    """The fractured spine, the slice positions, the tissue physics and the texture lattices."""
    level, n, sbs = acq.level, acq.n, acq.sbs
    spec = draw_spine(r_spine, grid.fov, level, shorten={level: lesion.posterior_loss})
    apply_fracture(spec.levels, lesion)
    x_spine = (lesion.x_c + acq.slice_jitter * sbs
               + (acq.centre - np.arange(n)) * sbs)  # LR in spine frame
    phys = draw_physics(r_phys, lesion.t1_ratio, lesion.t2_ratio, lesion.bright_t2)
    mottle = lattice(r_noise, grid.fov, 5.0)
    shared = lattice(r_noise, grid.fov, 3.0)
    own = [lattice(r_noise, grid.fov, 3.0) for _ in range(n)]
    back = float(np.interp(grid.fov[0] / 2, spec.curve_s, spec.curve_a)) + 75 + spec.fat_back
    return _Scene(spec=spec, lesion=lesion, phys=phys, x_spine=x_spine, mottle=mottle,
                  shared=shared, own=own, back=back, rng=r_noise)


def _grids(grid: Grid, t2_scale: float) -> dict[str, Grid]:
    """The T1 grid, plus T2's own grid (same FOV) when its pixel spacing differs."""
    grids = {"t1": grid}
    if t2_scale != 1.0:
        m2 = int(round(MATRIX / t2_scale))
        grids["t2"] = Grid(m2, m2, round(grid.fov[0] / m2, 6))
    return grids


def _render(scene: _Scene, grids: dict[str, Grid]
            ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Both series and, on the T1 grid, the lesion and vertebra masks."""
    n = len(scene.x_spine)
    out: dict[str, np.ndarray] = {}
    masks = (np.zeros((n, MATRIX, MATRIX), np.uint8), np.zeros((n, MATRIX, MATRIX), np.uint8))
    for name, g in grids.items():
        series = ("t1", "t2") if name == "t1" and "t2" not in grids else (name,)
        out.update(_render_grid(scene, g, series, masks if name == "t1" else None))
    lesion_mask, vertebra_mask = masks
    lesion_mask &= vertebra_mask
    return out, lesion_mask, vertebra_mask


def _render_grid(scene: _Scene, g: Grid, series: tuple[str, ...],
                 masks: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Render ``series`` (sharing ``g``) slice by slice; fill ``masks`` (lesion, vertebra)
    unless None."""
    cv = Canvas(scene.spec, g, scene.mottle)
    bias = bias_field((g.rows, g.cols), g.spacing, scene.back, scene.phys.bias)
    vols = {s: np.empty((len(scene.x_spine), g.rows, g.cols), np.float32) for s in series}
    for i, x in enumerate(scene.x_spine):
        strip, geo = render_slice(cv, float(x))
        vert = cv.to_image(paint_lesion(strip, cv, geo, scene.lesion), _NO_MASK(cv))
        paint_confounders(strip, cv, geo, scene.confounders)
        labels = cv.to_image(strip)
        tex = upsample(0.6 * scene.shared + 0.8 * scene.own[i], cv.shape)
        for s in series:
            sp = scene.phys.t1 if s == "t1" else scene.phys.t2
            clean = clean_signal(labels, sp, tex, scene.lesion.strength(float(x)))
            vols[s][i] = acquire(clean, sp, bias, scene.rng)
        if masks is not None:
            masks[1][i] = downsample_mask(vert)
            masks[0][i] = downsample_mask(LESION_LUT[labels] & vert)
    return vols


_SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))  # row, column directions (ImageOrientationPatient)


def case_volumes(case: PhantomCase) -> tuple[Volume, Volume]:
    """The case's T1 and T2 as runtime :class:`~spinefx.runtime.Volume` objects, no files written.

    The same pixels and geometry :func:`~spinefx.phantom.write_case_dicom` stores and
    :func:`spinefx.runtime.load_series` reads back (positions and spacings rounded to the six
    decimals the DICOM decimal strings keep), so either way a model gets the same input; only the
    DICOM-specific extras (UIDs, file names, TR/TE) are missing.
    """
    def ds(value: float) -> float:  # what a 6-decimal DICOM DS holds
        return float(f"{value:.6f}")

    out = []
    for series, data, spacing in (("t1", case.t1, case.pixel_spacing),
                                  ("t2", case.t2, case.t2_pixel_spacing)):
        positions = [[ds(v) for v in case.image_position(i, series)] for i in range(len(data))]
        out.append(Volume(data=data, pixel_spacing=(ds(spacing[0]), ds(spacing[1])),
                          # Volume converts these to float64 arrays itself; done here for
                          # its annotations (same values)
                          positions=np.asarray(positions, dtype=np.float64),
                          row_direction=np.asarray(_SAGITTAL[0], dtype=np.float64),
                          column_direction=np.asarray(_SAGITTAL[1], dtype=np.float64),
                          weighting=series.upper(),
                          description=f"SYNTHETIC phantom {series.upper()} (in memory)",
                          source=f"phantom seed {case.seed} (in memory)"))
    return out[0], out[1]


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        raise RuntimeError("phantom bug: the fractured body is missing on the lesion slice")
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)

