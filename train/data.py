"""Training data: preprocessed arrays cached once per run, a Dataset, and augmentation.

Preprocessing is :func:`spinefx.runtime.prepare_case` — the very code the runtime uses — run
once per case at the start of a run; the (N, 6, S, S) float32 stack is cached as ``.npy`` under
a key made from the :class:`PreprocessConfig` and the cases' manifest rows, so resumed runs and
later folds never decode DICOM again (at 64 px, decoding is slower than training).

Augmentation respects anatomy. All six channels share one geometric transform (they are
co-registered slices): a small rotation (+-10 deg), isotropic scaling (+-10 %) and translation
(+-6 % of the ROI) — what a slightly different box or patient position would give. Intensity
changes are per sequence (T1 channels together, T2 channels together, as each sequence is
normalised on its own): contrast and brightness jitter, then Gaussian noise.

**No anterior-posterior flip by default.** In a sagittal slice the columns run anterior ->
posterior. Mirroring them moves the posterior wall to the front: the shape of the posterior
border (convex/bulging in malignant fractures, a retropulsed fragment in benign ones), epidural
and posterior-element findings are among the most discriminating features, and a flipped image
shows anatomy no patient has. Likewise no cranio-caudal flip (endplate and disc relations). An
optional ``swap_sides`` mirrors the patient left-right instead — it swaps slice k-1 and k+1,
which is anatomically plausible — and is off by default, as in the paper.

**ROI variants** (``roi_variants`` K > 1, opt-in): users give the ROI as a tight mask box, a box
off by a few pixels, or a centre click with the model's default box size. An image-space affine
of a tight crop cannot show the context a larger default box shows, so K inputs per case are
built by the runtime's own :func:`spinefx.runtime.build_six_channel` (:class:`RoiJitter`):
variant 0 is the manifest's ROI; each other variant is drawn from a generator seeded by
(draw seed, case id, variant) — about a third are the centre click (the box's centre pixel, no
box, the config's default size in mm, exactly what a user's click gives), the rest the box
shifted and grown/shrunk about its centre. The stack is then (N, K, 6, S, S);
:class:`CaseDataset` picks one variant per (seed, stream, epoch, case), then augments as
usual; validation and out-of-fold prediction use variant 0 only.

Everything is torch on tensors, and every random draw comes from a generator seeded by
(seed, stream, epoch, case): a sample's augmentation depends neither on the worker that loads
it nor on the order of loading, so runs are reproducible with any ``--workers`` and after a
resume.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from spinefx.runtime import (
    AlignedPair,
    Case,
    PreprocessConfig,
    RoiError,
    align_pair,
    box_from_center,
    build_six_channel,
    load_volume,
    prepare_case,
)
from spinefx.runtime.files import atomic_path
from spinefx.runtime.preprocess import Box


# ---------------------------------------------------------------------------------------------
# preprocessing cache
# ---------------------------------------------------------------------------------------------
def _stamp(path) -> list:
    """(files, bytes, newest mtime) of a series file or folder: a regenerated or edited series
    gets a new cache key even when its path stays the same."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [f.stat() for f in files]
    return [len(stats), sum(st.st_size for st in stats),
            max((st.st_mtime_ns for st in stats), default=0)]


def _case_record(case: Case) -> dict:
    return {"case_id": case.case_id, "t1": str(case.t1), "t2": str(case.t2),
            "t1_stamp": _stamp(case.t1), "t2_stamp": _stamp(case.t2),
            "slice": case.slice, "box": case.box, "center": case.center,
            "size_mm": case.size_mm}


def cache_key(cases: Sequence[Case], config: PreprocessConfig, roi_variants: int = 1,
              jitter: RoiJitter | None = None) -> str:
    """A short hash of the preprocessing settings and the cases' inputs (paths, file sizes and
    modification times, slice, box); with ``roi_variants`` > 1 also K and the variant draw
    (the K = 1 key is the one caches always had)."""
    record: dict = {"config": config.to_dict(), "cases": [_case_record(c) for c in cases]}
    if roi_variants > 1:
        record["roi_variants"] = {"k": int(roi_variants),
                                  "jitter": (jitter or RoiJitter()).to_dict()}
    blob = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preprocess_cases(cases: Sequence[Case], config: PreprocessConfig,
                     cache_dir: str | PathLike | None = None, progress: bool = True,
                     roi_variants: int = 1, jitter: RoiJitter | None = None) -> np.ndarray:
    """Model inputs of all ``cases``, stacked: float32 (N, C, S, S) in [0, 1]; with
    ``roi_variants`` K > 1, (N, K, C, S, S): K ROI variants per case (:func:`roi_variant_inputs`).

    With ``cache_dir`` the stack is read from / written to ``inputs-<key>.npy`` there (see
    :func:`cache_key`); a stale cache simply has another key.
    """
    jitter = jitter or RoiJitter()
    per_case: tuple[int, ...] = (config.n_channels, config.image_size, config.image_size)
    if roi_variants > 1:
        per_case = (int(roi_variants), *per_case)
    path = None
    if cache_dir is not None:
        key = cache_key(cases, config, roi_variants, jitter)
        path = Path(cache_dir) / f"inputs-{key}.npy"
        if path.is_file():
            arrays = np.load(path, allow_pickle=False)
            if arrays.shape == (len(cases), *per_case):
                return arrays
    out = np.empty((len(cases), *per_case), dtype=np.float32)
    notes = 0
    for i, case in enumerate(tqdm(cases, desc="preprocessing", unit="case",
                                  disable=None if progress else True, leave=False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if roi_variants > 1:
                out[i] = roi_variant_inputs(case, config, roi_variants, jitter)
            else:  # the path caches always took: one input at the manifest's ROI
                out[i] = prepare_case(case, config).array
        notes += len(caught)
    if notes:
        warnings.warn(f"preprocessing: {notes} note(s) while building inputs (edge slices "
                      "replicated or T2 slices substituted); see `spinefx predict` on a case "
                      "for details", stacklevel=2)
    if path is not None:  # unique temporary name: two runs sharing a cache never collide
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, out, allow_pickle=False)
    return out


# ---------------------------------------------------------------------------------------------
# ROI variants: the ROI the way users give it
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoiJitter:
    """How the ROI variants 1..K-1 of a case are drawn (variant 0 is the manifest's ROI).

    The shift is uniform in +-``max(shift_px, shift_fraction x box side)`` per axis: at least
    the few pixels a hand-drawn box is off by, and proportionally more on larger matrices (a
    5 % shift of a 60 px box is 3 px; of a 120 px box, 6 px). The side is scaled by a factor
    uniform in 1 +- ``scale`` about the (shifted) centre. ``click_fraction`` of the variants
    (a per-variant draw) are a centre click instead: the box's centre pixel, no box, so
    :func:`spinefx.runtime.build_six_channel` uses ``PreprocessConfig.default_size_mm``.
    ``seed`` is the draw's own seed (part of the cache key), independent of the run's seed so
    runs with different seeds share one cache.
    """
    shift_px: float = 3.0
    shift_fraction: float = 0.05
    scale: float = 0.20
    click_fraction: float = 1 / 3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


#: a ROI variant: ("box", box) or ("click", centre pixel)
RoiVariant = tuple[str, tuple[float, ...]]


def _case_number(case_id: str) -> int:
    """A stable 32-bit number of a case id (the draw must not depend on manifest order)."""
    return int.from_bytes(hashlib.sha256(str(case_id).encode()).digest()[:4], "little")


def click_at_box_centre(box: Box) -> tuple[float, float]:
    """The pixel a user clicks in the middle of ``box`` (edge coordinates): (column, row)."""
    return (float(math.floor((box[0] + box[2]) / 2)), float(math.floor((box[1] + box[3]) / 2)))


def draw_roi_variant(case_id: str, variant: int, box: Box,
                     jitter: RoiJitter = RoiJitter()) -> RoiVariant:
    """Variant ``variant`` (>= 1) of the ROI ``box`` of case ``case_id``; see :class:`RoiJitter`.
    Deterministic per (jitter.seed, case id, variant)."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [int(jitter.seed) & 0xFFFFFFFF, _case_number(case_id), int(variant) & 0xFFFFFFFF]))
    if rng.random() < jitter.click_fraction:
        return ("click", click_at_box_centre(box))
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    reach = max(jitter.shift_px, jitter.shift_fraction * max(w, h))
    dx, dy = rng.uniform(-reach, reach, size=2)
    factor = 1.0 + rng.uniform(-jitter.scale, jitter.scale)
    cx, cy = (x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy
    hw, hh = w * factor / 2, h * factor / 2
    return ("box", (cx - hw, cy - hh, cx + hw, cy + hh))


def _manifest_box(case: Case, pair: AlignedPair, config: PreprocessConfig) -> Box:
    """The box of the manifest's ROI (a centre row: the box its centre and size give)."""
    if case.box is not None:
        return (float(case.box[0]), float(case.box[1]), float(case.box[2]), float(case.box[3]))
    assert case.center is not None  # read_manifest: a box or a centre
    return box_from_center(case.center, case.size_mm or config.default_size_mm,
                           pair.t1.pixel_spacing)


def roi_variant_inputs(case: Case, config: PreprocessConfig, k: int,
                       jitter: RoiJitter = RoiJitter()) -> np.ndarray:
    """float32 (K, C, S, S): the case's input at its manifest ROI (variant 0) and at K-1 drawn
    variants (:func:`draw_roi_variant`), all by :func:`spinefx.runtime.build_six_channel` on one
    decoded, aligned pair. A variant the runtime refuses (past the image edge) falls back to
    variant 0, with a warning."""
    pair = align_pair(load_volume(case.t1, "T1"), load_volume(case.t2, "T2"))
    first = build_six_channel(pair, case.slice, box=case.box, center=case.center,
                              size_mm=case.size_mm, config=config).array
    out = np.empty((k, *first.shape), dtype=np.float32)
    out[0] = first
    box = _manifest_box(case, pair, config)
    for v in range(1, k):
        kind, where = draw_roi_variant(case.case_id, v, box, jitter)
        try:
            if kind == "click":
                made = build_six_channel(pair, case.slice, center=(where[0], where[1]),
                                         config=config)
            else:
                made = build_six_channel(pair, case.slice, box=(where[0], where[1], where[2],
                                                                where[3]), config=config)
            out[v] = made.array
        except RoiError as exc:
            warnings.warn(f"case {case.case_id}: ROI variant {v} refused ({exc}); used the "
                          "manifest's ROI", stacklevel=2)
            out[v] = first
    return out


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------
def sample_generator(seed: int, *keys: int) -> torch.Generator:
    """A torch generator seeded from ``(seed, *keys)`` (independent streams per key tuple)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) & 0xFFFFFFFF
                                                             for k in keys]])
    g = torch.Generator()
    g.manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF))
    return g


@dataclass(frozen=True)
class Augment:
    """Anatomy-respecting augmentation of one (C, S, S) input; see the module docstring."""
    rotate_deg: float = 10.0
    scale: float = 0.10
    translate: float = 0.06       # fraction of the ROI side
    contrast: float = 0.15        # multiplicative, around the sequence's mean
    brightness: float = 0.08      # additive
    noise_std: float = 0.03       # max standard deviation of additive Gaussian noise
    flip_ap: bool = False         # anterior-posterior mirror: wrong anatomy, keep False
    swap_sides: bool = False      # left-right mirror (swap k-1 / k+1), plausible, off as in paper

    def to_dict(self) -> dict:
        return asdict(self)

    def _u(self, g: torch.Generator, half_width: float) -> float:
        return float((torch.rand((), generator=g) * 2 - 1) * half_width)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c, h, w = x.shape
        angle = math.radians(self._u(g, self.rotate_deg))
        s = 1.0 + self._u(g, self.scale)
        tx, ty = self._u(g, 2 * self.translate), self._u(g, 2 * self.translate)
        flip = self.flip_ap and bool(torch.rand((), generator=g) < 0.5)
        swap = self.swap_sides and bool(torch.rand((), generator=g) < 0.5)
        # output -> input sampling grid in normalised coordinates: rotate, zoom by s, shift
        cos, sin = math.cos(angle) / s, math.sin(angle) / s
        theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=x.dtype)
        if flip:
            theta[:, 0] = -theta[:, 0]
        grid = F.affine_grid(theta[None], [1, c, h, w], align_corners=False)
        y = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0]
        if swap and c % 2 == 0:
            per = c // 2
            order = [i for seq in range(2) for i in reversed(range(seq * per, (seq + 1) * per))]
            y = y[order]
        groups = (range(0, c // 2), range(c // 2, c)) if c % 2 == 0 else (range(c),)
        out = torch.empty_like(y)
        for grp in groups:
            idx = list(grp)
            part = y[idx]
            mean = part.mean()
            k = 1.0 + self._u(g, self.contrast)
            b = self._u(g, self.brightness)
            out[idx] = (part - mean) * k + mean + b
        sigma = float(torch.rand((), generator=g)) * self.noise_std
        if sigma > 0:
            out = out + sigma * torch.randn(out.shape, generator=g, dtype=out.dtype)
        return out.clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------
#: the extra sample_generator key of the ROI-variant choice (its own stream: the augmentation
#: draws stay those of a K = 1 run)
VARIANT_STREAM = 0x0501


class CaseDataset(Dataset):
    """Cases ``indices`` of a preprocessed stack; items are ``(x, target, index)``.

    ``augment`` (or None) is applied with :func:`sample_generator` (seed, stream, epoch, index);
    call :meth:`set_epoch` before each epoch. ``stream`` separates folds / the final model.
    A (N, K, C, S, S) stack of ROI variants gives one variant per item, chosen by
    :meth:`variant_of` (seed, stream, epoch, index), before the augmentation.
    """

    def __init__(self, arrays: np.ndarray | torch.Tensor, targets: ArrayLike,
                 indices: Sequence[int] | np.ndarray, augment: Augment | None = None,
                 seed: int = 0, stream: int = 0) -> None:
        self.arrays = torch.as_tensor(arrays)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
        self.indices = [int(i) for i in indices]
        self.augment = augment
        self.seed, self.stream, self.epoch = int(seed), int(stream), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def n_variants(self) -> int:
        """ROI variants per case (1 for a (N, C, S, S) stack)."""
        return int(self.arrays.shape[1]) if self.arrays.ndim == 5 else 1

    def variant_of(self, idx: int) -> int:
        """The ROI variant case ``idx`` shows in this epoch."""
        if self.n_variants == 1:
            return 0
        g = sample_generator(self.seed, self.stream, self.epoch, idx, VARIANT_STREAM)
        return int(torch.randint(self.n_variants, (), generator=g))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        idx = self.indices[i]
        x = self.arrays[idx]
        if self.arrays.ndim == 5:
            x = x[self.variant_of(idx)]
        if self.augment is not None:
            x = self.augment(x, sample_generator(self.seed, self.stream, self.epoch, idx))
        return x, self.targets[idx], idx
