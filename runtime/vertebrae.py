"""Vertebral bodies from a body-probability map: instances, order, levels (numpy only).

:func:`find_vertebrae` thresholds the map, splits bodies that touch through thin bridges (erode
in-plane, label 3-D components, grow the seeds back inside the mask), drops fragments by
physical volume, orders the bodies superior -> inferior and measures each one (centroid, the
slice where it is widest, its tight box there). :func:`assign_levels` names them, counting up
from the sacrum when it is visible; :func:`relabel` lets a person correct the count.

Grid convention (the caller orients the arrays): ``(slices, rows, cols)`` with rows running
superior -> inferior and columns anterior -> posterior, as phantoms, vb3 and a standard DICOM
sagittal series (``spinefx.runtime.localise`` flips other series into it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .morphology import erode_in_plane, grow_back, label_components

#: Level names superior -> inferior (the sacral segments fuse; S1 is the lumbosacral anchor).
LEVELS: tuple[str, ...] = (tuple(f"C{i}" for i in range(2, 8))
                           + tuple(f"T{i}" for i in range(1, 13))
                           + tuple(f"L{i}" for i in range(1, 6))
                           + tuple(f"S{i}" for i in range(1, 6)))
THRESHOLD = 0.5
ERODE_MM = 2.0          # bridges thinner than 2 x this are cut (discs are >= 4 mm, bodies >= 15 mm)
MIN_BODY_MM3 = 1000.0   # a whole thoracic body is ~5000 mm3, a lumbar one ~25000 mm3
MIN_BODY_SHARE = 0.2    # ... and a body is at least this share of the median body
MERGED_SHARE = 1.5      # a component this many typical bodies large is split further
WAIST_SHARE = 0.6       # ... at a cross-section under this share of its median one
DEEP_WAIST_SHARE = 0.3  # any component is cut at a cross-section this thin (a disc bridge)
SACRAL_GAP_SHARE = 0.5  # a gap below this share of the median disc gap joins fused segments
SACRAL_GAP_MM = 3.0     # ... and below this many mm (a lumbar disc is 5-12 mm)
SACRAL_SHRINK = 0.65    # S2 is under this share of S1 (phantoms 0.4-0.6; L5/L4 is 0.7-1.2)
SACRAL_SCORE = 0.5      # a body whose mean sacrum probability reaches this is sacral
EDGE_MM = 2.0           # a body this close to the top/bottom row is cut by the field of view
WIDEST_SHARE = 0.9      # "widest": within 10% of the largest area, nearest the centroid


@dataclass
class Vertebra:
    """One body, in pixel coordinates of the (oriented) grid."""
    value: int                                 # its value in VertebraList.labels
    centroid: tuple[float, float, float]       # x (column), y (row), slice
    centroid_mm: tuple[float, float, float]    # slice, row, col axes in mm
    volume_mm3: float
    slice: int                                 # where the body's sagittal area is largest
    box: tuple[int, int, int, int]             # x0, y0, x1, y1 on `slice` (x1, y1 exclusive)
    truncated: bool = False                    # cut by the field of view (see is_truncated)
    level: str = "?"
    level_confidence: float = 0.0
    grading: dict = field(default_factory=dict)  # filled by spinefx.runtime.grading
    sacral: float | None = None                # mean sacrum probability inside the body


@dataclass
class VertebraList:
    """The bodies of one series, superior -> inferior, and how sure their level names are."""
    vertebrae: list[Vertebra]
    labels: np.ndarray                         # int16 (slices, rows, cols): Vertebra.value
    spacing_mm: tuple[float, float, float]
    level_confidence: float = 0.0
    level_reason: str = ""
    reason: str = ""                           # why the list is empty, when it is
    gaps_mm: list[float] = field(default_factory=list)  # disc gap below each body but the last
    region: tuple[slice, ...] | None = None    # a box of `labels` holding every body

    def __len__(self) -> int:
        return len(self.vertebrae)

    def mask(self, index: int) -> np.ndarray:
        """The 3-D mask (bool, grid shape) of ``vertebrae[index]``."""
        return self.labels == self.vertebrae[index].value


# ---------------------------------------------------------------------------------------------
# instances
# ---------------------------------------------------------------------------------------------
def find_vertebrae(prob: np.ndarray, spacing_mm: tuple[float, float, float],
                   image: np.ndarray | None = None, threshold: float = THRESHOLD,
                   label_levels: bool = True, sacrum: np.ndarray | None = None
                   ) -> VertebraList:
    """The vertebral bodies of a ``(slices, rows, cols)`` body-probability map (a 0/1
    ground-truth mask works too; a bool one counts as already thresholded), superior ->
    inferior, named by :func:`assign_levels`. ``spacing_mm`` = (slice, row, col) mm.
    ``sacrum``: the localiser's sacrum probability on the same grid (each body's mean goes
    into :attr:`Vertebra.sacral`). ``image`` is accepted for future intensity cues (rib heads)
    and unused today."""
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"body probability must be 3-D (slices, rows, cols), got {prob.shape}")
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))
    if prob.dtype == bool and 0 < threshold <= 1:   # a thresholded map: True is 1, False 0
        mask = prob
    else:
        mask = prob.astype(np.float32, copy=False) >= threshold
    empty = VertebraList([], np.zeros(prob.shape, dtype=np.int16), spacing)
    if not mask.any():
        empty.reason = f"no voxel reaches body probability {threshold:g}: no spine found"
        return empty
    # work inside the mask's bounding box (+1 voxel): the spine is a small part of a series
    crop = _bounding_box(mask, margin=1)
    steps = max(1, int(round(ERODE_MM / min(spacing[1], spacing[2]))))
    seeds, _ = label_components(erode_in_plane(mask[crop], steps))
    labels = grow_back(seeds, mask[crop], max_steps=4 * steps + 4)
    labels = _split_merged(labels, steps)
    offset = (int(crop[0].start), int(crop[1].start), int(crop[2].start))
    bodies = _measure(labels, spacing, offset, mask.shape)
    if _merge_side_by_side(labels, bodies):
        bodies = _measure(labels, spacing, offset, mask.shape)
    if not bodies:
        empty.reason = "only fragments smaller than a vertebral body were found: no spine found"
        return empty
    out = VertebraList([], np.zeros(prob.shape, dtype=np.int16), spacing)
    renumbered = np.zeros(int(labels.max()) + 1, dtype=np.int16)
    for new_value, body in enumerate(sorted(bodies, key=lambda b: b.centroid_mm[1]), start=1):
        renumbered[body.value] = new_value
        body.value = new_value
        out.vertebrae.append(body)
    out.labels[crop] = renumbered[labels]
    out.region = crop
    out.gaps_mm = [disc_gap(out, i) for i in range(len(out) - 1)]
    if sacrum is not None:
        _score_sacral(out, np.asarray(sacrum, dtype=np.float32))
    if label_levels:
        assign_levels(out)
    return out


def _score_sacral(vl: VertebraList, sacrum: np.ndarray) -> None:
    """Each body's mean sacrum probability (inside the region that holds every body)."""
    if sacrum.shape != vl.labels.shape:
        raise ValueError(f"sacrum map {sacrum.shape} does not match the grid {vl.labels.shape}")
    region = vl.region or (slice(None),) * 3
    labels = vl.labels[region].ravel()
    sums = np.bincount(labels, weights=sacrum[region].ravel(), minlength=len(vl) + 1)
    counts = np.bincount(labels, minlength=len(vl) + 1)
    for v in vl.vertebrae:
        v.sacral = float(sums[v.value] / max(1, counts[v.value]))


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the box around ``mask``'s voxels, ``margin`` wider each side (clipped)."""
    box = []
    for axis, size in enumerate(mask.shape):
        on = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        box.append(slice(max(int(on[0]) - margin, 0), min(int(on[-1]) + 1 + margin, size)))
    return tuple(box)


def _measure(labels: np.ndarray, spacing: tuple[float, float, float],
             offset: tuple[int, int, int], shape: tuple[int, ...]) -> list[Vertebra]:
    """One :class:`Vertebra` per component of ``labels`` (a crop at ``offset`` of a grid of
    ``shape``) large enough to be a body, in the whole grid's coordinates."""
    voxel = spacing[0] * spacing[1] * spacing[2]
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    present = np.nonzero(counts)[0]
    if len(present) == 0:
        return []
    volumes = counts[present] * voxel
    keep_from = max(MIN_BODY_MM3, MIN_BODY_SHARE * typical_size(volumes, MIN_BODY_MM3))
    bodies = []
    order = np.argsort(labels.ravel(), kind="stable")   # one pass, not one per component
    ends = np.cumsum(np.bincount(labels.ravel(), minlength=int(labels.max()) + 1))
    for value, volume in zip(present, volumes):
        if volume < keep_from:
            continue
        flat = order[ends[value - 1]:ends[value]]
        k, r, c = np.unravel_index(flat, labels.shape)
        k, r, c = k + offset[0], r + offset[1], c + offset[2]
        widest = widest_slice(np.bincount(k, minlength=shape[0]), float(k.mean()))
        on = k == widest
        box = (int(c[on].min()), int(r[on].min()), int(c[on].max()) + 1, int(r[on].max()) + 1)
        centroid = (float(c.mean()), float(r.mean()), float(k.mean()))
        bodies.append(Vertebra(
            value=int(value), centroid=centroid,
            centroid_mm=(centroid[2] * spacing[0], centroid[1] * spacing[1],
                         centroid[0] * spacing[2]),
            volume_mm3=float(volume), slice=widest, box=box,
            truncated=is_truncated(int(r.min()), int(r.max()), widest, shape, spacing)))
    return bodies


def widest_slice(areas: np.ndarray, centre: float, share: float = WIDEST_SHARE) -> int:
    """The slice where a body is widest: of the slices within ``share`` of its largest area,
    the one nearest its centroid. On thin slices a body's area is nearly flat across its
    middle, so the plain maximum can fall 15 mm lateral (real DzZ at 1 mm: L2 on slice 8, L5
    on slice 6, centroids on 22-24), and the classifier would get an off-centre slice."""
    near = np.flatnonzero(areas >= share * areas.max())
    return int(near[np.argmin(np.abs(near - centre))])


def is_truncated(row_min: int, row_max: int, widest: int, shape: tuple[int, ...],
                 spacing: tuple[float, float, float]) -> bool:
    """Whether the field of view cuts a body: its mask within :data:`EDGE_MM` of the top or
    bottom row, or widest on the first or last slice. Its heights would be those of the part
    inside the image, so a healthy body would read as a crush."""
    gap_mm = min(row_min, shape[1] - 1 - row_max) * spacing[1]
    return bool(gap_mm <= EDGE_MM or (shape[0] > 1 and widest in (0, shape[0] - 1)))


def typical_size(sizes: np.ndarray, floor: float) -> float:
    """The size of a typical body among component ``sizes``: the median of the larger half of
    those over ``floor`` (speckles and fragments must not pull it down); 0 if none is."""
    big = np.asarray(sizes, dtype=np.float64)
    big = big[big >= floor]
    if len(big) == 0:
        return 0.0
    return float(np.median(big[big >= np.median(big)]))


def _split_merged(labels: np.ndarray, steps: int) -> np.ndarray:
    """Split components far larger than the typical one (two bodies joined through a disc
    the map did not separate): erode each more and more until it falls into pieces that are
    each at least a quarter of it, then grow those back inside it."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    typical = typical_size(counts[counts > 0], 8.0 * steps ** 3)
    if typical == 0:
        return labels
    next_value = int(labels.max()) + 1
    for value in np.nonzero(counts > MERGED_SHARE * typical)[0]:
        # its own box (+1 voxel, so erosion sees the same empty border): same result, the
        # erosions and grow-back on a fraction of the grid
        region = labels[_bounding_box(labels == value, margin=1)]   # a view: written below
        piece = region == value
        for factor in (2, 3, 4):
            seeds, n = label_components(erode_in_plane(piece, factor * steps))
            big = np.bincount(seeds.ravel())[1:] >= 0.25 * MERGED_SHARE * typical / factor ** 2
            if n < 2 or big.sum() < 2:
                continue
            keep = np.r_[False, big]
            seeds = np.where(keep[seeds], seeds, 0)
            grown = grow_back(seeds, piece, max_steps=4 * factor * steps + 4)
            for j, seed_value in enumerate(np.nonzero(keep)[0]):
                region[grown == seed_value] = value if j == 0 else next_value + j - 1
            next_value += int(big.sum())
            break
        # a bridge too thick to erode away (or a piece of the split still this large): cut
        # across the spine at the waists
        values, sizes = np.unique(region[piece], return_counts=True)   # its pieces now
        for piece_value, size in zip(values, sizes):
            if size > MERGED_SHARE * typical:
                parts = int(min(4, max(2, round(size / typical))))
                next_value += _cut_at_waists(region, int(piece_value), parts, next_value)
    # two small bodies joined through a disc can be no larger than one typical (lumbar) body,
    # as thoracic pairs are: any component with a waist this deep is two bodies (fragments
    # too small to be two bodies are skipped: a map can leave dozens)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    for value in np.nonzero(counts >= 2 * MIN_BODY_SHARE * typical)[0]:
        region = labels[_bounding_box(labels == value, margin=1)]
        next_value += _cut_at_waists(region, int(value), 2, next_value, DEEP_WAIST_SHARE)
    return labels


def _cut_at_waists(region: np.ndarray, value: int, parts: int, next_value: int,
                   share: float = WAIST_SHARE) -> int:
    """Cut the component ``value`` of ``region`` into ``parts`` along its long in-plane axis,
    each cut at the narrowest cross-section (a disc is a waist between two bodies) near where
    an even split by volume would fall; only where the cross-section there is under
    ``share`` of the median one. In place; returns how many new values it used."""
    k, r, c = np.nonzero(region == value)
    pts = np.stack([r, c], axis=1).astype(np.float64)
    pts -= pts.mean(axis=0)
    axis = np.linalg.eigh(pts.T @ pts)[1][:, -1]           # the principal in-plane direction
    t = pts @ axis
    lo = float(t.min())
    bins = np.floor(t - lo).astype(int)
    profile = np.convolve(np.bincount(bins), np.ones(3) / 3.0, mode="same")
    order = np.sort(bins)
    cuts = []
    for j in range(1, parts):
        centre = order[int(j * len(order) / parts)]
        half = max(1, int(0.5 * len(profile) / parts))
        a, b = max(1, centre - half), min(len(profile) - 1, centre + half)
        if b <= a:
            continue
        at = a + int(np.argmin(profile[a:b]))
        if profile[at] < share * float(np.median(profile)):
            cuts.append(at)
    if not cuts:
        return 0
    piece = np.searchsorted(np.array(sorted(cuts)), bins, side="right")  # 0 .. len(cuts)
    new_values = np.where(piece == 0, value, next_value + piece - 1)
    region[k, r, c] = new_values
    return len(cuts)


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _merge_side_by_side(labels: np.ndarray, bodies: list[Vertebra]) -> bool:
    """Join pieces of one body that lie side by side across slices (a mask or map thin on
    one slice splits there): their boxes overlap in-plane by more than half. In place."""
    merged = False
    for i, a in enumerate(bodies):
        for b in bodies[i + 1:]:
            if b.value != a.value and _box_iou(a.box, b.box) > 0.5:
                labels[labels == b.value] = a.value
                b.value = a.value
                merged = True
    return merged


def disc_gap(vl: VertebraList, i: int) -> float:
    """The disc gap (mm) between bodies ``i`` and ``i + 1``: the shortest in-plane distance
    between their pixels on the slices around their mean centroid slice (0 where they touch;
    the centroid distance when they share no slice)."""
    a, b = vl.vertebrae[i], vl.vertebrae[i + 1]
    mid = int(round((a.centroid[2] + b.centroid[2]) / 2))
    scale = np.array(vl.spacing_mm[1:])
    best = float(np.linalg.norm(np.subtract(a.centroid_mm, b.centroid_mm)))
    rows, cols = vl.region[1:] if vl.region else (slice(None), slice(None))
    origin = np.array([rows.start or 0, cols.start or 0])
    for k in range(max(0, mid - 1), min(vl.labels.shape[0], mid + 2)):
        plane = vl.labels[k, rows, cols]    # the same pixels as the whole slice holds
        pa = (np.argwhere(plane == a.value) + origin) * scale
        pb = (np.argwhere(plane == b.value) + origin) * scale
        if len(pa) == 0 or len(pb) == 0:
            continue
        # only the facing parts matter: A's lowest and B's highest pixels along the chord
        axis = (pb.mean(0) - pa.mean(0)) / max(1e-6, float(np.linalg.norm(pb.mean(0) - pa.mean(0))))
        pa = pa[pa @ axis >= np.quantile(pa @ axis, 0.8)]
        pb = pb[pb @ axis <= np.quantile(pb @ axis, 0.2)]
        pa, pb = pa[::max(1, len(pa) // 400)], pb[::max(1, len(pb) // 400)]   # bound the cost
        # squared distances per axis summed as .sum(-1) would (x0 + x1), and the sqrt of
        # the min (sqrt is monotonic, so the same number) instead of the min of every sqrt
        d2 = (pa[:, None, 0] - pb[None, :, 0]) ** 2 + (pa[:, None, 1] - pb[None, :, 1]) ** 2
        d = np.sqrt(d2.min())
        best = min(best, float(max(0.0, d - scale.min())))   # centre-to-centre -> edge gap
    return best


# ---------------------------------------------------------------------------------------------
# levels
# ---------------------------------------------------------------------------------------------
def sacral_start(vl: VertebraList) -> int | None:
    """Index of S1 when the sacrum is visible, else None. The sacral segments are fused (a
    rudimentary disc, under :data:`SACRAL_GAP_MM` and well under the lumbar disc gaps) and
    shrink downwards, so S1 is the top of the lowest such run of bodies; a lone lowest body
    far larger than its neighbour is a sacrum labelled as one piece."""
    n = len(vl)
    if n < 3:
        return None
    gaps = np.array(vl.gaps_mm)
    median = float(np.median(gaps))
    fused = (gaps < SACRAL_GAP_MM) & (gaps < SACRAL_GAP_SHARE * median)
    if fused[-1]:
        start = n - 2
        while start > 0 and fused[start - 1]:
            start -= 1
        body = vl.vertebrae
        shrinking = body[start + 1].volume_mm3 < SACRAL_SHRINK * body[start].volume_mm3
        if start >= 2 and shrinking:   # two free bodies above (lumbar discs); S2 << S1
            return start
    last, above = vl.vertebrae[-1], vl.vertebrae[-2]
    if last.volume_mm3 > 1.8 * above.volume_mm3 and not last.truncated:
        return n - 1
    return None


def sacrum_by_look(vl: VertebraList) -> int | None:
    """Index of S1 by the localiser's sacrum map: the top of the lowest run of bodies whose
    mean sacrum probability reaches :data:`SACRAL_SCORE`, with a body above that run that does
    not; None without a map, when the lowest body is not sacral, or when every body is."""
    scores = [v.sacral for v in vl.vertebrae]
    if len(scores) < 2 or any(x is None for x in scores):
        return None
    sacral = [float(x) >= SACRAL_SCORE for x in scores]   # type: ignore[arg-type]
    if not sacral[-1]:
        return None
    start = len(sacral) - 1
    while start > 0 and sacral[start - 1]:
        start -= 1
    return start if start > 0 else None


def assign_levels(vl: VertebraList) -> VertebraList:
    """Name every body: from S1 upwards when the sacrum is visible (by the localiser's sacrum
    map, which also sees an S1 the field of view cuts: confidence 0.9 when the disc gaps agree,
    0.8 when they do not; by the gaps alone: 0.9), else lumbar-by-default with the lowest body
    as L5 (confidence 0.3, the reason says so)."""
    if not vl.vertebrae:
        vl.level_confidence, vl.level_reason = 0.0, "no vertebra found"
        return vl
    by_gaps, by_look = sacral_start(vl), sacrum_by_look(vl)
    n = len(vl)
    if by_look is not None:
        _name_from(vl, by_look, "S1", 0.9 if by_gaps == by_look else 0.8)
        vl.level_reason = (f"counted up from S1: the localiser reads bodies {by_look + 1}-{n} "
                           f"of {n} as sacrum" +
                           (", and the disc gaps agree" if by_gaps == by_look else
                            f"; the disc gaps alone would put S1 at body {by_gaps + 1}"
                            if by_gaps is not None else ""))
    elif by_gaps is not None:
        _name_from(vl, by_gaps, "S1", 0.9)
        vl.level_reason = (f"counted up from S1 (the sacrum's fused segments start at body "
                           f"{by_gaps + 1} of {n}, gap {vl.gaps_mm[by_gaps - 1]:.1f} mm above "
                           "it)")
    else:
        _name_from(vl, n - 1, "L5", 0.3)
        vl.level_reason = ("no sacrum found in the field of view and no T12/L1 landmark is "
                           "measured (rib heads are not segmented): the lowest body was taken "
                           "as L5 (lumbar-by-default); check the levels and correct them")
    return vl


def relabel(vl: VertebraList, anchor_index: int, anchor_level: str) -> VertebraList:
    """A person's correction: body ``anchor_index`` is ``anchor_level``; the others follow
    in order (confidence 1.0: the count is the user's)."""
    if not 0 <= anchor_index < len(vl):
        raise ValueError(f"there is no body {anchor_index + 1} to name: {len(vl)} were found "
                         f"(1 = the most superior .. {len(vl)})")
    level = anchor_level.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"unknown level {anchor_level!r}: expected one of C2..C7, T1..T12, "
                         "L1..L5, S1..S5")
    _name_from(vl, anchor_index, level, 1.0)
    vl.level_reason = f"set by the user: body {anchor_index + 1} of {len(vl)} is {level}"
    return vl


def _name_from(vl: VertebraList, index: int, level: str, confidence: float) -> None:
    at = LEVELS.index(level)
    for i, v in enumerate(vl.vertebrae):
        j = at + i - index
        v.level = LEVELS[j] if 0 <= j < len(LEVELS) else "?"
        v.level_confidence = confidence if 0 <= j < len(LEVELS) else 0.0
    vl.level_confidence = confidence
