"""Training data for the vertebral-body localiser: phantom v2 slices and vb3 real slices.

Every example is one sagittal slice taken through the runtime's own preprocessing
(:func:`spinefx.runtime.segmentation.resample_slices` / ``normalise_slices``), then augmented
so the network meets any weighting: random gamma, inversion, a random intensity curve, noise,
a smooth bias field, scale jitter and (real data) slab averaging for thick slices.

Supervision weights: phantom masks label every body (T1-S3), so every pixel counts. vb3 labels
only L1-L5; T12 above and the sacrum below are in the image but unlabelled, so a pixel counts
only inside the column's labelled band (from L1's top to L5's bottom, plus a few pixels of
disc): the network is never taught that T12 or S1 is background.

A second target, the sacrum (S1 and the fused segments below it), lets the runtime start the
level count at S1 by the sacrum's look rather than by the gaps alone (which fail when the field
of view cuts S1): phantoms label it everywhere; on vb3 it counts inside the labelled band only
(L1-L5 there, so no sacrum), never below it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinefx.runtime.segmentation import grid_shape, normalise_slices, resample_slices

VB3_TRAIN = tuple(range(1, 45))      # subjects 01-44
VB3_VALID = tuple(range(45, 55))     # subjects 45-54: validation only, never trained on
BAND_MARGIN_PX = 3                   # disc pixels kept above L1 / below L5 (1 mm grid)
PERCENTILES = (1.0, 99.0)
# A phantom has one fractured body among ~10; without focus the network rarely sees one and
# learns to smooth fractures back to normal height (grading then misses them).
FOCUS_P = 0.4
FOV_CUT_P = 0.3  # examples whose field of view ends at a random row (see _cut_field_of_view)
SACRUM_P = 0.3  # the sacrum is in few crops otherwise (~0.5% of the pixels)
# The localiser fills a fracture's endplate depression back in (the probability stays > 0.9
# where the drawn body is 5-8 mm lower), so grading measures the neighbours' height there.
# ``edge_weight`` > 1 weighs the pixels within EDGE_PX of the fractured body's outline
# (inside and out, so the depression too) that many times in the loss; 1 = off.
EDGE_PX = 3


@dataclass
class SliceSource:
    """One volume to draw slices from: image and mask (slices, rows, cols), the 2-D weight of
    every slice (rows, cols) and the in-plane spacing (row, col) mm."""
    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    spacing: tuple[float, float]
    name: str
    slab: bool = False               # average neighbouring slices (thin-slice real data)
    focus: np.ndarray | None = None  # the fractured body (phantoms): crops centre on it often
    sacrum: np.ndarray | None = None          # the sacral bodies (slices, rows, cols)
    sacrum_weight: np.ndarray | None = None   # (rows, cols): where the sacrum label counts
    edge_weight: float = 1.0                  # loss weight near the fracture's outline


def labelled_band(mask: np.ndarray, margin: int = BAND_MARGIN_PX) -> np.ndarray:
    """(rows, cols) float32: 1 between the first and last labelled row of each column (over all
    slices) +- ``margin``; columns with no label take the volume's overall band."""
    hit = np.asarray(np.any(mask, axis=0))      # (rows, cols)
    rows = np.arange(mask.shape[1])[:, None]
    any_rows = np.nonzero(hit.any(axis=1))[0]
    top_all, bottom_all = int(any_rows[0]), int(any_rows[-1])
    has = hit.any(axis=0)
    top = np.where(has, np.argmax(hit, axis=0), top_all)
    bottom = np.where(has, mask.shape[1] - 1 - np.argmax(hit[::-1], axis=0), bottom_all)
    band = (rows >= top[None, :] - margin) & (rows <= bottom[None, :] + margin)
    return band.astype(np.float32)


def load_real(path: Path, key: str = "vertebral_bodies") -> tuple[np.ndarray, np.ndarray]:
    """A real-spine npz as (slices, rows, cols): image float32, binary body mask uint8."""
    with np.load(path, allow_pickle=False) as data:
        image = np.ascontiguousarray(data["image"].transpose(2, 0, 1))
        mask = np.ascontiguousarray((data[key] > 0).transpose(2, 0, 1)).astype(np.uint8)
    return image, mask


def vb3_sources(root: Path, subjects: tuple[int, ...],
                sacrum_model: Path | None = None) -> list[SliceSource]:
    """The vb3 subjects as sources. Their L1-L5 are labelled, so inside that band nothing is
    sacrum. Below L5 only the sacrum lies, unlabelled: without ``sacrum_model`` the sacrum
    channel counts inside the band only; with it (a localiser folder), that model's bodies
    below the band are taken as the sacrum (anatomy, not a guess: nothing else lies below
    L5) and the channel counts everywhere (above L1 nothing is sacrum either)."""
    out = []
    for n in subjects:
        image, mask = load_real(root / "vb3" / f"vb3_{n:02d}.npz")
        band = labelled_band(mask)
        sacrum, sacrum_weight = np.zeros_like(mask), band
        if sacrum_model is not None:
            sacrum, sacrum_weight = _sacrum_below_l5(image, mask, band, sacrum_model)
        out.append(SliceSource(image, mask, band, (1.0, 1.0), f"vb3_{n:02d}", slab=True,
                               sacrum=sacrum, sacrum_weight=sacrum_weight))
    return out


def _sacrum_below_l5(image: np.ndarray, mask: np.ndarray, band: np.ndarray,
                     model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(sacrum mask (slices, rows, cols), weight (rows, cols) of ones): the bodies the
    localiser in ``model_dir`` finds wholly below each column's labelled band."""
    from spinefx.runtime.segmentation import segment_bodies

    body = segment_bodies(image, (1.0, 1.0, 1.0), model_dir) >= 0.5
    rows = np.arange(mask.shape[1])[:, None]
    bottom = mask.shape[1] - 1 - np.argmax(band[::-1], axis=0)     # last band row per column
    below = rows > bottom[None, :]
    return (body & below[None]).astype(np.uint8), np.ones(mask.shape[1:], np.float32)


def phantom_sources(seeds: range, variation: float = 1.0, edge_weight: float = 1.0
                    ) -> list[SliceSource]:
    """T1 and T2 series of each phantom with their exact body masks (SYNTHETIC);
    ``edge_weight``: see :data:`EDGE_PX`."""
    from spinefx.phantom import render_case

    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        label = "malignant" if rng.random() < 0.3 else "benign"
        case = render_case(int(seed), label, variation=variation,
                           t2_variant=str(rng.choice(["T2", "T2_FS", "STIR"])),
                           t1_variant=str(rng.choice(["T1", "T1_RED"])))
        for series, image, spacing in (("t1", case.t1, case.pixel_spacing),
                                       ("t2", case.t2, case.t2_pixel_spacing)):
            masks = case.masks(series)
            mask = (masks["bodies"] > 0).astype(np.uint8)
            sacral = [i + 1 for i, name in enumerate(case.level_names) if name.startswith("S")]
            out.append(SliceSource(np.asarray(image, np.float32), mask,
                                   np.ones(mask.shape[1:], np.float32),
                                   (float(spacing[0]), float(spacing[1])),
                                   f"phantom_{seed}_{series}",
                                   focus=((masks["vertebra"] > 0) & (mask > 0)).astype(np.uint8),
                                   sacrum=np.isin(masks["bodies"], sacral).astype(np.uint8),
                                   sacrum_weight=np.ones(mask.shape[1:], np.float32),
                                   edge_weight=edge_weight))
    return out


def fracture_edge(focus: np.ndarray, px: int = EDGE_PX) -> np.ndarray:
    """(rows, cols) bool: within ``px`` pixels of the outline of ``focus`` (one slice)."""
    from scipy import ndimage

    body = focus > 0
    if not body.any():
        return body
    grown = ndimage.binary_dilation(body, iterations=px)
    shrunk = ndimage.binary_erosion(body, iterations=px)
    return grown & ~shrunk


# ---------------------------------------------------------------------------------------------
# one augmented example
# ---------------------------------------------------------------------------------------------
def _pick_slice(rng: np.random.Generator, src: SliceSource
                ) -> tuple[int, int, np.ndarray | None]:
    """The slices ``lo:hi`` of one example (several: a thick slab of thin real slices) and
    the mask its crop centres on: the fracture (:data:`FOCUS_P` of the phantom examples), the
    sacrum (:data:`SACRUM_P`, where labelled), else None (any body)."""
    for target, share in ((src.focus, FOCUS_P), (src.sacrum, SACRUM_P)):
        if target is None or rng.random() >= share:
            continue
        having = np.nonzero(target.any(axis=(1, 2)))[0]
        if len(having):
            i = int(rng.choice(having))
            return i, i + 1, target
    has_body = np.nonzero(src.mask.any(axis=(1, 2)))[0]
    if len(has_body) and rng.random() < 0.85:
        i = int(rng.choice(has_body))
    else:
        i = int(rng.integers(src.image.shape[0]))
    k = int(rng.choice([1, 1, 2, 3, 4])) if src.slab else 1
    lo = max(0, i - k // 2)
    return lo, min(src.image.shape[0], lo + k), None


def _planes(src: SliceSource, lo: int, hi: int, centre_on: np.ndarray | None) -> np.ndarray:
    """(6, rows, cols): image, body mask, body weight, sacrum mask, sacrum weight, crop centre
    mask, each the mean over slices ``lo:hi``. No sacrum labels: mask and weight 0."""
    def mean(a: np.ndarray) -> np.ndarray:
        return a[lo:hi].astype(np.float32).mean(axis=0)

    mask = (mean(src.mask) >= 0.5).astype(np.float32)
    zeros = np.zeros_like(mask)
    sacrum = zeros if src.sacrum is None else (mean(src.sacrum) >= 0.5).astype(np.float32)
    sacrum_weight = zeros if src.sacrum_weight is None else src.sacrum_weight
    centre = mask if centre_on is None else mean(centre_on)
    weight = src.weight
    if src.edge_weight != 1.0 and src.focus is not None:
        edge = fracture_edge(mean(src.focus) >= 0.5)
        weight = np.where(edge & (src.weight > 0), src.edge_weight * src.weight, src.weight)
    return np.stack([mean(src.image), mask, weight, sacrum, sacrum_weight, centre])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], amplitude: float
                  ) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, (1, 4, 4)).astype(np.float32)
    scale = (4 / shape[0], 4 / shape[1])
    return np.exp(amplitude * resample_slices(coarse, scale, shape)[0])


def augment_intensity(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Contrast-agnostic intensity randomisation of a normalised slice; renormalised after."""
    x = np.clip(x, 0.0, 1.0)
    if rng.random() < 0.25:          # a random (not monotone) intensity curve: any weighting
        knots = np.sort(rng.random(3))
        curve = rng.random(5)
        x = np.interp(x, np.concatenate([[0.0], knots, [1.0]]), curve).astype(np.float32)
    elif rng.random() < 0.15:
        x = 1.0 - x
    if rng.random() < 0.6:
        x = np.clip(x, 0.0, 1.0) ** float(np.exp(rng.normal(0.0, 0.4)))
    if rng.random() < 0.6:
        x = x * _smooth_field(rng, x.shape, float(rng.uniform(0.1, 0.4)))
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.01, 0.08), x.shape).astype(np.float32)
    return normalise_slices(x[None].astype(np.float32), *PERCENTILES)[0]


def _crop(rng: np.random.Generator, arrays: list[np.ndarray], mask: np.ndarray, size: int
          ) -> list[np.ndarray]:
    rows, cols = mask.shape
    pos = np.argwhere(mask > 0)
    if len(pos) and rng.random() < 0.8:
        centre = pos[rng.integers(len(pos))] + rng.integers(-size // 4, size // 4 + 1, 2)
    else:
        centre = np.array([rng.integers(rows), rng.integers(cols)])
    r0, c0 = int(centre[0]) - size // 2, int(centre[1]) - size // 2
    out = []
    for a in arrays:
        canvas = np.zeros((size, size), np.float32)
        rs, cs = max(0, r0), max(0, c0)
        re, ce = min(rows, r0 + size), min(cols, c0 + size)
        if re > rs and ce > cs:
            canvas[rs - r0:re - r0, cs - c0:ce - c0] = a[rs:re, cs:ce]
        out.append(canvas)
    return out


def _cut_field_of_view(rng: np.random.Generator, x: np.ndarray, binary: list[np.ndarray]
                       ) -> None:
    """End the field of view at a random row (in place): below it, what the runtime's zero
    padding shows, with no body and no sacrum there (counted). vb3's S1 always sits at its
    image's bottom edge; without this the sacrum channel learns "the lowest body at the edge
    is sacral" and reads a lumbar body the field of view cuts as S1."""
    rows = x.shape[0]
    cut = int(rng.integers(int(0.4 * rows), rows))
    x[cut:] = 0.0
    body, body_w, sacrum, sacrum_w, centre = binary
    body[cut:], sacrum[cut:], centre[cut:] = 0.0, 0.0, 0.0
    body_w[cut:], sacrum_w[cut:] = 1.0, 1.0


def draw_example(rng: np.random.Generator, src: SliceSource, size: int, pixel_mm: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (size, size), target (2, size, size), weight (2, size, size)), float32, from one
    random slice of ``src``; channel 0 of target/weight is the body, channel 1 the sacrum."""
    lo, hi, centre_on = _pick_slice(rng, src)
    planes = _planes(src, lo, hi, centre_on)
    jitter = float(np.exp(rng.uniform(np.log(0.85), np.log(1.18))))
    spacing = (src.spacing[0] * jitter, src.spacing[1] * jitter)
    shape = grid_shape(planes.shape[1:], spacing, pixel_mm)
    scale = (pixel_mm / spacing[0], pixel_mm / spacing[1])
    stack = resample_slices(planes, scale, shape)
    x = normalise_slices(stack[:1], *PERCENTILES)[0]
    x = augment_intensity(rng, x)
    binary = [(stack[i] >= 0.5).astype(np.float32) for i in range(1, 6)]
    # the body weight keeps its size (fracture edges: see EDGE_PX); 0/1 weights stay 0/1
    binary[1] = np.where(stack[2] >= 0.5, np.maximum(np.rint(stack[2]), 1.0),
                         0.0).astype(np.float32)
    if rng.random() < FOV_CUT_P:
        _cut_field_of_view(rng, x, binary)
    cropped = _crop(rng, [x, *binary[:4]], binary[4], size)
    if rng.random() < 0.3:           # anterior to the right: some viewers store it so
        cropped = [a[:, ::-1] for a in cropped]
    x, body, body_w, sacrum, sacrum_w = cropped
    return x, np.stack([body, sacrum]), np.stack([body_w, sacrum_w])


def draw_batch(rng: np.random.Generator, groups: list[list[SliceSource]],
               group_p: list[float], batch: int, size: int, pixel_mm: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch: images (B, 1, size, size), targets and weights (B, 2, size, size); each
    example's source group drawn with ``group_p``."""
    xs, ts, ws = [], [], []
    for _ in range(batch):
        group = groups[int(rng.choice(len(groups), p=group_p))]
        x, t, w = draw_example(rng, group[int(rng.integers(len(group)))], size, pixel_mm)
        xs.append(x)
        ts.append(t)
        ws.append(w)
    return (np.ascontiguousarray(np.stack(xs)[:, None]), np.ascontiguousarray(np.stack(ts)),
            np.ascontiguousarray(np.stack(ws)))


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def dice(prob: np.ndarray, truth: np.ndarray, weight: np.ndarray | None = None,
         threshold: float = 0.5) -> float:
    """Dice of ``prob >= threshold`` vs ``truth``, counted where ``weight`` (broadcast) is set."""
    pred = prob >= threshold
    ref = truth > 0
    if weight is not None:
        keep = np.broadcast_to(weight > 0, ref.shape)
        pred, ref = pred & keep, ref & keep
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total
