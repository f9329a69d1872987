"""Occlusion sensitivity: where hiding the image lowers the malignancy probability most.

The bundled model's in-graph CAM (the linear head's contribution per layer4 cell, = Grad-CAM
for this architecture) is cheap but reads where the model's *features* add to the malignant
score on average, not what the score *depends on*: on 40 held-out malignant phantoms its peak
lay in the fractured body in 1-2 of 40, mostly in the bottom row of the 4x4 grid (the disc and
the body below, where skip lesions and old fractures, both class-informative, sit), and a
4x4 grid cannot point inside a body that spans two rows. Occlusion measures the second thing
directly: each ``patch`` x ``patch`` square of the model input (stride ``stride``) is replaced by
the channel's mean over the ROI (a neutral value in the model's [0, 1] range; zeros would add
an edge the model never saw), the drop in probability is spread over the pixels the square
covered, and the mean drop per pixel is the map. Negative drops (hiding raised the score) are
clipped: the map shows evidence *for* malignancy, as the CAM does. Cost: one model run per
position, batched (32 px squares, stride 16: 49 runs per ROI).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

METHODS = ("cam", "occlusion")
PATCH = 32
STRIDE = 16


def positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one axis: every ``stride``, the last square flush with the edge
    so that every pixel is covered."""
    if not 0 < patch <= size or stride <= 0:
        raise ValueError(f"occlusion needs 0 < patch <= {size} and stride > 0 "
                         f"(got patch {patch}, stride {stride})")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion_map(score: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                  patch: int = PATCH, stride: int = STRIDE, batch_size: int = 16) -> np.ndarray:
    """(S, S) map, >= 0, of the probability drop when each square of ``x`` (C, S, S) is
    hidden. ``score`` maps a float32 batch (N, C, S, S) to probabilities (N,)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"occlusion needs one (C, S, S) input, got shape {x.shape}")
    size = x.shape[1]
    fill = x.mean(axis=(1, 2))[:, None, None]
    axis = positions(size, patch, stride)
    starts = [(r, c) for r in axis for c in axis]
    base = float(np.asarray(score(x[None]))[0])
    drops: list[float] = []
    for k in range(0, len(starts), batch_size):
        hidden = np.repeat(x[None], len(starts[k:k + batch_size]), axis=0)
        for j, (r, c) in enumerate(starts[k:k + batch_size]):
            hidden[j, :, r:r + patch, c:c + patch] = fill
        drops.extend(base - np.asarray(score(hidden), dtype=np.float64).ravel())
    total = np.zeros((size, size))
    covered = np.zeros((size, size))
    for (r, c), drop in zip(starts, drops):
        total[r:r + patch, c:c + patch] += drop
        covered[r:r + patch, c:c + patch] += 1
    return np.maximum(total / covered, 0.0).astype(np.float32)
