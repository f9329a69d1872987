"""Benign confounders real spines have, drawn at the same rates in both classes.

:func:`draw_confounders` never sees the label nor the lesion's feature flags (the flags are
class-dependent); it draws from :data:`CONFOUNDER_RATES` per vertebral body, per disc or per
endplate, with the disc's degeneration (``spec.levels.degenerate``, itself drawn
class-independently in :mod:`spinefx.phantom.spine`) raising the Modic and osteophyte rates.
:func:`paint_confounders` paints them on each slice right after the lesion:

- haemangioma: a round, well-defined body lesion, bright on T1 and T2, with a coarse
  trabecular "polka-dot" texture (dark dots); any body, the fractured one included;
- focal fat: 1-3 small bright-T1 islands in a body's marrow;
- Modic type 1/2/3: a band of irregular depth along one or both endplates next to a disc;
- Schmorl node: a small rounded pit in an endplate filled with disc material, thin dark rim;
- osteophyte: a small bony spur (cortex rim, marrow core) at an anterior body corner.

What painting never changes: the lesion's own tissues (every confounder overwrites only normal
marrow, endplate cortex or normal soft tissue), so the lesion mask of a case is the same with
and without confounders; the vertebra mask is the fractured body's outline, which osteophytes
(spurs outside the outline) do not enter.

Old healed fractures are **not** drawn here: the ``multiple_fractures`` feature (class-dependent,
in :data:`spinefx.phantom.appearance.PROBABILITIES`) already is "another, older wedge fracture
with normal marrow"; a class-independent extra one would make that flag false for cases drawn
without it, so its rate here is 0 by design.

``variation`` scales every occurrence rate (0 = a spine without confounders, 1 = the table;
the Modic type shares are not scaled). Synthetic: these are shapes for robustness, not models
of the pathology.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import numpy as np

from . import spine
from .anatomy import Canvas, SliceGeometry
from .lesion import Lesion
from .spine import SpineSpec
from .tissues import Tissue as T
from .tissues import member_lut


def _disc_degeneration_rates() -> dict[str, tuple[float, str]]:
    """Disc degeneration is drawn in :mod:`spinefx.phantom.spine` (its owner); its rates are
    listed here by name so that the table of class-independent rates is complete."""
    by_level = getattr(spine, "DEGENERATE_RATES", None)
    other = getattr(spine, "DEGENERATE_RATE_OTHER", None)
    if by_level is None or other is None:  # TRANSITIONAL: until spine.py exposes its rates
        return {}
    rows = {f"degenerate_disc_{name}": (float(p), f"per disc below {name}: dark (desiccated), "
                                                  "narrowed nucleus (spine.DEGENERATE_RATES)")
            for name, p in by_level.items()}
    rows["degenerate_disc_other"] = (float(other), "per other non-sacral disc "
                                                   "(spine.DEGENERATE_RATE_OTHER)")
    return rows


# name -> (rate, what it is a rate of). Identical for both classes: nothing here may depend on
# the label or on a feature flag (tests/phantom/test_phantom_table.py checks it).
CONFOUNDER_RATES: dict[str, tuple[float, str]] = {
    **_disc_degeneration_rates(),
    "haemangioma": (0.05, "per vertebral body: round haemangioma, bright T1 and T2"),
    "focal_fat": (0.08, "per vertebral body: 1-3 small focal fat islands (bright T1)"),
    "modic_normal_disc": (0.04, "per non-degenerate disc: Modic change along its endplate(s)"),
    "modic_degenerate_disc": (0.35, "per degenerate disc: Modic change along its endplate(s)"),
    "modic_type1": (0.30, "share of Modic changes that are type 1 (oedema: dark T1, bright T2)"),
    "modic_type2": (0.55, "share that are type 2 (fatty: bright T1 and T2)"),
    "modic_type3": (0.15, "share that are type 3 (sclerosis: dark on both)"),
    "schmorl_node": (0.06, "per endplate next to a disc: Schmorl node"),
    "osteophyte_normal_disc": (0.05, "per anterior body corner next to a non-degenerate disc"),
    "osteophyte_degenerate_disc": (0.40, "per anterior body corner next to a degenerate disc"),
    "old_healed_fracture": (0.0, "not drawn: the class-dependent multiple_fractures feature "
                                 "is the old fracture (an extra one would falsify that flag)"),
}
MODIC_TYPES = (T.MODIC1, T.MODIC2, T.MODIC3)
# Modic disc involvement: upper endplate only, lower only, both.
MODIC_SIDES = (0.25, 0.25, 0.5)
# Normal soft tissue a spur may displace (never a lesion tissue, a vessel or bone).
SPUR_ROOM = member_lut(np.array([T.FAT, T.MUSCLE, T.VISCERA, T.MEDIASTINUM, T.ANNULUS,
                                 T.LIGAMENT]))
ENDPLATE = member_lut(np.array([T.CORTEX, T.MARROW]))
FORCEABLE = ("haemangioma", "focal_fat", "modic", "schmorl_node", "osteophyte")


@dataclass(frozen=True)
class Blob:
    """A round marrow lesion in one body (haemangioma or a focal fat island)."""
    tissue: int
    level: int
    du: float      # centre below the body's mid-height, fraction of its height
    vn: float      # AP centre, fraction of the half-depth (-1 anterior .. 1 posterior)
    x: float       # mm, LR centre
    r: float       # mm, radius


@dataclass(frozen=True)
class EndplateChange:
    """A Modic band or a Schmorl node along one endplate of one body."""
    tissue: int
    level: int
    top: bool      # the body's upper endplate (else the lower one)
    x: float       # mm, LR centre
    rx: float      # mm, LR half-extent
    vn: float      # AP centre, fraction of the half-depth
    span: float    # AP half-extent, fraction of the half-depth
    depth: float   # mm into the body


@dataclass(frozen=True)
class Osteophyte:
    """A bony spur at the anterior corner of one body, pointing towards the disc."""
    level: int
    top: bool      # at the upper endplate's corner (spur grows upwards)
    x: float
    rx: float
    length: float  # mm, anterior protrusion at the spur's LR centre
    thick: float   # mm, height of the spur's base
    beak: float    # mm, how far its tip curves towards the disc


@dataclass
class Confounders:
    """The confounders of one case (class-independent draws only)."""
    items: list[Blob | EndplateChange | Osteophyte] = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [item for item in self.items if isinstance(item, kind)]


def rate(name: str, variation: float = 1.0) -> float:
    return float(min(1.0, CONFOUNDER_RATES[name][0] * variation))


def draw_confounders(rng: np.random.Generator, spec: SpineSpec, lesion: Lesion,
                     variation: float = 1.0, force: Mapping[str, str] | None = None
                     ) -> Confounders:
    """Draw the case's confounders; never looks at the label or the lesion's flags.

    Always consumes the same random numbers. ``force`` maps a name of :data:`FORCEABLE` to a
    level name: that confounder occurs there (for a disc-side one: at the disc below the level,
    on its upper endplate / corner).
    """
    del lesion  # part of the hook's signature; its flags are class-dependent, so unused
    if not np.isfinite(variation) or variation < 0:
        raise ValueError(f"variation must be a finite number >= 0, got {variation!r}")
    lv = spec.levels
    n = len(lv.names)
    forced = {}
    for kind, name in (force or {}).items():
        if kind not in FORCEABLE:
            raise KeyError(f"unknown confounder {kind!r}; forceable: {', '.join(FORCEABLE)}")
        forced[kind] = lv.index(name)
    conf = Confounders()
    conf.items += _draw_blobs(rng, n, variation, forced)
    disc_ok = ~lv.sacral[:-1]  # the vestigial sacral discs carry no disc confounders
    degenerate = lv.degenerate[:-1]
    conf.items += _draw_modic(rng, disc_ok, degenerate, variation, forced.get("modic"))
    conf.items += _draw_schmorl(rng, disc_ok, variation, forced.get("schmorl_node"))
    conf.items += _draw_osteophytes(rng, disc_ok, degenerate, variation, forced.get("osteophyte"))
    return conf


def _draw_blobs(rng: np.random.Generator, n: int, variation: float,
                forced: dict[str, int]) -> list[Blob]:
    hit_h, hit_f = rng.random(n), rng.random(n)
    hp = rng.random((n, 4))
    n_islands = rng.integers(1, 4, n)
    fp = rng.random((n, 3, 4))
    out = []
    for i in range(n):
        if hit_h[i] < rate("haemangioma", variation) or forced.get("haemangioma") == i:
            a = hp[i]
            out.append(Blob(int(T.HAEMANGIOMA), i, -0.22 + 0.44 * a[0], -0.35 + 0.6 * a[1],
                            -7 + 14 * a[2], 4.0 + 4.0 * a[3]))
        if hit_f[i] < rate("focal_fat", variation) or forced.get("focal_fat") == i:
            for a in fp[i, :n_islands[i]]:
                out.append(Blob(int(T.FOCAL_FAT), i, -0.3 + 0.6 * a[0], -0.5 + 0.9 * a[1],
                                -10 + 20 * a[2], 1.5 + 2.5 * a[3]))
    return out


def _draw_modic(rng: np.random.Generator, disc_ok: np.ndarray, degenerate: np.ndarray,
                variation: float, forced: int | None) -> list[EndplateChange]:
    nd = len(disc_ok)
    hit, kind, side = rng.random(nd), rng.random(nd), rng.random(nd)
    p = rng.random((nd, 2, 5))
    shares = np.cumsum([CONFOUNDER_RATES[f"modic_type{t}"][0] for t in (1, 2, 3)])
    sides = np.cumsum(MODIC_SIDES)
    out = []
    for j in np.nonzero(disc_ok)[0]:
        p_disc = rate("modic_degenerate_disc" if degenerate[j] else "modic_normal_disc", variation)
        if not (hit[j] < p_disc or forced == j):
            continue
        tissue = int(MODIC_TYPES[min(int(np.searchsorted(shares, kind[j] * shares[-1])), 2)])
        which = int(np.searchsorted(sides, side[j] * sides[-1]))  # 0 upper, 1 lower, 2 both
        # the disc's upper endplate is body j's lower one; its lower one is body j+1's upper
        for s, (level, top) in enumerate(((int(j), False), (int(j) + 1, True))):
            if which in (s, 2):
                a = p[j, s]
                out.append(EndplateChange(tissue, level, top, -5 + 10 * a[0], 9 + 8 * a[1],
                                          -0.3 + 0.6 * a[2], 0.45 + 0.4 * a[3], 2.0 + 5.0 * a[4]))
    return out


def _draw_schmorl(rng: np.random.Generator, disc_ok: np.ndarray, variation: float,
                  forced: int | None) -> list[EndplateChange]:
    nd = len(disc_ok)
    hit = rng.random((nd, 2))
    p = rng.random((nd, 2, 4))
    out = []
    for j in np.nonzero(disc_ok)[0]:
        for s, (level, top) in enumerate(((int(j), False), (int(j) + 1, True))):
            if hit[j, s] < rate("schmorl_node", variation) or (forced == j and s == 0):
                a = p[j, s]
                r = 2.0 + 2.0 * a[2]
                out.append(EndplateChange(int(T.SCHMORL), level, top, -8 + 16 * a[0], r,
                                          -0.4 + 0.7 * a[1], r, r * (0.8 + 0.6 * a[3])))
    return out


def _draw_osteophytes(rng: np.random.Generator, disc_ok: np.ndarray, degenerate: np.ndarray,
                      variation: float, forced: int | None) -> list[Osteophyte]:
    nd = len(disc_ok)
    hit = rng.random((nd, 2))
    p = rng.random((nd, 2, 5))
    out = []
    for j in np.nonzero(disc_ok)[0]:
        p_corner = rate("osteophyte_degenerate_disc" if degenerate[j]
                        else "osteophyte_normal_disc", variation)
        for s, (level, top) in enumerate(((int(j), False), (int(j) + 1, True))):
            if hit[j, s] < p_corner or (forced == j and s == 0):
                a = p[j, s]
                out.append(Osteophyte(level, top, -6 + 12 * a[0], 8 + 8 * a[1], 3.0 + 4.0 * a[2],
                                      2.0 + 2.0 * a[3], 0.5 + 1.5 * a[4]))
    return out


def paint_confounders(strip: np.ndarray, cv: Canvas, geo: SliceGeometry,
                      conf: Confounders) -> None:
    """Paint the confounders onto one slice's strip labels (in place), each on a small block."""
    for item in conf.items:
        if abs(geo.x - item.x) >= (item.r if isinstance(item, Blob) else item.rx):
            continue  # the slice misses it
        if geo.xf[item.level] <= 0.3:
            continue  # ... or misses its body
        if isinstance(item, Blob):
            _paint_blob(strip, cv, geo, item)
        elif isinstance(item, EndplateChange):
            _paint_endplate(strip, cv, geo, item)
        else:
            _paint_osteophyte(strip, cv, geo, item)


def _wall_centre(geo: SliceGeometry, level: int, vn: float) -> tuple[float, float]:
    """AP position of ``vn`` (fraction of the half-depth) on this slice, and the half-depth."""
    va, vb = geo.v_front[level], geo.v_back[level]
    return (va + vb) / 2 + vn * (vb - va) / 2, (vb - va) / 2


def _paint_blob(strip: np.ndarray, cv: Canvas, geo: SliceGeometry, b: Blob) -> None:
    lv = cv.spec.levels
    rr = float(np.sqrt(b.r ** 2 - (geo.x - b.x) ** 2))
    uc = lv.u_mid[b.level] + b.du * lv.height[b.level]
    vc, _ = _wall_centre(geo, b.level, b.vn)
    rg = cv.region(vc - rr, vc + rr, uc - rr, uc + rr)
    lab = rg.labels(strip)
    du, dv = rg.u - uc, rg.v - vc
    ball = (du * du + dv * dv < rr * rr) & (rg.k == b.level) & (lab == T.MARROW)
    lab[ball] = b.tissue
    if b.tissue == T.HAEMANGIOMA:  # coarse trabeculae: dark dots on a ~3 mm lattice
        dots = np.sin(1.9 * rg.u + b.x) * np.sin(1.9 * rg.v + geo.x) > 0.85
        lab[ball & dots] = T.CORTEX


def _endplate_distance(rg, top: bool) -> np.ndarray:
    """mm from the (deformed) endplate into the body, for each pixel of the block."""
    return rg.u - (rg.cu - rg.hu) if top else (rg.cu + rg.hu) - rg.u


def _paint_endplate(strip: np.ndarray, cv: Canvas, geo: SliceGeometry, e: EndplateChange) -> None:
    lv = cv.spec.levels
    i = e.level
    rg = cv.region(geo.v_front[i] - 1, geo.v_back[i] + 1, lv.u_top[i] - 1, lv.u_bot[i] + 1)
    lab = rg.labels(strip)
    own = rg.k == i
    dist = _endplate_distance(rg, e.top)
    vc, half = _wall_centre(geo, i, e.vn)
    g = float(np.sqrt(1 - ((geo.x - e.x) / e.rx) ** 2))  # LR profile
    if e.tissue == T.SCHMORL:  # a hemispherical pit (its radius is the LR half-extent)
        rr = e.rx * g
        rho = (dist / (e.depth * g)) ** 2 + ((rg.v - vc) / rr) ** 2
        lab[own & (rho < (1 + 0.7 / rr) ** 2) & (lab == T.MARROW)] = T.CORTEX  # sclerotic rim
        lab[own & (rho < 1) & ENDPLATE[lab]] = T.SCHMORL
        return
    ap = np.clip(1 - ((rg.v - vc) / (e.span * half)) ** 2, 0, 1)
    wobble = 0.8 * np.sin(rg.v / 2.3 + e.x)  # irregular lower edge, as real bands are
    lab[own & (lab == T.MARROW) & (dist < e.depth * g * np.sqrt(ap) + wobble)] = e.tissue


def _paint_osteophyte(strip: np.ndarray, cv: Canvas, geo: SliceGeometry, o: Osteophyte) -> None:
    lv = cv.spec.levels
    i = o.level
    g = float(np.sqrt(1 - ((geo.x - o.x) / o.rx) ** 2))
    length = o.length * g
    if length < 0.8:
        return
    # the anterior corner of the deformed endplate (wedging lowers it at the anterior wall)
    ue = lv.u_top[i] + lv.wedge_top[i] if o.top else lv.u_bot[i] - lv.wedge_bot[i]
    toward_disc = -1.0 if o.top else 1.0
    va = geo.v_front[i]
    reach = length + o.thick + o.beak
    rg = cv.region(va - reach, va + 2, ue - reach, ue + reach)
    lab = rg.labels(strip)
    out = np.clip((va - rg.v) / length, 0, 2)  # 0 at the wall, 1 at the tip
    uc = ue - toward_disc * 0.3 * o.thick + toward_disc * o.beak * out ** 2
    rho = ((rg.u - uc) / (o.thick / 2 * (1.2 - 0.5 * out))) ** 2 + ((rg.v - va + 0.3) / length) ** 2
    spur = (rho < 1) & (rg.v < va + 0.5) & SPUR_ROOM[lab]
    lab[spur] = T.CORTEX
    lab[spur & (rho < 0.3)] = T.MARROW


def confounder_table_markdown() -> str:
    """:data:`CONFOUNDER_RATES` as a markdown table (for the README and cohort.json)."""
    lines = ["| confounder | rate (both classes) | of what |", "|---|---|---|"]
    for name, (value, what) in CONFOUNDER_RATES.items():
        lines.append(f"| {name} | {value:.2f} | {what} |")
    return "\n".join(lines)


def item_parameters(item: Blob | EndplateChange | Osteophyte) -> dict[str, float]:
    """Every numeric parameter of one confounder (for the class-independence checks)."""
    return {f.name: float(getattr(item, f.name)) for f in fields(item)}
