"""Connected components and in-plane morphology on boolean volumes, in numpy only (scipy is no
runtime dependency): what :mod:`spinefx.runtime.vertebrae` splits and grows bodies with.

Arrays are ``(slices, rows, cols)``. Components and growing use 6-neighbour connectivity in 3-D;
erosion is in-plane (4 neighbours within a slice), because slices may be 5 mm apart.
"""
from __future__ import annotations

import numpy as np

__all__ = ["erode_in_plane", "grow_back", "label_components"]


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of a 3-D (or 2-D) mask: (int32 labels 1..n, n), numbered in
    raster order of their first voxel. Runs along the last axis are joined by union-find."""
    fg = np.asarray(mask, dtype=bool)
    flat = fg.reshape(-1, fg.shape[-1])
    starts = flat.copy()                                        # a run's first voxel
    starts[:, 1:] &= ~flat[:, :-1]
    run_id: np.ndarray = np.cumsum(starts.ravel()).reshape(flat.shape) - 1   # a voxel's run
    run_id = np.where(flat, run_id, -1).reshape(fg.shape).astype(np.int64)
    n_runs = int(starts.sum())
    if n_runs == 0:
        return np.zeros(fg.shape, dtype=np.int32), 0
    edges = []
    for axis in range(fg.ndim - 1):   # neighbours along the last axis share a run already
        lo = run_id[_shifted(fg.ndim, axis, slice(None, -1))]
        hi = run_id[_shifted(fg.ndim, axis, slice(1, None))]
        both = (lo >= 0) & (hi >= 0)
        pairs = lo[both] * n_runs + hi[both]
        # two runs that touch give one pair per shared voxel, in a row: keep each change
        # (the same set, a much shorter sort)
        changed = np.ones(len(pairs), dtype=bool)
        changed[1:] = pairs[1:] != pairs[:-1]
        edges.append(np.unique(pairs[changed]))
    pairs = np.concatenate(edges) if edges else np.zeros(0, dtype=np.int64)
    root = _union_find(n_runs, pairs // n_runs, pairs % n_runs)
    _, first, dense = np.unique(root, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))            # number components by first run
    labels = np.zeros(fg.shape, dtype=np.int32)
    labels[fg] = (order[dense] + 1)[run_id[fg]]
    return labels, int(len(first))


def _shifted(ndim: int, axis: int, part: slice) -> tuple[slice, ...]:
    """The index taking ``part`` along ``axis`` and everything along the other axes."""
    index = [slice(None)] * ndim
    index[axis] = part
    return tuple(index)


def _union_find(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each node's smallest connected node id (min-label propagation with pointer jumping)."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        lo = np.minimum(pa[differ], pb[differ])
        np.minimum.at(parent, pa[differ], lo)
        np.minimum.at(parent, pb[differ], lo)
        while True:   # compress every chain to its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


def erode_in_plane(mask: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` 4-neighbour erosions of every slice (never across slices: they may be 5 mm)."""
    out = np.asarray(mask, dtype=bool).copy()
    for _ in range(steps):
        inner = out.copy()
        inner[:, 1:, :] &= out[:, :-1, :]
        inner[:, :-1, :] &= out[:, 1:, :]
        inner[:, :, 1:] &= out[:, :, :-1]
        inner[:, :, :-1] &= out[:, :, 1:]
        inner[:, [0, -1], :] = False
        inner[:, :, [0, -1]] = False
        out = inner
    return out


def grow_back(seeds: np.ndarray, mask: np.ndarray, max_steps: int) -> np.ndarray:
    """Grow labelled ``seeds`` into ``mask`` one 6-neighbour step at a time (the lower label
    wins a voxel both reach in the same step); voxels never reached stay 0."""
    labels = np.where(mask, seeds, 0).astype(np.int32)
    # flat indices on a grid padded by one empty voxel: a neighbour is index + offset, never
    # wrapping; only the free voxels next to last step's new ones (the front) can change
    lab = np.pad(labels, 1).ravel()
    free = np.pad(np.asarray(mask, dtype=bool) & (labels == 0), 1).ravel()
    strides = np.cumprod((1,) + tuple(s + 2 for s in labels.shape[:0:-1]))[::-1]
    offsets = np.concatenate([strides, -strides]).astype(np.intp)
    new = np.flatnonzero(lab)
    big = np.iinfo(np.int32).max
    for _ in range(max_steps):
        front = (new[:, None] + offsets[None, :]).ravel()
        front = np.unique(front[free[front]])
        if len(front) == 0:
            break
        around = lab[front[:, None] + offsets[None, :]]      # labels at the step's start
        lab[front] = np.where(around > 0, around, big).min(axis=1)
        free[front] = False
        new = front
    inner = tuple(slice(1, -1) for _ in labels.shape)
    return lab.reshape(tuple(s + 2 for s in labels.shape))[inner].copy()
