"""Real lumbar anatomy for the phantom: shape statistics and marrow texture from real MRI.

The real volumes live in ``../shared/data/real-spine`` beside the repository (or wherever
``SPINEFX_REAL_SPINE`` points) and are read at generation time only: nothing real is ever
written into the repository or into a phantom file except derived numbers (heights, angles)
and a resampled, normalised texture. Without that folder every function returns ``None`` and
the phantom is purely procedural.

Sources (see the folder's README.md): ``vb3/`` — 54 lumbar spines (MyoSegmenTUM, fat-suppressed
water images, 1 mm, L1..L5 body masks); ``dzz_t1.npz`` — one subject with 9 traced bodies. Both
are indexed (row superior->inferior, column anterior->posterior, axis 2 = sagittal slice).

Measurements per body on its own mid-sagittal slices (the middle three of its LR extent):
heights at the anterior (12-22 % of the AP extent), middle (45-55 %) and posterior (78-88 %)
columns; AP depth; LR width (number of slices the mask touches, 1 mm each); endplate concavity
(depth of the endplate centre below the line through its rims); endplate angles, whose
difference is the body's wedge and whose mean is the body's tilt. Between bodies: the disc gap
along the line joining the two centroids. Lordosis L1-L5: angle between the L1 superior and the
L5 inferior endplate (Cobb). Subjects are scanned supine, so their lordosis is flatter than
standing. Heights are counted along image columns (not along each body's own axis), so a
strongly tilted body reads slightly short at its anterior and posterior bands. The DzZ subject
is measured too, but its 9 labels carry no level names (T9..L5 is assumed) and subjects whose
numbers no lumbar spine has are dropped (:func:`_plausible`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ENV_VAR = "SPINEFX_REAL_SPINE"
LUMBAR = ("L1", "L2", "L3", "L4", "L5")
DZZ_NAMES = ("T9", "T10", "T11", "T12") + LUMBAR  # assumed: the 9 traced bodies end at L5
MID_SLICES = 3     # sagittal slices averaged around each body's LR centre


def real_spine_root() -> Path | None:
    """The real-spine folder (``$SPINEFX_REAL_SPINE`` or ``../shared/data/real-spine``), or
    None when it holds no usable volume."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        root = Path(env)
    else:
        import spinefx
        root = Path(spinefx.__file__).resolve().parents[2] / "shared" / "data" / "real-spine"
    if not root.is_dir() or not (_vb3_files(root) or (root / "dzz_t1.npz").is_file()):
        return None
    return root


def _vb3_files(root: Path) -> list[Path]:
    return sorted((root / "vb3").glob("vb3_*.npz")) if (root / "vb3").is_dir() else []


@dataclass(frozen=True)
class RealShape:
    """Shape statistics of one real subject's bodies (mm, degrees), superior to inferior."""
    subject: str
    names: tuple[str, ...]
    height_ant: tuple[float, ...]
    height_mid: tuple[float, ...]
    height_post: tuple[float, ...]
    depth: tuple[float, ...]
    width: tuple[float, ...]
    disc: tuple[float, ...]          # gap below each body but the last (len n - 1)
    concavity: tuple[float, ...]     # mean of the two endplates' concavity
    wedge_deg: tuple[float, ...]     # + = anterior shorter (kyphotic wedge)
    tilt_deg: tuple[float, ...]      # mean endplate angle (+ = anterior end lower)
    centroids: tuple[tuple[float, float], ...]  # (row, column) mm on the volume grid
    lordosis_deg: float              # L1 superior vs L5 inferior endplate (+ = lordotic)

    def lumbar(self, values: tuple[float, ...]) -> np.ndarray:
        """``values`` (one per body) at L1..L5, in that order."""
        return np.array([values[self.names.index(n)] for n in LUMBAR])


def _edges(sl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Columns of a 2-D body mask with their top and bottom rows (None if too small)."""
    cols = np.nonzero(sl.any(axis=0))[0]
    if len(cols) < 10:
        return None
    cols = np.arange(cols[0], cols[-1] + 1)
    sub = sl[:, cols]
    has = sub.any(axis=0)
    top = np.where(has, sub.argmax(axis=0), np.nan)
    bot = np.where(has, sub.shape[0] - 1 - sub[::-1].argmax(axis=0), np.nan)
    return cols.astype(float), top, bot


def _band(p: np.ndarray, arr: np.ndarray, lo: float, hi: float) -> float:
    return float(np.nanmean(arr[(p >= lo) & (p <= hi)]))


def _measure_slice(sl: np.ndarray) -> np.ndarray | None:
    """[h_ant, h_mid, h_post, depth, conc_top, conc_bot, angle_top, angle_bot] of one slice."""
    e = _edges(sl)
    if e is None:
        return None
    cols, top, bot = e
    p = (cols - cols[0]) / max(cols[-1] - cols[0], 1.0)
    h = bot - top + 1
    out = [_band(p, h, 0.12, 0.22), _band(p, h, 0.45, 0.55), _band(p, h, 0.78, 0.88),
           float(len(cols))]
    conc, ang = [], []
    for edge, sign in ((top, 1.0), (bot, -1.0)):
        pa, pp = (0.1 + 0.25) / 2, (0.75 + 0.9) / 2
        ra, rp = _band(p, edge, 0.1, 0.25), _band(p, edge, 0.75, 0.9)
        rim_mid = ra + (rp - ra) * (0.5 - pa) / (pp - pa)
        conc.append(sign * (_band(p, edge, 0.45, 0.55) - rim_mid))
        # rows per column from anterior to posterior; + = the anterior end sits lower
        ang.append(np.degrees(np.arctan2(ra - rp, (pp - pa) * len(cols))))
    return np.array(out + conc + ang)


def _disc_gap(sl: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> float:
    """mm of background on the line between two centroids (the disc at its centre)."""
    n = int(np.ceil(np.hypot(*(c1 - c0)) * 4)) + 1
    t = np.linspace(0, 1, n)
    r = np.round(c0[0] + t * (c1[0] - c0[0])).astype(int)
    c = np.round(c0[1] + t * (c1[1] - c0[1])).astype(int)
    return float((sl[r, c] == 0).mean() * np.hypot(*(c1 - c0)))


def measure(mask: np.ndarray, names: tuple[str, ...], labels: list[int], subject: str,
            ) -> RealShape | None:
    """Shape statistics of the bodies ``labels`` (superior to inferior) of one label volume."""
    rows: list[np.ndarray] = []
    width, cents, mids = [], [], []
    for lab in labels:
        m = mask == lab
        xs = np.nonzero(m.any(axis=(0, 1)))[0]
        if len(xs) == 0:
            return None
        xc = (xs[0] + xs[-1]) // 2
        per = [_measure_slice(m[:, :, x]) for x in range(xc - MID_SLICES // 2,
                                                         xc + MID_SLICES // 2 + 1)]
        good = [q for q in per if q is not None]
        if not good:
            return None
        rows.append(np.mean(good, axis=0))
        width.append(float(len(xs)))
        rr, cc = np.nonzero(m[:, :, xc])
        cents.append(np.array([rr.mean(), cc.mean()]))
        mids.append(xc)
    q = np.array(rows)
    disc = [_disc_gap(((mask[:, :, mids[i]] == labels[i]) | (mask[:, :, mids[i]] == labels[i + 1])),
                      cents[i], cents[i + 1]) for i in range(len(labels) - 1)]
    ang_top, ang_bot = q[:, 6], q[:, 7]
    # endplates converging posteriorly: the L5 end tips anterior-down relative to L1's
    lord = float(ang_bot[names.index("L5")] - ang_top[names.index("L1")])
    def tup(a) -> tuple[float, ...]:
        return tuple(round(float(x), 3) for x in a)
    return RealShape(
        subject=subject, names=names, height_ant=tup(q[:, 0]), height_mid=tup(q[:, 1]),
        height_post=tup(q[:, 2]), depth=tup(q[:, 3]), width=tup(width), disc=tup(disc),
        concavity=tup((q[:, 4] + q[:, 5]) / 2), wedge_deg=tup(ang_top - ang_bot),
        tilt_deg=tup((ang_top + ang_bot) / 2),
        centroids=tuple((round(float(c[0]), 2), round(float(c[1]), 2)) for c in cents),
        lordosis_deg=round(lord, 3))


def _dzz_order(mask: np.ndarray) -> list[int]:
    """DzZ labels are not numbered in order: sort them by centroid row (superior first)."""
    labs = [int(v) for v in np.unique(mask) if v]
    return sorted(labs, key=lambda v: float(np.nonzero(mask == v)[0].mean()))


def _sources(root: Path) -> list[Path]:
    """Every label volume a shape can come from: the vb3 subjects, then DzZ."""
    dzz = root / "dzz_t1.npz"
    return _vb3_files(root) + ([dzz] if dzz.is_file() else [])


@lru_cache(maxsize=None)
def _subject(path: Path) -> RealShape | None:
    """One subject's shape (measured on first use, about 25 ms), None if implausible."""
    with np.load(path) as z:
        mask = z["vertebral_bodies"]
    if path.name.startswith("vb3_"):
        shape = measure(mask, LUMBAR, [1, 2, 3, 4, 5], path.stem)
    else:
        order = _dzz_order(mask)
        if len(order) != len(DZZ_NAMES):
            return None
        shape = measure(mask, DZZ_NAMES, order, "dzz")
    return shape if shape is not None and _plausible(shape) else None


def _plausible(shape: RealShape) -> bool:
    """Drop subjects whose masks give numbers no lumbar spine has (a broken trace)."""
    h, d = shape.lumbar(shape.height_mid), shape.lumbar(shape.depth)
    return bool(np.all((h > 15) & (h < 45) & (d > 20) & (d < 60))
                and all(2 < g < 20 for g in shape.disc) and abs(shape.lordosis_deg) < 90)


def real_shapes() -> tuple[RealShape, ...]:
    """Every usable real subject (measured once per process, about 1.5 s for all); empty
    without the real folder."""
    root = real_spine_root()
    shapes = [_subject(p) for p in _sources(root)] if root is not None else []
    return tuple(s for s in shapes if s is not None)


def draw_real_shape(rng: np.random.Generator) -> RealShape | None:
    """One real subject, uniformly over the source volumes, measured lazily; None without
    real data or when the drawn subject's masks are implausible (the case stays
    procedural). Always consumes one draw."""
    pick = rng.random()
    root = real_spine_root()
    sources = _sources(root) if root is not None else []
    return _subject(sources[int(pick * len(sources))]) if sources else None


# --- marrow texture -----------------------------------------------------------------------
TEXTURE_PATCH = (0.5, 0.6)   # share of body height / depth taken around the centroid


@lru_cache(maxsize=8)
def _body_patches(path: Path) -> tuple[np.ndarray, ...]:
    """Normalised marrow patches of one vb3 subject: each body's mid-sagittal interior divided
    by its own smooth (quadratic) trend, so coil shading and partial volume drop out."""
    with np.load(path) as z:
        img, mask = z["image"].astype(np.float32), z["vertebral_bodies"]
    out = []
    for lab in range(1, 6):
        m = mask == lab
        xs = np.nonzero(m.any(axis=(0, 1)))[0]
        if len(xs) == 0:
            continue
        xc = (xs[0] + xs[-1]) // 2
        rr, cc = np.nonzero(m[:, :, xc])
        hr = int((rr.max() - rr.min()) * TEXTURE_PATCH[0] / 2)
        hc = int((cc.max() - cc.min()) * TEXTURE_PATCH[1] / 2)
        r0, c0 = int(rr.mean()), int(cc.mean())
        if hr < 4 or hc < 4:
            continue
        sl = (slice(r0 - hr, r0 + hr), slice(c0 - hc, c0 + hc), xc)
        patch, inside = img[sl], m[sl]
        if inside.mean() < 0.95 or patch[inside].mean() <= 0:
            continue
        out.append(_detrend(patch))
    return tuple(out)


def _detrend(patch: np.ndarray) -> np.ndarray:
    """Divide by the least-squares quadratic surface, then zero mean and unit variance."""
    r, c = np.mgrid[0:patch.shape[0], 0:patch.shape[1]].astype(np.float32)
    r, c = r / patch.shape[0] - 0.5, c / patch.shape[1] - 0.5
    basis = np.stack([np.ones_like(r), r, c, r * r, c * c, r * c], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(basis, patch.reshape(-1), rcond=None)
    trend = np.maximum((basis @ coef).reshape(patch.shape), 1e-3)
    rel = patch / trend - 1
    return ((rel - rel.mean()) / (rel.std() + 1e-6)).astype(np.float32)


def real_marrow_texture(rng: np.random.Generator, shape: tuple[int, int],
                        cell_mm: float) -> np.ndarray | None:
    """Zero-mean, unit-variance multiplicative marrow texture (float32, ``shape``) sampled at
    ``cell_mm`` per element from real vertebral-body interiors (1 mm data), tiled by mirrored
    patches of one subject. None without real data. Always consumes the same draws."""
    from PIL import Image

    pick, flips = rng.random(), rng.random(2)
    root = real_spine_root()
    files = _vb3_files(root) if root is not None else []
    patches = _body_patches(files[int(pick * len(files))]) if files else ()
    if not patches:
        return None
    tiles = []
    for i, p in enumerate(patches):  # every body of the subject, alternately mirrored
        p = p[::-1] if flips[0] < 0.5 else p
        tiles.append(p[:, ::-1] if (flips[1] < 0.5) ^ (i % 2 == 1) else p)
    rows = min(t.shape[0] for t in tiles)
    band = np.concatenate([t[:rows] for t in tiles], axis=1)          # 1 mm per element
    need = (int(np.ceil(shape[0] * cell_mm)) + 1, int(np.ceil(shape[1] * cell_mm)) + 1)
    reps = (-(-need[0] // band.shape[0]), -(-need[1] // band.shape[1]))
    mirrored = np.block([[band if (i + j) % 2 == 0 else band[::-1, ::-1]
                          for j in range(reps[1])] for i in range(reps[0])])
    img = Image.fromarray(np.ascontiguousarray(mirrored[:need[0], :need[1]]))
    out = np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR,
                                box=(0, 0, shape[1] * cell_mm, shape[0] * cell_mm)),
                     dtype=np.float32)
    return (out - out.mean()) / (out.std() + 1e-6)
