"""One phantom case in memory: :func:`render_case` -> :class:`PhantomCase`.

Slice order: index 0 is the slice with the largest patient x (patient left), exactly the order
:func:`spinefx.runtime.load_series` returns for ImageOrientationPatient [0,1,0,0,0,-1]
(ascending along the normal cross(row, col) = (-1, 0, 0)). Rows run superior -> inferior,
columns anterior -> posterior.

Random streams: one per aspect (features, acquisition, spine, lesion, physics, noise,
confounders, artefacts, textures), so a forced feature leaves the rest of the case as the seed
would draw it. With ``patient_seed`` the patient's own streams (acquisition, spine, physics)
come from it, the rest from ``seed``: several cases of one patient share one spine and protocol.
Only :func:`~spinefx.phantom.appearance.draw_features` ever sees the label and difficulty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spinefx.runtime.features import FEATURE_KEYS
from spinefx.runtime.volume import Volume

from .anatomy import Canvas, Grid, render_slice
from .appearance import LABELS, draw_features
from .artefacts import Artefacts, draw_artefacts
from .confounders import Confounders, draw_confounders, paint_confounders
from .fields import DetailLattices, lattice, upsample
from .lesion import Lesion, apply_fracture, draw_lesion, paint_lesion
from .physics import (
    T2_OTHER_GRID_P,
    T2_SCALES,
    Acquisition,
    Background,
    CasePhysics,
    SlabMasks,
    Textures,
    acquire,
    bias_field,
    block_mean,
    draw_acquisition,
    draw_physics,
    gather,
    hi_signal,
    modulation,
    scatter,
)
from .spine import LEVEL_NAMES, SpineSpec, draw_spine

__all__ = ["T2_OTHER_GRID_P", "T2_SCALES", "PhantomCase", "case_volumes", "render_case"]
SETTINGS = ("level", "n_slices", "t2_scale", "t1_variant", "t2_variant")  # non-feature overrides
MASK_KEYS = ("lesion", "vertebra", "bodies", "discs")
N_STREAMS = 9


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
    variation: float = 1.0
    patient_seed: int | None = None
    t1_variant: str = "T1"         # "T1" (fatty marrow) or "T1_RED" (red marrow)
    t2_variant: str = "T2"         # "T2", "T2_FS" or "STIR"
    artefacts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per series
    sub_slices: int = 1            # sub-slices averaged across the thickness
    spine: SpineSpec | None = field(default=None, repr=False)
    all_masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

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
        ``lesion``, ``vertebra`` (the fractured body), ``bodies`` (vertebral bodies incl.
        cortex, no posterior elements) and ``discs`` (label maps, see :attr:`level_names`).
        A pixel belongs where at least half of its volume (sub-pixels x sub-slices) does."""
        if series not in ("t1", "t2"):
            raise ValueError(f"series must be 't1' or 't2', got {series!r}")
        return dict(self.all_masks[series])

    @property
    def t2_same_grid(self) -> bool:
        return self.t2.shape == self.t1.shape and self.t2_pixel_spacing == self.pixel_spacing

    def image_position(self, index: int, series: str = "t1") -> tuple[float, float, float]:
        """ImagePositionPatient (centre of pixel (0, 0)) of slice ``index``."""
        ps = (self.pixel_spacing if series == "t1" else self.t2_pixel_spacing)[0]
        y = self.corner[0] + ps / 2   # +y: columns run posterior
        z = self.corner[1] - ps / 2   # -z: rows run inferior
        return (float(self.slice_x[index]), float(y), float(z))


def render_case(seed: int, label: str, difficulty: float = 1.0, variation: float = 1.0,
                patient_seed: int | None = None, **overrides) -> PhantomCase:
    """Render one case in memory (about 0.2-0.5 s).

    ``variation`` in [0, 1]: 0 = the nominal v1 look (plain T2 TSE, bright-marrow T1, no
    artefacts, 256 px at 1.1-1.4 mm, 3-4 mm slices), 1 = full randomisation of contrast,
    resolution, noise and artefacts; in between the ranges interpolate. ``patient_seed``: see
    the module docstring. ``overrides``: any feature key forced to 0/1 (see
    :mod:`spinefx.phantom.appearance`), and ``level`` (e.g. "L1"), ``n_slices`` (5-40),
    ``t2_scale`` (1.0 = T2 on the T1 grid), ``t1_variant`` ("T1" / "T1_RED") or ``t2_variant``
    ("T2" / "T2_FS" / "STIR"; e.g. "T2" for a study that ``spinefx predict`` pairs without
    ``--t2``: a STIR is not a T2W series to it).
    """
    _check_request(label, overrides)
    variation = _check_variation(variation)
    streams = [np.random.default_rng(s)
               for s in np.random.SeedSequence(int(seed)).spawn(N_STREAMS)]
    if patient_seed is not None:
        if isinstance(patient_seed, bool) or not isinstance(patient_seed, (int, np.integer)):
            raise TypeError(f"patient_seed must be an int or None, got {patient_seed!r}")
        own = [np.random.default_rng(s)
               for s in np.random.SeedSequence(int(patient_seed)).spawn(N_STREAMS)]
        for i in (1, 2, 4):  # acquisition, spine, physics: the patient's
            streams[i] = own[i]
    r_feat, r_acq, r_spine, r_lesion, r_phys, r_noise, r_conf, r_art, r_tex = streams
    flags = draw_features(r_feat, label, difficulty,
                          {k: v for k, v in overrides.items() if k in FEATURE_KEYS})
    acq = draw_acquisition(r_acq, variation, overrides)
    lesion = draw_lesion(r_lesion, flags, acq.level)
    grid = Grid(acq.matrix, acq.matrix, acq.ps)
    scene = _draw_scene(acq, grid, lesion, r_spine, r_phys, r_noise, variation,
                        (overrides.get("t1_variant"), overrides.get("t2_variant")))
    scene.confounders = draw_confounders(r_conf, scene.spec, lesion, variation)
    scene.artefacts = {s: draw_artefacts(r_art, variation) for s in ("t1", "t2")}
    scene.detail = DetailLattices(r_tex, grid.fov)
    grids = _grids(grid, acq.t2_scale)
    out, masks = _render(scene, grids, LEVEL_NAMES.index(acq.level))

    t1_masks = masks["t1"]
    box = _box(t1_masks["vertebra"][acq.centre])
    t2_ps = grids.get("t2", grid).spacing
    return PhantomCase(
        seed=int(seed), label=label, difficulty=float(difficulty), t1=out["t1"], t2=out["t2"],
        lesion_mask=t1_masks["lesion"], vertebra_mask=t1_masks["vertebra"],
        slice=int(acq.centre), box=box, level=acq.level, features=flags,
        pixel_spacing=(acq.ps, acq.ps), t2_pixel_spacing=(t2_ps, t2_ps),
        slice_thickness=acq.thickness, spacing_between_slices=round(acq.sbs, 4),
        slice_x=(acq.x_mid + scene.x_spine).astype(np.float64),
        corner=(-grid.fov[1] * acq.corner_y, acq.corner_z), lesion=lesion,
        variation=variation, patient_seed=None if patient_seed is None else int(patient_seed),
        t1_variant=scene.phys.t1.variant, t2_variant=scene.phys.t2.variant,
        artefacts={s: a.names() for s, a in scene.artefacts.items()}, sub_slices=acq.n_sub,
        spine=scene.spec, all_masks=masks)


def _check_request(label: str, overrides: dict) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be 'benign' or 'malignant', got {label!r}")
    unknown = set(overrides) - set(FEATURE_KEYS) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; "
                        f"allowed: feature keys and {SETTINGS}")


def _check_variation(variation: float) -> float:
    try:
        v = float(variation)
    except (TypeError, ValueError):
        raise ValueError(f"variation must be a number in [0, 1], got {variation!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"variation must be a number in [0, 1], got {variation!r}")
    return v


@dataclass
class _Scene:
    """Everything the slices are rendered from, shared by the T1 and T2 grids."""
    spec: SpineSpec
    lesion: Lesion
    phys: CasePhysics
    acq: Acquisition
    x_spine: np.ndarray     # LR position (mm, spine frame) of each slice, loaded order
    mottle: np.ndarray      # coarse lattices: background pattern, marrow texture
    shared: np.ndarray      # (common to all slices)
    own: list[np.ndarray]   # (one per slice)
    back: float             # AP position of the back's skin, for the coil bias
    rng: np.random.Generator  # acquisition noise (the texture stream, after its lattices)
    confounders: Confounders = field(default_factory=Confounders)
    artefacts: dict[str, Artefacts] = field(default_factory=dict)
    detail: DetailLattices | None = None


def _draw_scene(acq: Acquisition, grid: Grid, lesion: Lesion, r_spine: np.random.Generator,
                r_phys: np.random.Generator, r_noise: np.random.Generator,
                variation: float, variants: tuple[str | None, str | None] = (None, None)
                ) -> _Scene:
    """The fractured spine, the slice positions, the tissue physics and the texture lattices."""
    level, n, sbs = acq.level, acq.n, acq.sbs
    spec = draw_spine(r_spine, grid.fov, level, shorten={level: lesion.posterior_loss},
                      variation=variation)
    apply_fracture(spec.levels, lesion)
    x_spine = (lesion.x_c + acq.slice_jitter * sbs
               + (acq.centre - np.arange(n)) * sbs)  # LR in spine frame
    phys = draw_physics(r_phys, lesion.t1_ratio, lesion.t2_ratio, lesion.bright_t2, variation,
                        variants)
    mottle = lattice(r_noise, grid.fov, 5.0)
    shared = lattice(r_noise, grid.fov, 3.0)
    own = [lattice(r_noise, grid.fov, 3.0) for _ in range(n)]
    back = float(np.interp(grid.fov[0] / 2, spec.curve_s, spec.curve_a)) + 75 + spec.fat_back
    return _Scene(spec=spec, lesion=lesion, phys=phys, acq=acq, x_spine=x_spine, mottle=mottle,
                  shared=shared, own=own, back=back, rng=r_noise)


def _grids(grid: Grid, t2_scale: float) -> dict[str, Grid]:
    """The T1 grid, plus T2's own grid (same FOV) when its pixel spacing differs."""
    grids = {"t1": grid}
    if t2_scale != 1.0:
        m2 = int(round(grid.rows / t2_scale))
        grids["t2"] = Grid(m2, m2, round(grid.fov[0] / m2, 6))
    return grids


def _render(scene: _Scene, grids: dict[str, Grid], level: int
            ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Both series and every mask on each series' grid."""
    out: dict[str, np.ndarray] = {}
    masks: dict[str, dict[str, np.ndarray]] = {}
    for name, g in grids.items():
        series = ("t1", "t2") if name == "t1" and "t2" not in grids else (name,)
        vols, grid_masks = _render_grid(scene, g, series, level)
        out.update(vols)
        for s in series:
            masks[s] = grid_masks
    return out, masks


def _render_grid(scene: _Scene, g: Grid, series: tuple[str, ...], level: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Render ``series`` (sharing ``g``) slice by slice, each slice the mean of its sub-slices'
    clean signal; the masks of the grid alongside."""
    cv = Canvas(scene.spec, g, scene.mottle)
    bias = bias_field((g.rows, g.cols), g.spacing, scene.back, scene.phys.bias)
    assert scene.detail is not None
    detail, fibre = scene.detail.fields(cv.shape)
    phys = {s: scene.phys.t1 if s == "t1" else scene.phys.t2 for s in series}
    background = {s: Background(cv.background, phys[s], detail, fibre) for s in series}
    n, offsets, lesion = len(scene.x_spine), scene.acq.sub_offsets, scene.lesion
    vols = {s: np.empty((n, g.rows, g.cols), np.float32) for s in series}
    masks = {k: np.zeros((n, g.rows, g.cols), np.uint8) for k in MASK_KEYS}
    detail_strip, fibre_strip = gather(cv, detail), gather(cv, fibre)
    for i, x in enumerate(scene.x_spine):
        coarse = upsample(0.6 * scene.shared + 0.8 * scene.own[i], cv.shape)
        tex = Textures(gather(cv, coarse), detail_strip, fibre_strip)
        strips = {s: np.zeros(cv.u.shape, np.float32) for s in series}
        acc = SlabMasks(cv, level)
        for dx in offsets:
            xs = float(x + dx)
            strip, geo = render_slice(cv, xs)
            vert = paint_lesion(strip, cv, geo, lesion)
            paint_confounders(strip, cv, geo, scene.confounders)
            mod = modulation(strip, phys[series[0]], tex)
            for s in series:
                strips[s] += hi_signal(strip, phys[s], mod, lesion.strength(xs))
            acc.add(strip, vert, geo)
        for s in series:
            hi = background[s].signal(coarse)
            scatter(cv, hi, strips[s] / len(offsets))
            vols[s][i] = acquire(block_mean(hi), phys[s], bias, scene.rng, scene.artefacts[s])
        acc.finish(masks, i, len(offsets))
    return vols, masks


_SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))  # row, column directions (ImageOrientationPatient)


def case_volumes(case: PhantomCase) -> tuple[Volume, Volume]:
    """The case's T1 and T2 as runtime :class:`~spinefx.runtime.Volume` objects, no files written.

    The same pixels and geometry :func:`~spinefx.phantom.write_case_dicom` stores and
    :func:`spinefx.runtime.load_series` reads back (positions and spacings rounded to the six
    decimals the DICOM decimal strings keep; a STIR T2 is weighted "STIR" as its header says), so
    either way a model gets the same input; only the DICOM-specific extras (UIDs, file names,
    TR/TE) are missing.
    """
    def ds(value: float) -> float:  # what a 6-decimal DICOM DS holds
        return float(f"{value:.6f}")

    out = []
    for series, data, spacing in (("t1", case.t1, case.pixel_spacing),
                                  ("t2", case.t2, case.t2_pixel_spacing)):
        positions = [[ds(v) for v in case.image_position(i, series)] for i in range(len(data))]
        weighting = "STIR" if series == "t2" and case.t2_variant == "STIR" else series.upper()
        out.append(Volume(data=data, pixel_spacing=(ds(spacing[0]), ds(spacing[1])),
                          # Volume converts these to float64 arrays itself; done here for
                          # its annotations (same values)
                          positions=np.asarray(positions, dtype=np.float64),
                          row_direction=np.asarray(_SAGITTAL[0], dtype=np.float64),
                          column_direction=np.asarray(_SAGITTAL[1], dtype=np.float64),
                          weighting=weighting,
                          description=f"SYNTHETIC phantom {weighting} (in memory)",
                          source=f"phantom seed {case.seed} (in memory)"))
    return out[0], out[1]


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        raise RuntimeError("phantom bug: the fractured body is missing on the lesion slice")
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
