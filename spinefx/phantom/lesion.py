"""The fracture: height loss, abnormal marrow and the drawn features, painted onto labels.

:func:`draw_lesion` turns the 15 flags into concrete shapes. It always consumes the same
random numbers whatever the flags, so forcing one feature on a seed changes only that feature's
appearance. It never sees the label: every class-dependent draw is a feature flag from
:mod:`spinefx.phantom.appearance`'s table, so the lesion's signal (T1 ratio to normal marrow)
has one distribution for both classes.

Every feature that is on is visible (see :func:`paint_lesion`):

- diffuse_low_t1: the whole body marrow is lesion signal (dark T1) on every slice through it;
- spared_marrow: the lesion is a band along the fractured endplate, the rest stays bright;
  (neither: a large ragged lesion with small marrow remnants);
- heterogeneous_high_t2: bright T2 patches and a higher T2 lesion signal;
- low_signal_band: a dark wavy line parallel to the fractured endplate on T1 and T2;
- fluid_sign: a thin T2-bright (T1-dark) lens right under the fractured endplate;
- vacuum_cleft: a dark lens (all sequences) inside the body;
- convex_posterior_border: the posterior wall bulges 2.5-4.5 mm into the canal;
- retropulsed_fragment: the posterior corner at the fractured endplate is pushed into the canal;
- epidural_mass: soft tissue behind the body in the canal (ventral, focal);
- encasing_epidural_mass: epidural tissue all around a narrowed thecal sac;
- paraspinal_mass: lobulated soft-tissue mass in front of / beside the body;
- smooth_paraspinal: thin smooth rim of haematoma hugging the anterior body wall;
- skip_lesions: 1-3 round dark-T1 / bright-T2 lesions in other vertebral bodies;
- multiple_fractures: another, older wedge fracture with normal marrow;
- posterior_element_signal: lesion signal in pedicle / arch marrow on para-sagittal slices.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .anatomy import CORTEX, Canvas, Region, SliceGeometry, box_sdf, paint_bone
from .fields import SmoothField
from .spine import LESION_LEVELS, LEVEL_NAMES, Levels
from .tissues import SOFT, member_lut
from .tissues import Tissue as T

SOFT_LUT = member_lut(SOFT)
ARCH_LEVELS = tuple(n for n in LEVEL_NAMES if not n.startswith("S"))


@dataclass
class Lesion:
    level: str
    flags: dict[str, int]
    shape: str                 # wedge | biconcave | crush
    endplate: str              # top | bottom | both
    loss: float                # fraction of body height lost at the worst point
    posterior_loss: float      # fraction lost over the whole body (neighbours close up)
    bulge: float               # mm, posterior wall convexity (negative = slightly concave)
    x_c: float                 # mm, LR centre of the lesion
    rx: float                  # mm, LR half-extent of the partial lesion patterns
    pattern: str               # diffuse | spared | partial
    depth_frac: float          # lesion depth from the fractured endplate (fraction of height)
    t1_ratio: float            # lesion / marrow signal
    t2_ratio: float
    bright_t2: float
    patch_thr: float
    band: tuple[float, ...]    # offset mm, thickness mm, wave amplitude mm, wavelength mm, phase
    fluid: tuple[float, ...]   # thickness mm, centre (-1..1 AP), half-span
    vacuum: tuple[float, ...]  # depth fraction, thickness mm, centre, half-span
    fragment: tuple[float, ...]  # displacement mm, height mm, depth mm, LR half-width mm
    epidural: tuple[float, ...]  # u half-extent (height fraction), depth, x centre, x half-width
    mass: tuple[float, ...]    # u offset, u radius (height fractions), v radius, x centre, x radius
    rim: float                 # haematoma thickness mm
    skips: list[tuple[str, float, float, float, float]]  # level, du frac, v frac, x, radius
    other_fracture: tuple[str, float]  # level, wedge fraction
    pedicle_side: int          # +1 left, -1 right, 0 both
    texture: SmoothField = field(repr=False)   # lesion outline / patches, local (u, v) mm
    texture2: SmoothField = field(repr=False)

    def profile(self, x: float) -> float:
        """1 at the lesion's LR centre, 0 beyond its half-extent (ellipsoidal)."""
        return float(np.sqrt(max(0.0, 1 - ((x - self.x_c) / self.rx) ** 2)))

    def strength(self, x: float) -> float:
        """Lesion contrast on a slice (partial volume with normal marrow at the lateral edge)."""
        g = self.profile(x)
        return 0.7 + 0.3 * g if self.pattern == "diffuse" else 0.85 + 0.15 * g


def draw_level(rng: np.random.Generator) -> str:
    names = list(LESION_LEVELS)
    return str(names[rng.choice(len(names), p=list(LESION_LEVELS.values()))])


def draw_lesion(rng: np.random.Generator, flags: dict[str, int], level: str) -> Lesion:
    i = ARCH_LEVELS.index(level)
    offsets = [o for o in (-3, -2, -1, 1, 2, 3) if 0 <= i + o < len(ARCH_LEVELS)]
    picks = rng.permutation(offsets)
    n_skip = int(rng.integers(1, 4))
    # LR centres near the midline so that most skip lesions show on the lesion's own slices
    skips = [(ARCH_LEVELS[i + int(o)], rng.uniform(-0.2, 0.2), rng.uniform(-0.3, 0.25),
              rng.uniform(-6, 6), rng.uniform(4.0, 8.0)) for o in picks[:3]][:n_skip]
    other = ARCH_LEVELS[i + int(rng.choice([o for o in offsets if abs(o) <= 2] or offsets))]
    shape = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.45, 0.3, 0.25]))
    endplate = str(rng.choice(["top", "bottom", "both"], p=[0.6, 0.2, 0.2]))
    if flags["diffuse_low_t1"]:
        pattern = "diffuse"
    elif flags["spared_marrow"]:
        pattern = "spared"
    else:
        pattern = "partial"
    hetero = flags["heterogeneous_high_t2"]
    t2_base = rng.uniform(1.0, 1.35)
    lesion = Lesion(
        level=level, flags=dict(flags), shape=shape, endplate=endplate,
        loss=rng.uniform(0.2, 0.5), posterior_loss=rng.uniform(0.0, 0.12),
        bulge=rng.uniform(2.5, 4.5) if flags["convex_posterior_border"] else rng.uniform(-0.8, 0.4),
        x_c=rng.uniform(-4, 4), rx=rng.uniform(12, 20),
        pattern=pattern,
        depth_frac=rng.uniform(0.3, 0.5) if pattern == "spared" else rng.uniform(0.5, 0.7),
        t1_ratio=float(np.clip(rng.normal(0.45, 0.09), 0.22, 0.7)),  # same for both classes
        t2_ratio=t2_base + (0.3 if hetero else 0.0),
        bright_t2=rng.uniform(2.0, 2.5),
        patch_thr=rng.uniform(-0.2, 0.3),
        band=(rng.uniform(2.5, 6.0), rng.uniform(1.8, 3.0), rng.uniform(0.3, 1.2),
              rng.uniform(12, 25), rng.uniform(0, 2 * np.pi)),
        fluid=(rng.uniform(1.8, 3.2), rng.uniform(-0.3, 0.2), rng.uniform(0.4, 0.65)),
        vacuum=(rng.uniform(0.35, 0.6), rng.uniform(2.0, 3.5), rng.uniform(-0.3, 0.1),
                rng.uniform(0.35, 0.6)),
        fragment=(rng.uniform(3.0, 5.5), rng.uniform(6.0, 9.0), rng.uniform(5.0, 8.0),
                  rng.uniform(7.0, 11.0)),
        epidural=(rng.uniform(0.45, 0.8), rng.uniform(4.0, 8.0), rng.uniform(-4, 4),
                  rng.uniform(7.0, 11.0)),
        mass=(rng.uniform(-0.2, 0.2), rng.uniform(0.6, 0.95), rng.uniform(9.0, 18.0),
              rng.uniform(-12, 12), rng.uniform(14.0, 26.0)),
        rim=rng.uniform(2.5, 4.5),
        skips=skips,
        other_fracture=(other, rng.uniform(0.15, 0.3)),
        pedicle_side=int(rng.choice([-1, 0, 1])),
        texture=SmoothField(rng, (-100.0, -100.0), (200.0, 200.0), 4.0),
        texture2=SmoothField(rng, (-100.0, -100.0), (200.0, 200.0), 3.0),
    )
    return lesion


def apply_fracture(levels: Levels, lesion: Lesion) -> None:
    """Write the endplate deformation and wall bulge into the level arrays."""
    i = levels.index(lesion.level)
    mm = lesion.loss * levels.height[i]
    share = {"top": (1.0, 0.0), "bottom": (0.0, 1.0), "both": (0.5, 0.5)}[lesion.endplate]
    wedge, concave = {"wedge": (1.0, 0.0), "biconcave": (0.0, 1.0),
                      "crush": (0.5, 0.5)}[lesion.shape]
    levels.wedge_top[i], levels.wedge_bot[i] = mm * wedge * share[0], mm * wedge * share[1]
    levels.concave_top[i], levels.concave_bot[i] = mm * concave * share[0], mm * concave * share[1]
    levels.bulge[i] = lesion.bulge
    if lesion.flags["multiple_fractures"]:
        j = levels.index(lesion.other_fracture[0])
        levels.wedge_top[j] = lesion.other_fracture[1] * levels.height[j]


def paint_lesion(strip: np.ndarray, cv: Canvas, geo: SliceGeometry, lesion: Lesion) -> np.ndarray:
    """Paint the lesion onto the strip labels of one slice; returns the fractured-body mask
    (bool, on the strip)."""
    f = lesion.flags
    b = _body_slice(strip, cv, geo, lesion)
    _paint_marrow(b, lesion)
    _paint_endplate_signs(b, lesion)
    if f["retropulsed_fragment"] and abs(b.x) < lesion.fragment[3]:
        _paint_fragment(b, lesion)
    _paint_soft_tissue(b, lesion)
    if f["posterior_element_signal"]:
        _paint_posterior_elements(b, lesion)
    if f["skip_lesions"]:
        _paint_skip_lesions(strip, cv, lesion, b.x)

    mask = np.zeros(strip.shape, dtype=bool)
    mask[b.rg.rows, b.rg.cols] = b.body
    return mask


@dataclass
class _BodySlice:
    """The fractured body on one slice: the labels to paint and the geometry painted by."""
    x: float             # mm, LR position of the slice
    lv: Levels
    i: int               # index of the fractured level
    depth: float         # mm, AP depth of the fractured body
    rg: Region           # block of the strip around the body, its canal and soft tissue
    lab: np.ndarray      # the region's labels (a view into the strip)
    du: np.ndarray       # mm from the body's mid-height
    tex: np.ndarray      # the lesion's textures, sampled on the region
    tex2: np.ndarray
    sdf: np.ndarray      # signed distance to the body outline of each pixel's own level
    own: np.ndarray      # pixels of the fractured level
    body: np.ndarray     # the fractured body (grows by a retropulsed fragment)
    interior: np.ndarray  # its marrow inside the cortex
    dist: np.ndarray     # mm from the fractured endplate, following its deformed shape
    height: np.ndarray   # mm, local body height
    va: float            # mm, anterior / posterior wall position
    vb: float
    vn: np.ndarray       # -1 anterior .. 1 posterior wall


def _body_slice(strip: np.ndarray, cv: Canvas, geo: SliceGeometry, lesion: Lesion) -> _BodySlice:
    lv = cv.spec.levels
    i = lv.index(lesion.level)
    D = lv.depth[i]
    key = ("lesion", id(lesion))
    if key not in cv.cache:  # x-independent parts, once per canvas
        rg = cv.region(-D / 2 - 45, D / 2 + lv.canal_ap[i] + 8, lv.u_top[i] - 30, lv.u_bot[i] + 30)
        du = rg.u - lv.u_mid[i]
        cv.cache[key] = (rg, du, lesion.texture.sample(du, rg.v), lesion.texture2.sample(du, rg.v))
    rg, du, tex, tex2 = cv.cache[key]
    u, v = rg.u, rg.v
    sdf = geo.sdf(rg)
    own = rg.k == i
    body = own & (sdf < 0)
    d_top, d_bot = u - (rg.cu - rg.hu), (rg.cu + rg.hu) - u
    dist = {"top": d_top, "bottom": d_bot, "both": np.minimum(d_top, d_bot)}[lesion.endplate]
    va, vb = geo.v_front[i], geo.v_back[i]
    return _BodySlice(
        x=geo.x, lv=lv, i=i, depth=D, rg=rg, lab=rg.labels(strip), du=du, tex=tex, tex2=tex2,
        sdf=sdf, own=own, body=body, interior=body & (sdf < -CORTEX), dist=dist,
        height=2 * rg.hu, va=va, vb=vb, vn=(v - (va + vb) / 2) / max((vb - va) / 2, 1e-3))


def _paint_marrow(b: _BodySlice, lesion: Lesion) -> None:
    """Abnormal marrow in the lesion's pattern, with bright T2 patches if heterogeneous."""
    g = lesion.profile(b.x)
    if lesion.pattern == "diffuse":
        region = b.interior
    elif lesion.pattern == "spared":
        region = (b.interior & (b.dist / b.height < lesion.depth_frac * np.sqrt(g) + 0.06 * b.tex)
                  & (g > 0))
    else:
        region = b.interior & (b.dist / b.height + 0.25 * b.tex
                               < lesion.depth_frac * (0.6 + 0.4 * g))
    b.lab[region] = T.LESION
    if lesion.flags["heterogeneous_high_t2"]:
        phase = b.x / 9.0
        patch = np.cos(phase) * b.tex2 + np.sin(phase) * b.tex
        b.lab[region & (patch > lesion.patch_thr)] = T.LESION_BRIGHT


def _paint_endplate_signs(b: _BodySlice, lesion: Lesion) -> None:
    """Low-signal band, fluid sign and vacuum cleft, each shaped along the fractured endplate."""
    f, x, dist = lesion.flags, b.x, b.dist
    if f["low_signal_band"] and abs(x - lesion.x_c) < lesion.rx:
        off, thick, amp, wl, ph = lesion.band
        line = off + amp * np.sin(2 * np.pi * b.rg.v / wl + ph)
        b.lab[b.interior & (np.abs(dist - line) < thick / 2)] = T.BAND
    if f["fluid_sign"] and abs(x - lesion.x_c) < 0.7 * lesion.rx:
        thick, vc, span = lesion.fluid
        t = thick * np.clip(1 - ((b.vn - vc) / span) ** 2, 0, 1)
        b.lab[b.body & (b.sdf < -0.4) & (dist > 0.5) & (dist < 0.5 + t)] = T.FLUID
    if f["vacuum_cleft"] and abs(x - lesion.x_c) < 0.6 * lesion.rx:
        depth, thick, vc, span = lesion.vacuum
        t = thick / 2 * np.clip(1 - ((b.vn - vc) / span) ** 2, 0, 1)
        b.lab[b.interior & (np.abs(dist - depth * b.height) < t)] = T.VACUUM


def _paint_fragment(b: _BodySlice, lesion: Lesion) -> None:
    """The posterior corner at the fractured endplate pushed into the canal (part of the body)."""
    disp, fu, fv, _ = lesion.fragment
    at_top = lesion.endplate != "bottom"
    edge = b.lv.u_top[b.i] if at_top else b.lv.u_bot[b.i]
    fc = edge + (fu / 2 if at_top else -fu / 2)
    vc = b.vb + disp - fv / 2
    frag = box_sdf(np.abs(b.rg.u - fc) - (fu / 2 - 1.2), np.abs(b.rg.v - vc) - (fv / 2 - 1.2), 1.2)
    paint_bone(b.lab, frag, 1.0)
    b.body |= frag < 0


def _paint_soft_tissue(b: _BodySlice, lesion: Lesion) -> None:
    """Epidural tumour; a lobulated paraspinal mass or else a smooth haematoma rim."""
    f, x, lv, i, lab, du, v = lesion.flags, b.x, b.lv, b.i, b.lab, b.du, b.rg.v
    if f["epidural_mass"]:
        _epidural(lab, b.rg, lesion, du / (lesion.epidural[0] * lv.height[i]), b.vb, x)
    if f["paraspinal_mass"]:
        ou, ru, rv, xc, rxm = lesion.mass
        h = lv.height[i]
        rho = (((du - ou * h) / (ru * h)) ** 2
               + ((v - (-b.depth / 2 - 0.45 * rv)) / rv) ** 2 + ((x - xc) / rxm) ** 2)
        lab[(rho < (1 + 0.2 * b.tex) ** 2) & SOFT_LUT[lab]] = T.MASS
    elif f["smooth_paraspinal"] and abs(x) < 0.85 * lv.half_width[i]:
        taper = np.clip(1 - (du / (lv.height[i] / 2 + 4)) ** 4, 0, 1)
        rim = (v > b.va - lesion.rim * taper) & (v < b.va + 1.0) & (taper > 0) & ~(b.sdf < 0)
        lab[rim & SOFT_LUT[lab] & (lab != T.CSF)] = T.HAEMATOMA


def _paint_posterior_elements(b: _BodySlice, lesion: Lesion) -> None:
    """Lesion signal in the arch marrow on the side(s) the lesion reaches."""
    x = b.x
    if lesion.pedicle_side == 0 or np.sign(x) == lesion.pedicle_side:
        arch = (b.own & (b.lab == T.MARROW) & (b.rg.v > b.depth / 2 - 1)
                & (abs(x) >= b.rg.canal_hw - 0.5))
        b.lab[arch] = T.LESION


def _paint_skip_lesions(strip: np.ndarray, cv: Canvas, lesion: Lesion, x: float) -> None:
    """Round lesions in other vertebral bodies, where the slice cuts them."""
    lv = cv.spec.levels
    for name, dfrac, vfrac, xs, r in lesion.skips:
        if abs(x - xs) >= r:
            continue
        j = lv.index(name)
        rr = np.sqrt(r * r - (x - xs) ** 2)
        sk = cv.region(-lv.depth[j] / 2, lv.depth[j] / 2, lv.u_top[j], lv.u_bot[j])
        ball = ((sk.u - lv.u_mid[j] - dfrac * lv.height[j]) ** 2
                + (sk.v - vfrac * lv.depth[j]) ** 2) < rr * rr
        sub = sk.labels(strip)
        sub[ball & (sk.k == j) & (sub == T.MARROW)] = T.SKIP


def _epidural(lab: np.ndarray, rg: Region, lesion: Lesion, du: np.ndarray, vb: float,
              x: float) -> None:
    """Epidural tumour behind the body: a focal ventral lens, or a ring around a narrowed sac.

    ``du`` is the distance from the lesion body's centre in units of the mass's half-height.
    """
    _, depth, xc, xhw = lesion.epidural
    soft = SOFT_LUT[lab]
    fx = 1 - ((x - xc) / xhw) ** 2
    if fx > 0:
        d = depth * np.sqrt(fx)
        lens = (du ** 2 + ((rg.v - vb) / d) ** 2 < 1) & (rg.v > vb - 2)
        lab[lens & soft] = T.MASS
    if lesion.flags["encasing_epidural_mass"]:
        front, ap, chw = rg.canal_front, rg.canal_ap, rg.canal_hw
        centre = front + 0.8 + (ap - 3.8) / 2
        spared = (abs(x) < 0.5 * (chw - 2.0)) & (np.abs(rg.v - centre) < 0.25 * (ap - 3.8))
        ring = (abs(x) < chw + 1) & (rg.v > front - 3) & (rg.v < front + ap) & (np.abs(du) < 1.15)
        lab[ring & soft & ~spared] = T.MASS
