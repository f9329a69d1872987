"""Tissue label maps of the normal spine, one sagittal slice at a time.

Labels are painted at ``SUPER`` x the pixel grid (physics averages them back down, which is
the partial-volume effect). A :class:`Canvas` holds everything about a (spec, grid) pair that
does not depend on the slice position ``x``: spine-frame coordinates of every sub-pixel in a
column strip around the spine, the level each belongs to, deformed endplate positions and the
soft-tissue background. Per slice only left-right cross-sections change, so
:func:`render_slice` is a few dozen vectorised operations, each on the narrow band of columns
(:meth:`Canvas.region`) where its structure can be.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import upsample
from .spine import SpineSpec
from .tissues import Tissue as T
from .tissues import member_lut

SUPER = 2            # sub-samples per pixel and axis
CORNER = 2.5         # mm, v1 rounding of vertebral body corners (now per level: Levels.corner)
CORTEX = 1.4         # mm, cortical shell of bodies
PE_CORTEX = 1.1      # mm, cortical shell of posterior elements
# labels a canal / soft-tissue fill must not overwrite
HARD = member_lut(np.array([T.CORTEX, T.MARROW, T.ANNULUS, T.NUCLEUS, T.NUCLEUS_DEGEN]))
_FIELDS = ("u", "v", "k", "j", "cu", "hu", "qu", "rc", "bulge", "waist", "in_disc", "disc_c",
           "disc_h", "canal_front", "canal_ap", "canal_hw", "sacral")


@dataclass(frozen=True)
class Grid:
    """Square-pixel image grid covering the field of view from its top-left corner."""
    rows: int
    cols: int
    spacing: float  # mm

    @property
    def fov(self) -> tuple[float, float]:
        return (self.rows * self.spacing, self.cols * self.spacing)


def box_sdf(qu: np.ndarray, qv: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """Signed distance of a rounded box given ``|p - centre| - (half_size - radius)`` per axis."""
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0) - radius


class Region:
    """Views of the canvas arrays on a block of the strip (rows, strip columns)."""

    # one attribute per name in _FIELDS, set in __init__ (see Canvas for their meaning)
    u: np.ndarray
    v: np.ndarray
    k: np.ndarray
    j: np.ndarray
    cu: np.ndarray
    hu: np.ndarray
    qu: np.ndarray
    rc: np.ndarray
    bulge: np.ndarray
    waist: np.ndarray
    in_disc: np.ndarray
    disc_c: np.ndarray
    disc_h: np.ndarray
    canal_front: np.ndarray
    canal_ap: np.ndarray
    canal_hw: np.ndarray
    sacral: np.ndarray

    def __init__(self, cv: "Canvas", rows: slice, cols: slice):
        self.rows, self.cols = rows, cols
        for name in _FIELDS:
            setattr(self, name, getattr(cv, name)[rows, cols])

    def labels(self, strip: np.ndarray) -> np.ndarray:
        return strip[self.rows, self.cols]


class Canvas:
    """Slice-independent precomputation for one spec on one grid (2x sampled).

    ``mottle``: coarse random lattice over the field of view (bowel / fat pattern).
    """

    def __init__(self, spec: SpineSpec, grid: Grid, mottle: np.ndarray):
        self.spec, self.grid = spec, grid
        self.cache: dict = {}  # per-canvas memo for other painters (lesion regions)
        lv = spec.levels
        self.ps = ps = grid.spacing / SUPER
        self.shape = (grid.rows * SUPER, grid.cols * SUPER)
        s = ((np.arange(self.shape[0]) + 0.5) * ps).astype(np.float32)
        a = ((np.arange(self.shape[1]) + 0.5) * ps).astype(np.float32)
        U, ac, th = spec.along(s)
        self.background = _background(spec, s, a, U, spec.body_line(s), mottle)
        # The strip covers the rows down to the tip of the sacrum (nothing spinal below) and
        # follows the curve: row r holds image columns c0[r] .. c0[r] + width, so the spine
        # stays in the same strip columns however lordotic it is. Painters work on the strip;
        # it is scattered back into the image at the end of each slice.
        n_rows = int(np.searchsorted(U, lv.u_bot[-1] + 5.0))
        U, ac, th = U[:n_rows], ac[:n_rows], th[:n_rows]
        w_lo = -(lv.depth.max() / 2 + 60.0)
        w_hi = lv.depth.max() / 2 + lv.canal_ap.max() + lv.sp_len.max() + 15.0
        width = min(int(np.ceil((w_hi - w_lo) * 1.15 / ps)), self.shape[1])
        c0 = np.clip(np.floor((ac + w_lo) / ps), 0, self.shape[1] - width).astype(np.intp)
        self.index = (np.arange(n_rows)[:, None], c0[:, None] + np.arange(width)[None, :])
        self._sec = (1 / np.cos(th)).astype(np.float32)
        self._w0 = ((c0 + 0.5) * ps - ac).astype(np.float32)   # w of strip column 0, per row
        w = self._w0[:, None] + np.arange(width, dtype=np.float32)[None, :] * ps
        self.u = (U[:, None] + w * np.sin(th)[:, None]).astype(np.float32)
        self.v = (w * np.cos(th)[:, None]).astype(np.float32)
        self._strip_background = self.background[self.index]
        u, v = self.u, self.v
        self._row_u = (u.min(axis=1), u.max(axis=1)) if u.size else (np.zeros(0), np.zeros(0))

        # Level of each sub-pixel: boundaries at disc mid-heights. Disc segment j lies
        # between body j and body j+1 (boundaries at body centres).
        bounds = (lv.u_bot[:-1] + lv.u_top[1:]) / 2
        self.k = k = np.searchsorted(bounds, u).astype(np.intp)
        self.j = j = np.clip(np.searchsorted(lv.u_mid, u) - 1, 0, len(lv.names) - 2).astype(np.intp)

        # Endplates (x-independent) over the AP position: the normal shape (physiological
        # wedge, half per endplate, on the shorter wall's side; central concavity) plus the
        # fracture's depressions (wedge_*, concave_*, set by lesion.apply_fracture).
        D = lv.depth[k]
        vh = np.clip((v + D / 2) / D, 0, 1)
        bowl = 4 * vh * (1 - vh)
        pw = lv.phys_wedge[k] / 2
        slope = np.where(pw > 0, pw * (1 - vh), -pw * vh)
        top = (lv.u_top[k] + lv.wedge_top[k] * (1 - vh) + slope
               + (lv.concave_top[k] + lv.concavity[k]) * bowl)
        bot = (lv.u_bot[k] - lv.wedge_bot[k] * (1 - vh) - slope
               - (lv.concave_bot[k] + lv.concavity[k]) * bowl)
        self.cu = ((top + bot) / 2).astype(np.float32)
        self.hu = np.maximum((bot - top) / 2, 0.5).astype(np.float32)
        self.rc = np.minimum(lv.corner[k], self.hu).astype(np.float32)
        self.qu = (np.abs(u - self.cu) - (self.hu - self.rc)).astype(np.float32)
        along = np.clip(1 - ((u - self.cu) / self.hu) ** 2, 0, 1)  # 0 at the endplates
        self.bulge = (lv.bulge[k] * along).astype(np.float32)
        self.waist = (lv.waist[k] * along).astype(np.float32)  # anterior wall concavity

        # Discs: sub-pixels close enough to the gap between two bodies.
        normal = lv.concavity + np.abs(lv.phys_wedge) / 2 + 2.4
        dep_b = lv.wedge_bot + lv.concave_bot + normal
        dep_t = lv.wedge_top + lv.concave_top + normal
        self.in_disc = (u > lv.u_bot[j] - dep_b[j]) & (u < lv.u_top[j + 1] + dep_t[j + 1])
        self.disc_c = ((lv.u_bot[j] + lv.u_top[j + 1]) / 2).astype(np.float32)
        self.disc_h = (lv.u_top[j + 1] - lv.u_bot[j]).astype(np.float32)

        # Canal and posterior elements, interpolated smoothly along the spine.
        self.canal_front = spec.level_value(u, lv.depth / 2).astype(np.float32)
        self.canal_ap = spec.level_value(u, lv.canal_ap).astype(np.float32)
        self.canal_hw = spec.level_value(u, lv.ped_x - lv.ped_hw).astype(np.float32)
        self.sacral = lv.sacral[k] | (u > lv.u_top[lv.index("S1")])

    def region(self, v_lo: float, v_hi: float, u_lo: float = -np.inf,
               u_hi: float = np.inf) -> Region:
        """Block of the strip that contains ``v_lo <= v <= v_hi`` (and ``u`` in range)."""
        lo, hi = self._row_u
        hit = np.nonzero((hi >= u_lo) & (lo <= u_hi))[0]
        if len(hit) == 0:
            return Region(self, slice(0, 0), slice(0, 0))
        rows = slice(int(hit[0]), int(hit[-1]) + 1)
        sec, w0 = self._sec[rows], self._w0[rows]
        j0 = np.floor((np.minimum(v_lo * sec, v_lo) - w0) / self.ps).min()
        j1 = np.ceil((np.maximum(v_hi * sec, v_hi) - w0) / self.ps).max() + 1
        n = self.u.shape[1]
        return Region(self, rows, slice(int(np.clip(j0, 0, n)), int(np.clip(j1, 0, n))))

    def strip(self) -> np.ndarray:
        """A fresh copy of the strip's background labels to paint on."""
        return self._strip_background.copy()

    def to_image(self, strip: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        """Scatter a painted strip into a full 2x image (default: the soft-tissue background)."""
        out = (self.background if background is None else background).copy()
        out[self.index] = strip
        return out


def _background(spec: SpineSpec, s, a, U, ac, mottle: np.ndarray) -> np.ndarray:
    """Soft-tissue layers from the anterior skin to the posterior skin, one per row band."""
    lv = spec.levels
    half_d = spec.level_value(U, lv.depth / 2)
    canal = spec.level_value(U, lv.canal_ap)
    sp = spec.level_value(U, lv.sp_len)
    c = spec.fat_wave
    def wave(i: int) -> np.ndarray:  # slow, smooth thickness changes along the body
        return np.sin(s / (60 + 15 * i) + c[i]) * 0.5 + np.sin(s / 23 + c[i + 4]) * 0.2

    b0 = -(half_d + spec.abdomen_depth)
    b1 = b0 + 2.5
    b2 = b1 + spec.fat_front * (1 + 0.2 * wave(0))
    b3 = -(half_d + spec.prevertebral_fat)
    b4 = -half_d + 2.0
    b5 = half_d + canal + sp * spec.muscle_back * (1 + 0.05 * wave(1))
    b6 = b5 + spec.fat_back * (1 + 0.3 * wave(2))
    b7 = b6 + 2.5
    w = a[None, :] - ac[:, None]
    layer = np.zeros(w.shape, dtype=np.uint8)
    for b in (b0, b1, b2, b3, b4, b5, b6, b7):
        layer += w >= b[:, None]
    lut = np.array([T.AIR, T.SKIN, T.FAT, T.VISCERA, T.FAT, T.MUSCLE, T.FAT, T.SKIN, T.AIR],
                   dtype=np.uint8)
    labels = lut[layer]

    visc = layer == 3
    # Above the diaphragm: heart / mediastinum in front of the spine, lung further forward.
    # The diaphragm is a dome, highest ~7 cm in front of the spine, lowest in the posterior recess.
    s_dia = np.interp(spec.diaphragm_u, spec.curve_u, spec.curve_s)
    ahead = w - b3[:, None]                      # <= 0 inside the abdomen
    chest = visc & (s[:, None] < s_dia + 0.004 * (ahead + 70) ** 2)
    m = upsample(mottle, w.shape)  # lattice over the FOV: same pattern on every grid
    labels[visc & (m > 1.3)] = T.FAT             # mesenteric fat between bowel loops
    labels[visc & (m < -2.0)] = T.LUNG           # bowel gas (dark on both)
    labels[chest] = T.MEDIASTINUM
    labels[chest & (ahead < -60 + 8 * m)] = T.LUNG
    return labels


@dataclass
class SliceGeometry:
    """Per-slice vertebral body outline, shared with the lesion painter."""
    x: float
    v_front: np.ndarray    # per-level anterior / posterior wall positions at this x
    v_back: np.ndarray
    xf: np.ndarray         # per-level LR cross-section factor (0 = body not cut by the slice)

    def sdf(self, rg: Region) -> np.ndarray:
        """Signed distance to the body outline of each sub-pixel's own level."""
        k = rg.k
        xf = self.xf[k]
        va = self.v_front[k] + rg.waist * xf
        vp = self.v_back[k] + rg.bulge * xf
        qv = np.abs(rg.v - (va + vp) / 2) - ((vp - va) / 2 - rg.rc)
        d = box_sdf(rg.qu, qv, rg.rc)
        d[xf < 0.3] = 1e3  # the slice misses this body
        return d


def body_geometry(cv: Canvas, x: float) -> SliceGeometry:
    lv = cv.spec.levels
    xf = np.sqrt(np.clip(1 - (x / lv.half_width) ** 2, 0, 1))
    v_front = lv.depth / 2 - lv.depth * xf
    v_back = lv.depth / 2 - 0.35 * lv.depth * (1 - xf)
    return SliceGeometry(x=x, v_front=v_front, v_back=v_back, xf=xf)


def paint_bone(lab: np.ndarray, sdf: np.ndarray, cortex: float, where=None) -> None:
    """Cortex where ``sdf < 0``, fatty marrow deeper than ``cortex`` mm."""
    inside = sdf < 0
    if where is not None:
        inside &= where
    lab[inside] = T.CORTEX
    lab[inside & (sdf < -cortex)] = T.MARROW


def render_slice(cv: Canvas, x: float) -> tuple[np.ndarray, SliceGeometry]:
    """Strip labels of the normal spine at LR offset ``x`` (see :meth:`Canvas.to_image`)."""
    spec, lv = cv.spec, cv.spec.levels
    strip = cv.strip()
    d_min, d_max = lv.depth.min() / 2, lv.depth.max() / 2

    # Great vessels in front of the spine (left aorta, right IVC), tubes along the curve.
    for (xc, r), tissue, end in ((spec.aorta, T.VESSEL, "L4"), (spec.ivc, T.IVC, "L5")):
        if abs(x - xc) < r:
            rg = cv.region(-(d_max + spec.prevertebral_fat + 2 * r + 1), -d_min)
            half = np.sqrt(r * r - (x - xc) ** 2)
            vc = -(rg.canal_front + spec.prevertebral_fat + r)
            rg.labels(strip)[(np.abs(rg.v - vc) < half) & (rg.u < lv.u_mid[lv.index(end)])] = tissue

    geo = body_geometry(cv, x)
    if geo.xf.max() > 0.3:
        rg = cv.region(-d_max - 3, d_max + 6)
        lab = rg.labels(strip)
        u, v, j = rg.u, rg.v, rg.j
        # Discs first, bodies over them; a disc follows its two bodies' AP extent.
        both = np.minimum(geo.xf[:-1], geo.xf[1:])
        va = (geo.v_front[:-1] + geo.v_front[1:]) / 2 - 1.0
        vp = (geo.v_back[:-1] + geo.v_back[1:]) / 2 + 0.7
        disc = rg.in_disc & (v > va[j]) & (v < vp[j]) & (both[j] > 0.3)
        lab[disc] = T.ANNULUS
        xn = np.sqrt(np.clip(1 - (x / (0.6 * lv.half_width)) ** 2, 0, 1))
        av = (0.32 * lv.depth * xn)[j] + 1e-3
        nucleus = disc & (((u - rg.disc_c) / (0.3 * rg.disc_h)) ** 2
                          + ((v - 0.05 * lv.depth[j]) / av) ** 2 < 1) & (rg.disc_h > 3.0)
        lab[nucleus] = np.where(lv.degenerate[j[nucleus]], T.NUCLEUS_DEGEN, T.NUCLEUS)
        paint_bone(lab, geo.sdf(rg), CORTEX)

    ax = abs(x)
    if ax < lv.ped_x.max():  # spinal canal: epidural fat, thecal sac, cord / cauda equina
        rg = cv.region(d_min - 5, d_max + lv.canal_ap.max() + 1)
        lab = rg.labels(strip)
        u, v = rg.u, rg.v
        front, ap, chw = rg.canal_front, rg.canal_ap, rg.canal_hw
        canal = (ax < chw) & (v > front - 4) & (v < front + ap) & ~HARD[lab]
        lab[canal] = T.EPIDURAL_FAT
        sac_hw = chw - 2.0
        f = np.sqrt(np.clip(1 - (x / sac_hw) ** 2, 0, 1))
        centre = front + 0.8 + (ap - 3.8) / 2
        sac = canal & (np.abs(v - centre) < (ap - 3.8) / 2 * np.sqrt(f)) & (f > 0)
        lab[sac] = T.CSF
        if ax < spec.cord_hw:
            taper = np.sqrt(np.clip((spec.conus_u - u) / 20, 0, 1))
            half = 3.6 * np.sqrt(1 - (x / spec.cord_hw) ** 2) * taper
            lab[sac & (np.abs(v - centre + 0.5) < half)] = T.CORD
        if abs(np.sin(x * 1.3)) > 0.5:  # cauda equina roots in the dorsal sac below the conus
            root = sac & (u > spec.conus_u) & (np.abs(v - centre - 0.3 * (ap - 3.8) / 2) < 0.6)
            lab[root] = T.NERVE
    _posterior_elements(cv, strip, x)
    return strip, geo


def _arch_geometry(cv: Canvas) -> dict:
    """x-independent shapes of the posterior elements (computed once per canvas)."""
    lv = cv.spec.levels
    rg = cv.region(lv.depth.min() / 2 - 6, lv.depth.max() / 2 + lv.canal_ap.max() + 14)
    u, v, k = rg.u, rg.v, rg.k
    front, ap = rg.canal_front, rg.canal_ap
    back = front + ap                 # posterior wall of the canal
    h = lv.height[k]
    g = dict(rg=rg, px=lv.ped_x[k], pw=lv.ped_hw[k], chw=rg.canal_hw, arch=~rg.sacral)
    g["in_canal_ap"] = (v > front - 4) & (v < back)
    g["root"] = (u - (lv.u_top[k] + 0.72 * h)) ** 2 + (v - front - 0.45 * ap) ** 2 < 2.3 ** 2
    g["flavum"] = (v > back - 1) & (v < back + 4)
    hu = (0.7 * h + 0.5 * lv.disc[k]) / 2
    g["lamina"] = box_sdf(np.abs(u - lv.u_top[k] - 0.3 * h - hu) - (hu - 1.5),
                          np.abs(v - back - 3) - 2.0, 1.5)
    hv = (ap + 5) / 2
    g["ped_u"] = np.abs(u - lv.u_top[k] - 0.33 * h)      # pedicle: height shrinks off-centre
    g["ped_qv"] = np.abs(v - (front - 4 + hv)) - (hv - 2)
    g["ped_h"] = 0.23 * h
    dj = np.abs(u - rg.disc_c - 2.0)                     # facet joint at each disc level
    g["pillar"] = np.maximum(np.abs(v - back - 4) - 8.5, 1.2 - dj)
    g["joint"] = (dj < 0.5) & (np.abs(v - back - 4) < 7.5)
    r = np.where(lv.names.index("L1") <= k, 4.5, 5.5)
    g["transverse"] = (np.sqrt(((u - lv.u_top[k] - 0.3 * h) / (0.2 * h)) ** 2
                               + ((v - back + 2) / r) ** 2) - 1) * r
    return g


def _spinous_geometry(cv: Canvas) -> tuple[Region, list[tuple[np.ndarray, np.ndarray]]]:
    """Spinous processes; thoracic ones slope down over the next level: 3 candidate levels."""
    lv = cv.spec.levels
    rg = cv.region(lv.depth.min() / 2 + lv.canal_ap.min(),
                   lv.depth.max() / 2 + lv.canal_ap.max() + lv.sp_len.max() + 4)
    u, v, k = rg.u, rg.v, rg.k
    v0 = rg.canal_front + rg.canal_ap + 2
    shapes = []
    for shift in (0, 1, 2):
        kk = np.clip(k - shift, 0, len(lv.names) - 1)
        hh, length = lv.height[kk], lv.sp_len[kk]
        depth = np.clip((v - v0) / length, 0, 1)
        up = u - lv.sp_slope[kk] * length * depth
        hu = 0.22 * hh * (1 - 0.35 * depth)
        sdf = box_sdf(np.abs(up - lv.u_top[kk] - 0.6 * hh) - (hu - 1.5),
                      np.abs(v - v0 - length / 2) - (length / 2 - 1.5), 1.5)
        shapes.append((sdf, ~lv.sacral[kk]))
    return rg, shapes


def _posterior_elements(cv: Canvas, strip: np.ndarray, x: float) -> None:
    lv = cv.spec.levels
    ax = abs(x)
    if "arch" not in cv.cache:
        cv.cache["arch"] = _arch_geometry(cv)
    g = cv.cache["arch"]
    lab = g["rg"].labels(strip)
    px, pw, chw, arch = g["px"], g["pw"], g["chw"], g["arch"]

    if ax < (lv.ped_x + lv.ped_hw).max() + 1:
        # Neural foramen (fat) lateral to the canal, the exiting root under the pedicle.
        foramen = arch & (ax >= chw) & (ax < px + pw + 1) & g["in_canal_ap"] & ~HARD[lab]
        lab[foramen] = T.EPIDURAL_FAT
        lab[foramen & g["root"]] = T.NERVE
        # Ligamentum flavum, then the laminae over it.
        lab[arch & (ax < chw + 1) & g["flavum"] & ~HARD[lab]] = T.LIGAMENT
        paint_bone(lab, g["lamina"], PE_CORTEX, arch & (ax < px + pw))

    if (lv.ped_x - lv.ped_hw).min() < ax < (lv.ped_x + lv.ped_hw).max():
        # Pedicles: bony struts from the upper half of the body to the arch.
        dx = (ax - px) / pw
        ped = arch & (np.abs(dx) < 1)
        f = np.sqrt(np.clip(1 - dx * dx, 0, 1))
        sdf = box_sdf(g["ped_u"] - (g["ped_h"] * f - 2), g["ped_qv"], 2)
        paint_bone(lab, sdf, PE_CORTEX, ped)

    if (lv.ped_x - 3).min() < ax < (lv.ped_x + lv.ped_hw + 6).max():
        # Articular pillars lateral to the canal, cut by a facet joint at each disc level.
        pil = arch & (ax > px - 3) & (ax < px + pw + 6)
        paint_bone(lab, g["pillar"], PE_CORTEX, pil)
        lab[pil & g["joint"]] = T.FLUID

    if ax > (lv.ped_x + lv.ped_hw).min() - 1:
        # Transverse processes (lumbar) / rib necks (thoracic) lateral to the pedicles.
        paint_bone(lab, g["transverse"], PE_CORTEX, arch & (ax > px + pw - 1))

    if ax < 4.5:
        if "spinous" not in cv.cache:
            cv.cache["spinous"] = _spinous_geometry(cv)
        rg, shapes = cv.cache["spinous"]
        lab = rg.labels(strip)
        for sdf, where in shapes:
            paint_bone(lab, sdf, PE_CORTEX, where)
