"""The model input, built once for training, export and inference alike.

As in Yeh et al. 2022: the lesion slice ``k`` on the T1 grid and its neighbours ``k-1``,
``k+1``, on T1 and on the matched T2 = 6 channels, cropped to a square ROI around the vertebral
body and resized to ``S x S``. Every parameter sits in :class:`PreprocessConfig`, which is saved
with each model so training and the runtime can never disagree.

Intensity normalisation (per sequence, deterministic): the 1st and 99th percentiles of the
three slices' pixels *inside the ROI* map to 0 and 1, values are clipped to [0, 1]. MR signal
has no absolute unit and scanners scale it differently; percentiles inside the ROI depend only
on the tissue there, and the same scaling for the three slices of a sequence keeps their
relative brightness. Padding outside the image is 0 (the low percentile: background).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from PIL import Image

from .errors import ConfigError, RoiError, SpineFXWarning
from .matching import AlignedPair

Box = tuple[float, float, float, float]
#: a box side may be at most this many times the image's larger dimension (ROIs that cross the
#: edge are padded, but a crop is allocated at the box's size)
MAX_BOX_FACTOR = 4  # x0, y0, x1, y1 in T1 pixels (x = column, y = row)


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 224           # S: the network input is (6, S, S)
    roi_margin: float = 0.15        # added on each side, as a fraction of the box's longer side
    default_size_mm: float = 50.0   # box side when only a centre point is given (~ a lumbar body)
    percentile_low: float = 1.0
    percentile_high: float = 99.0
    neighbours: int = 1             # slices each side of the lesion slice (paper: 1)
    version: int = 1                # bump when the meaning of any field changes

    @property
    def n_channels(self) -> int:
        return 2 * (2 * self.neighbours + 1)

    @property
    def channel_names(self) -> tuple[str, ...]:
        offsets = [f"k{d:+d}" if d else "k" for d in range(-self.neighbours, self.neighbours + 1)]
        return tuple(f"{seq}[{o}]" for seq in ("T1", "T2") for o in offsets)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown preprocessing field(s) {sorted(unknown)}: this model was "
                             "saved by a newer spinefx; upgrade to use it")
        return cls(**data)


@dataclass
class ModelInput:
    """A preprocessed case: the array the network sees and how it was made."""
    array: np.ndarray                      # float32 (6, S, S)
    roi: tuple[int, int, int, int]         # square crop in T1 pixels, x1/y1 exclusive
    slices: tuple[int, ...]                # T1 slice indices used (after edge replication)
    intensity_ranges: dict[str, tuple[float, float]]
    config: PreprocessConfig
    notes: list[str] = field(default_factory=list)
    t2_slices: tuple[int, ...] = ()        # T1-grid slices whose T2 was used (a neighbour
                                           # without a T2 partner falls back to the lesion slice)


# ---------------------------------------------------------------------------------------------
# ROI
# ---------------------------------------------------------------------------------------------
def box_from_center(center: tuple[float, float], size_mm: float,
                    pixel_spacing: tuple[float, float]) -> Box:
    """A box of ``size_mm`` x ``size_mm`` centred on pixel ``center`` = (column x, row y).

    Boxes use edge coordinates (pixel ``i`` spans ``[i, i + 1)``, x1/y1 exclusive), so the
    centre of pixel (x, y) is (x + 0.5, y + 0.5): a clicked pixel ends up in the middle."""
    if not size_mm > 0:
        raise RoiError(f"box size must be positive, got {size_mm} mm")
    hx = size_mm / 2 / pixel_spacing[1]
    hy = size_mm / 2 / pixel_spacing[0]
    x, y = center[0] + 0.5, center[1] + 0.5
    return (x - hx, y - hy, x + hx, y + hy)


def square_roi(box: Box, margin: float) -> tuple[int, int, int, int]:
    """The smallest square around ``box`` (as in the paper), grown by ``margin`` x its longer
    side on every side so the cortex, endplates and posterior wall stay in view. Integer pixel
    bounds, x1/y1 exclusive; may extend past the image (the crop pads)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise RoiError(f"box {box} is empty: need x0 < x1 and y0 < y1")
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = max(int(round(side)), 2)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return (left, top, left + side, top + side)


def crop(image: np.ndarray, roi: tuple[int, int, int, int], fill: float = np.nan) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with ``fill`` where the ROI lies past the image edge."""
    x0, y0, x1, y1 = roi
    h, w = image.shape
    out = np.full((y1 - y0, x1 - x0), fill, dtype=np.float32)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased bilinear resize to ``size x size`` (Pillow, float32, deterministic)."""
    if image.shape == (size, size):
        return image.astype(np.float32, copy=True)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def normalise(crops: np.ndarray, low: float, high: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Percentile scaling of a sequence's crops (NaN = padding) to [0, 1]; padding -> 0."""
    values = crops[np.isfinite(crops)]
    if values.size == 0:
        raise RoiError("the ROI lies entirely outside the image")
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        raise RoiError("the ROI has no contrast (constant intensity): wrong slice, box or image?")
    out = np.clip((crops - lo) / (hi - lo), 0.0, 1.0)
    return np.nan_to_num(out, nan=0.0).astype(np.float32), (float(lo), float(hi))


# ---------------------------------------------------------------------------------------------
# Six channels
# ---------------------------------------------------------------------------------------------
def neighbour_slices(index: int, n_slices: int, neighbours: int = 1) -> tuple[list[int], list[str]]:
    """Slice indices ``index-n .. index+n``; past the ends the nearest slice is replicated."""
    if not 0 <= index < n_slices:
        raise RoiError(f"lesion slice {index} is outside the series (0..{n_slices - 1})")
    wanted = range(index - neighbours, index + neighbours + 1)
    picked = [min(max(i, 0), n_slices - 1) for i in wanted]
    notes = [f"slice {i} does not exist (series has {n_slices}); replicated slice {p}"
             for i, p in zip(wanted, picked) if i != p]
    return picked, notes


def build_six_channel(pair: AlignedPair, slice_index: int, box: Box | None = None,
                      center: tuple[float, float] | None = None, size_mm: float | None = None,
                      config: PreprocessConfig = PreprocessConfig()) -> ModelInput:
    """The paper's input for the lesion at T1 slice ``slice_index``.

    ``pair`` is T1 with its T2 already on the T1 grid (:func:`spinefx.runtime.align_pair`:
    aligned once per T1/T2 choice, never again here). Give the vertebral body as ``box`` =
    (x0, y0, x1, y1) T1 pixels, or as ``center`` = (x, y) with ``size_mm`` (default
    ``config.default_size_mm``). Edge slices replicate their neighbour with a
    :class:`SpineFXWarning`.
    """
    t1, t2 = pair.t1, pair.t2
    if (box is None) == (center is None):
        raise RoiError("give either a box (x0, y0, x1, y1) or a centre point, not both/neither")
    if box is None:
        assert center is not None  # exactly one of box / center, checked above
        box = box_from_center(center, size_mm or config.default_size_mm, t1.pixel_spacing)
    h, w = t1.data.shape[1:]
    if not all(np.isfinite(box)):
        raise RoiError(f"{_series('T1', t1)}: box {tuple(box)!r} is not finite"[:200],
                       t1.source or None)
    side = max(box[2] - box[0], box[3] - box[1])
    if side > MAX_BOX_FACTOR * max(h, w):  # the crop is allocated at the box's size
        raise RoiError(f"{_series('T1', t1)}: box side {side:.0f} px is far larger than the "
                       f"{w}x{h} image (at most {MAX_BOX_FACTOR * max(h, w)} px)",
                       t1.source or None)
    roi = square_roi(box, config.roi_margin)
    if roi[2] <= 0 or roi[3] <= 0 or roi[0] >= w or roi[1] >= h:
        raise RoiError(f"{_series('T1', t1)}: box {tuple(round(v, 1) for v in box)} lies "
                       f"outside the {w}x{h} image", t1.source or None)

    try:
        slices, notes = neighbour_slices(slice_index, t1.n_slices, config.neighbours)
    except RoiError as exc:
        raise RoiError(f"{_series('T1', t1)}: {exc.problem}", t1.source or None) from None
    no_partner = _without_t2_partner(t2, slices)
    if slice_index in no_partner:
        raise RoiError(f"T1 slice {slice_index} has no T2 slice at the same position "
                       f"(the T2 series does not cover it): {_series('T2', t2)}",
                       t2.source or None)
    if no_partner:  # a neighbour only: fall back to the lesion slice, like an edge
        notes += [f"T1 slice {i} has no matching T2 slice; used T2 of slice {slice_index}"
                  for i in no_partner]
    t2_slices = [slice_index if i in no_partner else i for i in slices]

    channels, ranges = [], {}
    for name, vol, idx in (("T1", t1, slices), ("T2", t2, t2_slices)):
        for i in dict.fromkeys(idx):
            _check_finite_roi(vol.data[i], roi, name, vol, i)
        crops = np.stack([crop(vol.data[i], roi) for i in idx])
        try:
            scaled, ranges[name] = normalise(crops, config.percentile_low,
                                             config.percentile_high)
        except RoiError as exc:
            raise RoiError(f"{_series(name, vol)}: {exc.problem}", vol.source or None) from None
        channels += [resize(c, config.image_size) for c in scaled]
    for note in notes:
        warnings.warn(note, SpineFXWarning, stacklevel=2)
    return ModelInput(array=np.stack(channels).astype(np.float32), roi=roi, slices=tuple(slices),
                      intensity_ranges=ranges, config=config, notes=notes,
                      t2_slices=tuple(t2_slices))


def _series(seq: str, vol) -> str:
    """How an error names a series: its weighting role and, where known, its description."""
    return f"{seq} series {vol.description!r}" if vol.description else f"{seq} series"


def _without_t2_partner(t2, slices: list[int]) -> list[int]:
    """T1-grid slices that :func:`spinefx.runtime.matching.align_to` marked as having no T2
    partner (matched index -1, all NaN). Any other non-finite T2 pixel is a broken slice, not
    a missing one, and is refused by :func:`_check_finite_roi`."""
    matched = t2.metadata.get("matched_t2_slices")
    if not isinstance(matched, (list, tuple)) or len(matched) != t2.n_slices:
        return []
    return [i for i in dict.fromkeys(slices)
            if matched[i] < 0 and bool(np.isnan(t2.data[i]).all())]


def _check_finite_roi(image: np.ndarray, roi: tuple[int, int, int, int], seq: str, vol,
                      index: int) -> None:
    """Refuse NaN/inf pixels inside the part of the ROI that lies in the image (the model
    must never see them; padding past the edge is the only NaN the crop may hold)."""
    x0, y0, x1, y1 = roi
    h, w = image.shape
    window = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    finite = np.isfinite(window)
    if finite.all():
        return
    slice_name = (f"T2 slice matched to T1 slice {index}" if seq == "T2"
                  else f"T1 slice {index}")
    if not finite.any():
        problem = f"{slice_name} has no finite pixels in the ROI (all NaN or infinite)"
    else:
        problem = (f"{slice_name} has {int(finite.size - finite.sum())} non-finite pixel "
                   "values (NaN or infinite) in the ROI")
    if seq == "T2":
        problem += " although a T2 slice is present at that position"
    raise RoiError(f"{_series(seq, vol)}: {problem}: a broken series?", vol.source or None)
