"""Geometry of one phantom spine: level sizes, curve, canal and soft-tissue envelope.

Coordinates (all mm):

- image plane: ``s`` = distance below the top edge of the field of view (row direction of the
  picture, patient inferior), ``a`` = distance from the anterior (left) edge (patient
  posterior);
- spine frame: ``u`` = arc length along the spinal curve (inferior), ``v`` = distance from the
  curve, perpendicular to it (posterior positive); the curve runs through the centres of the
  vertebral bodies;
- ``x`` = left-right distance from the spine's mid-sagittal plane (patient left positive);
  every sagittal slice has one constant ``x``.

Everything here is drawn from a random generator before any pixel exists, so one spec can be
rendered on several grids (the T1 grid and a different T2 grid) and give the same anatomy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .real_anatomy import LUMBAR, RealShape, draw_real_shape

# name: body height, disc height below, AP depth, half-width (LR), canal AP, pedicle centre |x|,
#       pedicle half-width, spinous process length, spinous slope (du/dv: thoracic ones point down)
LEVEL_TABLE: dict[str, tuple[float, ...]] = {
    "T1": (15.0, 3.5, 17.0, 13.0, 14.0, 10.0, 3.0, 40.0, 0.6),
    "T2": (16.0, 3.5, 19.0, 13.0, 13.5, 9.5, 2.8, 40.0, 0.85),
    "T3": (17.0, 4.0, 22.0, 13.0, 13.5, 9.5, 2.8, 40.0, 0.9),
    "T4": (17.5, 4.0, 23.0, 13.5, 13.5, 9.5, 2.8, 40.0, 0.9),
    "T5": (18.5, 4.5, 24.5, 14.0, 13.5, 10.0, 2.9, 39.0, 0.9),
    "T6": (19.0, 4.5, 26.0, 15.0, 14.0, 10.5, 3.0, 38.0, 0.9),
    "T7": (19.5, 4.5, 26.5, 15.5, 14.0, 10.5, 3.0, 38.0, 0.9),
    "T8": (20.0, 5.0, 27.0, 16.0, 14.0, 10.5, 3.2, 38.0, 0.85),
    "T9": (21.0, 5.0, 28.0, 17.0, 14.0, 11.0, 3.4, 36.0, 0.8),
    "T10": (22.0, 5.5, 29.0, 18.0, 14.5, 11.0, 3.6, 34.0, 0.7),
    "T11": (23.0, 6.0, 30.0, 19.0, 15.0, 11.5, 3.8, 32.0, 0.5),
    "T12": (24.0, 7.0, 31.0, 20.0, 15.5, 12.0, 4.0, 31.0, 0.35),
    "L1": (25.5, 8.0, 32.0, 21.0, 16.0, 12.5, 4.2, 30.0, 0.2),
    "L2": (26.5, 9.0, 33.0, 22.0, 16.5, 13.0, 4.5, 30.0, 0.15),
    "L3": (27.0, 10.0, 34.0, 23.0, 17.0, 13.5, 4.8, 30.0, 0.1),
    "L4": (27.0, 10.0, 35.0, 24.0, 17.0, 14.0, 5.0, 28.0, 0.1),
    "L5": (26.0, 9.0, 35.0, 25.0, 17.5, 15.0, 5.5, 24.0, 0.1),
    "S1": (24.0, 1.5, 33.0, 24.0, 16.0, 15.0, 5.5, 18.0, 0.2),
    "S2": (19.0, 1.5, 28.0, 20.0, 14.0, 14.0, 5.0, 14.0, 0.3),
    "S3": (16.0, 1.5, 24.0, 16.0, 12.0, 12.0, 4.0, 10.0, 0.4),
}
LEVEL_NAMES: tuple[str, ...] = tuple(LEVEL_TABLE)
# Where the fracture sits, with how often (thoraco-lumbar junction most common).
LESION_LEVELS: dict[str, float] = {"T11": 0.12, "T12": 0.20, "L1": 0.25, "L2": 0.18,
                                   "L3": 0.15, "L4": 0.10}

# --- per-case variation (all drawn without the label: draw_spine never sees it) ----------
# Share of cases whose lumbar proportions and curvature come from a real subject when the real
# volumes are present (spinefx.phantom.real_anatomy); the rest are procedural. A drawn subject
# whose masks fail the plausibility check (today: DzZ, 1 of 55) also leaves the case procedural.
REAL_SHAPE_SHARE = 0.6
# Degenerate (desiccated, dark-nucleus) disc below each level, by level; others get the default.
DEGENERATE_RATES: dict[str, float] = {"L2": 0.15, "L3": 0.25, "L4": 0.5, "L5": 0.5}
DEGENERATE_RATE_OTHER = 0.1   # thoracic and T12/L1 discs; sacral levels have no disc (0)
NARROWING = (0.15, 0.5)       # share of a degenerate disc's height it loses
# Posture: angle change along the curve, degrees (lordosis: L1 to L5 body centres; kyphosis:
# T1 to T12) and the whole spine's tilt at the thoraco-lumbar junction (rad, + = posterior).
LORDOSIS_DEG = (0.0, 50.0)    # flat back .. hyperlordotic
KYPHOSIS_DEG = (10.0, 60.0)
TILT_RAD = (-0.4, 0.05)
# Physiological wedge (deg, + = anterior height smaller): thoracic bodies are wedged
# anteriorly, L5 posteriorly; drawn per case as base * (0.5..1.5) + noise.
WEDGE_DEG: dict[str, float] = {**{f"T{i}": 4.0 for i in range(1, 11)}, "T11": 3.0, "T12": 3.0,
                               "L1": 2.0, "L2": 1.0, "L3": 0.0, "L4": -1.5, "L5": -4.0}
CONCAVITY_MM = {"T": (0.3, 1.0), "L": (0.4, 1.8), "S": (0.2, 0.6)}  # endplate dip, by region
WAIST_MM = (0.3, 1.8)         # anterior wall concavity (lumbar; thoracic x0.6)
CORNER_MM = (1.6, 3.4)        # body corner rounding, per case; x(0.8..1.2) per level


@dataclass
class Levels:
    """Per-level arrays (index = level, superior to inferior)."""
    names: tuple[str, ...]
    u_top: np.ndarray
    u_bot: np.ndarray
    disc: np.ndarray        # disc height below the level
    depth: np.ndarray       # AP depth D; the body spans v in [-D/2, D/2] at x = 0
    half_width: np.ndarray
    canal_ap: np.ndarray
    ped_x: np.ndarray
    ped_hw: np.ndarray
    sp_len: np.ndarray
    sp_slope: np.ndarray
    sacral: np.ndarray      # bool: fused sacrum, no posterior elements drawn
    degenerate: np.ndarray  # bool: the disc below has a dark (desiccated) nucleus
    # normal body shape (mm), painted by anatomy.Canvas; u_top..u_bot is the taller wall:
    # phys_wedge > 0 lowers the anterior ends of both endplates by half of it each, < 0 the
    # posterior ends; concavity is the central endplate dip, waist the anterior wall's
    # concavity, corner the rounding radius. Empty = the v1 defaults (0, 0.6, 0, 2.5).
    phys_wedge: np.ndarray = field(default_factory=lambda: np.zeros(0))
    concavity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    waist: np.ndarray = field(default_factory=lambda: np.zeros(0))
    corner: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # deformation: extra depression of each endplate (mm) at the anterior wall (wedge) and in
    # the middle (biconcave), and bulge of the posterior wall into the canal; zero for every
    # level at construction, set in place by lesion.apply_fracture
    wedge_top: np.ndarray = field(init=False)
    wedge_bot: np.ndarray = field(init=False)
    concave_top: np.ndarray = field(init=False)
    concave_bot: np.ndarray = field(init=False)
    bulge: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        for name in ("wedge_top", "wedge_bot", "concave_top", "concave_bot", "bulge"):
            setattr(self, name, np.zeros(n))
        for name, default in (("phys_wedge", 0.0), ("concavity", 0.6), ("waist", 0.0),
                              ("corner", 2.5)):
            if len(getattr(self, name)) == 0:
                setattr(self, name, np.full(n, default))

    @property
    def height(self) -> np.ndarray:
        return self.u_bot - self.u_top

    @property
    def u_mid(self) -> np.ndarray:
        return (self.u_top + self.u_bot) / 2

    def index(self, name: str) -> int:
        return self.names.index(name)


@dataclass
class SpineSpec:
    fov: tuple[float, float]          # (s extent, a extent) of the field of view, mm
    levels: Levels
    curve_u: np.ndarray               # fine arc-length samples ...
    curve_s: np.ndarray               # ... and the curve's image position at each
    curve_a: np.ndarray
    curve_theta: np.ndarray           # tangent angle (0 = straight down, + = tilting posterior)
    body_s: np.ndarray                # same curve without the sacral bend (soft tissues)
    body_a: np.ndarray
    cord_hw: float                    # half-width of the cord
    conus_u: float                    # where the cord ends (conus medullaris)
    prevertebral_fat: float
    abdomen_depth: float              # body-centre to anterior skin
    fat_front: float
    fat_back: float
    muscle_back: float                # factor on spinous length: where posterior muscle ends
    diaphragm_u: float
    aorta: tuple[float, float]        # (x, radius)
    ivc: tuple[float, float]
    fat_wave: np.ndarray = field(repr=False)  # 8 phases of the soft-tissue thickness waves
    real_subject: str | None = None   # the real subject the lumbar shape came from, if any
    lordosis_deg: float = 0.0         # drawn angle change L1 -> L5 along the curve
    kyphosis_deg: float = 0.0         # drawn angle change T1 -> T12

    # --- curve look-ups for image rows -----------------------------------------------------
    def along(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For image depths ``s``: arc length U(s), curve position a_c(s), tangent angle."""
        u = np.interp(s, self.curve_s, self.curve_u)
        a = np.interp(s, self.curve_s, self.curve_a)
        th = np.interp(s, self.curve_s, self.curve_theta)
        return u, a, th

    def level_value(self, u: np.ndarray, values: np.ndarray) -> np.ndarray:
        """A per-level quantity interpolated smoothly along the spine (canal size etc.)."""
        return np.interp(u, self.levels.u_mid, values)

    def body_line(self, s: np.ndarray) -> np.ndarray:
        """Centre line for the soft-tissue envelope (the curve without the sacral bend)."""
        return np.interp(s, self.body_s, self.body_a)


def _vary(rng: np.random.Generator, lo: float, hi: float, variation: float,
          size: int | None = None) -> np.ndarray:
    """Uniform draw on [lo, hi], pulled towards the middle by ``variation`` (0 = the middle)."""
    mid = (lo + hi) / 2
    return mid + variation * (rng.uniform(lo, hi, size) - mid)


@dataclass
class _Sizes:
    """Per-level dimensions (mm) before stacking; see :class:`Levels`."""
    h: np.ndarray
    disc: np.ndarray
    depth: np.ndarray
    hw: np.ndarray
    wedge: np.ndarray
    concavity: np.ndarray


def _procedural_sizes(rng: np.random.Generator, table: np.ndarray, names: tuple[str, ...],
                      variation: float) -> _Sizes:
    n = len(names)
    size = _vary(rng, 0.88, 1.12, variation)             # overall body size
    tall = size * _vary(rng, 0.94, 1.06, variation)      # height vs depth proportion
    # lumbar vs thoracic proportion: some spines grow more steeply down the levels
    trend = 1 + _vary(rng, -0.08, 0.08, variation) * np.linspace(-1, 1, n)
    h = table[:, 0] * tall * trend * _vary(rng, 0.96, 1.04, variation, n)
    disc = table[:, 1] * tall * _vary(rng, 0.85, 1.15, variation, n)
    depth = table[:, 2] * size * trend * _vary(rng, 0.96, 1.04, variation, n)
    hw = table[:, 3] * size * trend * _vary(rng, 0.96, 1.04, variation, n)
    base = np.array([WEDGE_DEG.get(name, 0.0) for name in names])
    wedge_deg = base * _vary(rng, 0.5, 1.5, variation) + variation * rng.normal(0, 1.0, n)
    wedge = np.clip(depth * np.tan(np.radians(wedge_deg)), -0.25 * h, 0.25 * h)
    lo = np.array([CONCAVITY_MM[name[0]][0] for name in names])
    hi = np.array([CONCAVITY_MM[name[0]][1] for name in names])
    concavity = (lo + hi) / 2 + variation * (rng.random(n) - 0.5) * (hi - lo)
    return _Sizes(h=h, disc=disc, depth=depth, hw=hw, wedge=wedge, concavity=concavity)


def _apply_real(sz: _Sizes, shape: RealShape, names: tuple[str, ...], scale: float) -> None:
    """Lumbar dimensions from the real subject (times ``scale``); the other levels keep their
    procedural profile, rescaled by the mean lumbar real/procedural ratio (extrapolation)."""
    lum = np.array([names.index(name) for name in LUMBAR])
    ant, post = shape.lumbar(shape.height_ant) * scale, shape.lumbar(shape.height_post) * scale
    real = {"h": np.maximum(ant, post), "depth": shape.lumbar(shape.depth) * scale,
            "hw": shape.lumbar(shape.width) * scale / 2}
    for key, values in real.items():
        arr = getattr(sz, key)
        arr *= float(np.mean(values / arr[lum]))
        arr[lum] = values
    gaps = np.array([shape.disc[shape.names.index(name)] for name in LUMBAR[:-1]]) * scale
    ratio = float(np.mean(gaps / sz.disc[lum[:-1]]))
    sz.disc[~np.isin(np.arange(len(names)), lum[:-1])] *= ratio   # L5-S1 and above L1
    sz.disc[lum[:-1]] = gaps
    # clipped to a normal body's range: a stronger measured wedge (mask noise, a tilted body)
    # would look like the wedge fracture the classifier is meant to find
    sz.wedge[lum] = np.clip(post - ant, -0.12 * real["h"], 0.12 * real["h"])
    sz.concavity[lum] = np.clip(shape.lumbar(shape.concavity) * scale, 0.2, 2.5)


def _segment_angles(rng: np.random.Generator, names: tuple[str, ...], variation: float,
                    shape: RealShape | None) -> tuple[np.ndarray, float, float]:
    """Angle change (rad, + = lordotic) from each body centre to the next, and the lordosis /
    kyphosis (deg) they add up to. A real shape gives the lumbar segments (its body tilts);
    the thoracic kyphosis then follows the real lordosis (sagittal balance)."""
    n = len(names)
    lordosis = float(_vary(rng, *LORDOSIS_DEG, variation))
    kyphosis = float(_vary(rng, *KYPHOSIS_DEG, variation))
    irregular = 1 + variation * (rng.uniform(0.8, 1.2, n - 1) - 1)
    thor = np.arange(names.index("T1"), names.index("T12"))          # T1-T2 .. T11-T12
    lum = np.arange(names.index("L1"), names.index("L5"))            # L1-L2 .. L4-L5
    w_lum = np.array([0.18, 0.22, 0.27, 0.33]) * irregular[lum]
    lum_deg = lordosis * w_lum / w_lum.sum()
    if shape is not None:
        lum_deg = np.clip(np.diff(shape.lumbar(shape.tilt_deg)), -10.0, 20.0)
        lordosis = float(lum_deg.sum())
        kyphosis = float(np.clip(kyphosis + 0.5 * (lordosis - np.mean(LORDOSIS_DEG)),
                                 *KYPHOSIS_DEG))
    w_thor = np.sin(np.pi * (np.arange(len(thor)) + 0.5) / len(thor)) * irregular[thor]
    seg = np.zeros(n - 1)
    seg[thor] = -np.radians(kyphosis) * w_thor / w_thor.sum()
    seg[lum] = np.radians(lum_deg)
    return seg, lordosis, kyphosis


def _curvature(u: np.ndarray, u_mid: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Curvature (rad/mm) on ``u``: each segment's angle spread between its body centres,
    smoothed over 25 mm so the curve has no kinks."""
    rate = seg / np.diff(u_mid)
    k = np.searchsorted(u_mid, u) - 1
    kappa = np.where((k >= 0) & (k < len(seg)), rate[np.clip(k, 0, len(seg) - 1)], 0.0)
    return np.convolve(kappa, np.ones(25) / 25, mode="same")


def _resolve_shape(rng: np.random.Generator, shape_source: str | RealShape) -> RealShape | None:
    """The real shape for this case (two draws always, so the stream does not depend on it)."""
    take = rng.random() < REAL_SHAPE_SHARE
    drawn = draw_real_shape(rng)
    if isinstance(shape_source, RealShape):
        return shape_source
    if shape_source == "procedural":
        return None
    if shape_source == "real":
        if drawn is None:
            raise RuntimeError("shape_source='real' but no real spine data is available "
                               "(../shared/data/real-spine or $SPINEFX_REAL_SPINE)")
        return drawn
    if shape_source != "auto":
        raise ValueError(f"shape_source must be 'auto', 'real', 'procedural' or a RealShape, "
                         f"got {shape_source!r}")
    return drawn if take else None


def draw_spine(rng: np.random.Generator, fov: tuple[float, float], lesion_level: str,
               shorten: dict[str, float] | None = None, variation: float = 1.0,
               shape_source: str | RealShape = "auto") -> SpineSpec:
    """Random per-case anatomy with the lesion level placed inside the field of view.

    ``shorten`` maps level names to a fraction of body height lost as a whole (the posterior
    height loss of a fracture), applied before the levels are stacked so neighbours close up.
    ``variation`` scales every per-case range (0 = the average spine, 1 = the full ranges).
    ``shape_source``: "auto" (a real lumbar shape in :data:`REAL_SHAPE_SHARE` of cases when
    the real volumes are present), "real", "procedural", or a given :class:`RealShape`.
    """
    names = LEVEL_NAMES
    n = len(names)
    table = np.array([LEVEL_TABLE[name] for name in names])
    shape = _resolve_shape(rng, shape_source)
    real_scale = float(_vary(rng, 0.94, 1.06, variation))
    sz = _procedural_sizes(rng, table, names, variation)
    if shape is not None:
        _apply_real(sz, shape, names, real_scale)
    h = sz.h.copy()
    for name, frac in (shorten or {}).items():
        h[names.index(name)] *= 1.0 - frac
    rates = np.array([0.0 if name.startswith("S") else
                      DEGENERATE_RATES.get(name, DEGENERATE_RATE_OTHER) for name in names])
    degenerate = rng.random(n) < rates
    disc = sz.disc * (1 - degenerate * rng.uniform(*NARROWING, n))
    lesion = names.index(lesion_level)
    thoracic = np.array([name.startswith("T") for name in names])

    # Place the lesion body's centre in the middle part of the FOV, then stack the rest.
    s_lesion = fov[0] * rng.uniform(0.4, 0.6)
    a_lesion = fov[1] * rng.uniform(0.5, 0.58)
    u_top = np.zeros(n)
    u_top[lesion] = s_lesion - h[lesion] / 2
    for k in range(lesion + 1, n):
        u_top[k] = u_top[k - 1] + h[k - 1] + disc[k - 1]
    for k in range(lesion - 1, -1, -1):
        u_top[k] = u_top[k + 1] - disc[k] - h[k]
    lr, ap = sz.hw / table[:, 3], sz.depth / table[:, 2]   # posterior elements follow the body
    levels = Levels(names=names, u_top=u_top, u_bot=u_top + h, disc=disc, depth=sz.depth,
                    half_width=sz.hw, canal_ap=table[:, 4] * rng.uniform(0.9, 1.1),
                    ped_x=table[:, 5] * lr, ped_hw=table[:, 6] * lr,
                    sp_len=table[:, 7] * ap * rng.uniform(0.9, 1.1),
                    sp_slope=table[:, 8], sacral=np.array([nm.startswith("S") for nm in names]),
                    degenerate=degenerate,
                    phys_wedge=sz.wedge * h / sz.h, concavity=sz.concavity,
                    waist=_vary(rng, *WAIST_MM, variation) * np.where(thoracic, 0.6, 1.0)
                    * _vary(rng, 0.7, 1.3, variation, n),
                    corner=_vary(rng, *CORNER_MM, variation) * _vary(rng, 0.8, 1.2, variation, n))
    seg, lordosis, kyphosis = _segment_angles(rng, names, variation, shape)
    tilt = float(_vary(rng, *TILT_RAD, variation))
    if shape is not None:   # the real subject's own L1 orientation (scanner frame, supine)
        tilt = float(np.radians(shape.lumbar(shape.tilt_deg)[0]))
    return _assemble(rng, fov, levels, seg, tilt, s_lesion, a_lesion,
                     real_subject=None if shape is None else shape.subject,
                     lordosis_deg=lordosis, kyphosis_deg=kyphosis)


def _assemble(rng: np.random.Generator, fov: tuple[float, float], levels: Levels,
              seg: np.ndarray, tilt: float, s_lesion: float, a_lesion: float,
              **extra) -> SpineSpec:
    """Integrate the curve (anchored at the lesion body) and draw the soft-tissue envelope."""
    names = levels.names
    u_tl = (levels.u_bot[names.index("T12")] + levels.u_top[names.index("L1")]) / 2
    u_anchor = levels.u_mid[names.index("L1")] if extra["real_subject"] else u_tl
    u_ls = (levels.u_bot[names.index("L5")] + levels.u_top[names.index("S1")]) / 2
    du = 1.0
    u = np.arange(s_lesion - 700.0, s_lesion + 700.0, du)
    sig = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    u_end = levels.u_bot[-1]
    kappa = _curvature(u, levels.u_mid, seg)
    sacral_bend = rng.uniform(0.008, 0.014) * sig((u - u_ls) / 10) * sig((u_end - u) / 10)

    def integrate(curvature: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        theta = np.cumsum(curvature) * du
        theta = np.clip(theta + tilt - np.interp(u_anchor, u, theta), -0.9, 0.9)
        s = np.cumsum(np.cos(theta)) * du
        a = np.cumsum(np.sin(theta)) * du
        s += s_lesion - np.interp(s_lesion, u, s)   # u_mid of the lesion body sits at s_lesion
        a += a_lesion - np.interp(s_lesion, u, a)
        return s, a, theta

    s, a, theta = integrate(kappa + sacral_bend)
    # The body outline (skin, muscles, abdomen) follows the lumbar lordosis but not the
    # sacral bend, which would otherwise drag the buttocks backwards off the picture.
    s_body, a_body, _ = integrate(kappa)

    return SpineSpec(
        fov=fov, levels=levels, curve_u=u, curve_s=s, curve_a=a, curve_theta=theta,
        body_s=s_body, body_a=a_body,
        cord_hw=rng.uniform(4.0, 5.0),
        conus_u=levels.u_mid[names.index("L1")] + rng.uniform(-15, 25),
        prevertebral_fat=rng.uniform(3.0, 7.0),
        abdomen_depth=rng.uniform(150.0, 210.0),
        fat_front=rng.uniform(10.0, 35.0),
        fat_back=rng.uniform(8.0, 40.0),
        muscle_back=rng.uniform(0.85, 1.05),
        diaphragm_u=levels.u_mid[names.index("T12")] + rng.uniform(-25, 15),
        aorta=(rng.uniform(6.0, 16.0), rng.uniform(9.0, 12.0)),
        ivc=(-rng.uniform(16.0, 24.0), rng.uniform(9.0, 13.0)),
        fat_wave=rng.standard_normal(8),
        **extra,
    )
