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


def draw_spine(rng: np.random.Generator, fov: tuple[float, float], lesion_level: str,
               shorten: dict[str, float] | None = None) -> SpineSpec:
    """Random per-case anatomy with the lesion level placed inside the field of view.

    ``shorten`` maps level names to a fraction of body height lost as a whole (the posterior
    height loss of a fracture), applied before the levels are stacked so neighbours close up.
    """
    names = LEVEL_NAMES
    table = np.array([LEVEL_TABLE[n] for n in names])
    size = rng.uniform(0.9, 1.1)          # overall body size
    tall = size * rng.uniform(0.95, 1.05)  # height vs depth proportion
    h = table[:, 0] * tall * rng.uniform(0.97, 1.03, len(names))
    for name, frac in (shorten or {}).items():
        h[names.index(name)] *= 1.0 - frac
    disc = table[:, 1] * tall * rng.uniform(0.85, 1.15, len(names))
    depth = table[:, 2] * size * rng.uniform(0.97, 1.03, len(names))
    hw = table[:, 3] * size
    lesion = names.index(lesion_level)

    # Place the lesion body's centre in the middle part of the FOV, then stack the rest.
    s_lesion = fov[0] * rng.uniform(0.4, 0.6)
    a_lesion = fov[1] * rng.uniform(0.5, 0.58)
    u_top = np.zeros(len(names))
    u_top[lesion] = s_lesion - h[lesion] / 2
    for k in range(lesion + 1, len(names)):
        u_top[k] = u_top[k - 1] + h[k - 1] + disc[k - 1]
    for k in range(lesion - 1, -1, -1):
        u_top[k] = u_top[k + 1] - disc[k] - h[k]
    sacral = np.array([n.startswith("S") for n in names])
    degenerate = rng.random(len(names)) < np.where(np.isin(names, ("L4", "L5")), 0.5, 0.1)
    levels = Levels(names=names, u_top=u_top, u_bot=u_top + h, disc=disc, depth=depth,
                    half_width=hw, canal_ap=table[:, 4] * rng.uniform(0.9, 1.1),
                    ped_x=table[:, 5] * size, ped_hw=table[:, 6] * size,
                    sp_len=table[:, 7] * size * rng.uniform(0.9, 1.1),
                    sp_slope=table[:, 8], sacral=sacral, degenerate=degenerate)

    # Curve: kyphotic above the thoraco-lumbar junction, lordotic below, sacrum bending back.
    u_tl = (levels.u_bot[names.index("T12")] + levels.u_top[names.index("L1")]) / 2
    u_ls = (levels.u_bot[names.index("L5")] + levels.u_top[names.index("S1")]) / 2
    du = 1.0
    u = np.arange(s_lesion - 700.0, s_lesion + 700.0, du)
    sig = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    u_end = levels.u_bot[-1]
    kappa = (rng.uniform(0.0025, 0.0045) * sig((u - u_tl) / 15)
             - rng.uniform(0.001, 0.0025) * sig((u_tl - u) / 15))
    sacral_bend = rng.uniform(0.008, 0.014) * sig((u - u_ls) / 10) * sig((u_end - u) / 10)
    tilt = rng.uniform(-0.3, -0.1)

    def integrate(curvature: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        theta = np.cumsum(curvature) * du
        theta = np.clip(theta + tilt - np.interp(u_tl, u, theta), -0.9, 0.9)
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
    )
