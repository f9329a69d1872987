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

from spinefx.runtime import Case, PreprocessConfig, prepare_case
from spinefx.runtime.files import atomic_path


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


def cache_key(cases: Sequence[Case], config: PreprocessConfig) -> str:
    """A short hash of the preprocessing settings and the cases' inputs (paths, file sizes and
    modification times, slice, box)."""
    blob = json.dumps({"config": config.to_dict(), "cases": [_case_record(c) for c in cases]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preprocess_cases(cases: Sequence[Case], config: PreprocessConfig,
                     cache_dir: str | PathLike | None = None, progress: bool = True) -> np.ndarray:
    """Model inputs of all ``cases``, stacked: float32 (N, C, S, S) in [0, 1].

    With ``cache_dir`` the stack is read from / written to ``inputs-<key>.npy`` there (see
    :func:`cache_key`); a stale cache simply has another key.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"inputs-{cache_key(cases, config)}.npy"
        if path.is_file():
            arrays = np.load(path, allow_pickle=False)
            if arrays.shape == (len(cases), config.n_channels, config.image_size,
                                config.image_size):
                return arrays
    out = np.empty((len(cases), config.n_channels, config.image_size, config.image_size),
                   dtype=np.float32)
    notes = 0
    for i, case in enumerate(tqdm(cases, desc="preprocessing", unit="case",
                                  disable=None if progress else True, leave=False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
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
class CaseDataset(Dataset):
    """Cases ``indices`` of a preprocessed stack; items are ``(x, target, index)``.

    ``augment`` (or None) is applied with :func:`sample_generator` (seed, stream, epoch, index);
    call :meth:`set_epoch` before each epoch. ``stream`` separates folds / the final model.
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

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        idx = self.indices[i]
        x = self.arrays[idx]
        if self.augment is not None:
            x = self.augment(x, sample_generator(self.seed, self.stream, self.epoch, idx))
        return x, self.targets[idx], idx
