"""Vertebral-body segmentation of one sagittal series with the ONNX localiser (no torch).

:func:`segment_bodies` resamples every sagittal slice in-plane to the model's pixel size,
normalises each slice by its own intensity percentiles (so any weighting and any scanner scale
is one input range), runs the 2-D network over all slices as one ONNX batch and resamples the
body probability back onto the input grid. :func:`segment_spine` also returns the second
output of a two-output localiser, the sacrum probability, which anchors the level count.
The slice axis is never resampled: the network is 2-D, so thick and thin slices are both one
slice to it.

The preprocessing helpers here (:func:`resample_slices`, :func:`normalise_slices`) are the
ones training uses (``spinefx.train.seg_data`` imports them), so train and run time cannot
drift apart. The model folder (default ``weights/localiser/``) holds ``model.onnx`` and
``model.json`` (sha256, pixel size, percentiles, training data, validation metrics).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from os import PathLike
from pathlib import Path

import numpy as np

from .errors import SpineFXError

LOCALISER_DIR = Path(__file__).resolve().parent.parent / "weights" / "localiser"
MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"
MULTIPLE = 16          # the U-Net halves the grid four times: sides must divide by 16
DEFAULT_THREADS = 2
BODY_OUTPUT = "probability"
SACRUM_OUTPUT = "sacrum"     # a two-output localiser's second map (see spinefx.train.segmentation)


class LocaliserModelError(SpineFXError):
    """The localiser's model folder is missing, incomplete or does not match its card."""


# ---------------------------------------------------------------------------------------------
# preprocessing shared with training
# ---------------------------------------------------------------------------------------------
def _linear_axis(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for ``n_out`` samples whose centres lie at
    ``(j + 0.5) * scale - 0.5`` in source pixels (pixel centres aligned, edges clamped)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resample_slices(stack: np.ndarray, scale: tuple[float, float],
                    shape: tuple[int, int]) -> np.ndarray:
    """Bilinear in-plane resampling of ``stack`` (slices, rows, cols) to ``shape`` (rows, cols);
    ``scale`` = (output pixel / input pixel) along rows and columns. Downsampling by more than
    1.5 first box-averages by the integer part, so thin-pixel noise does not alias."""
    out = np.asarray(stack, dtype=np.float32)
    factors = (int(scale[0]) if scale[0] >= 1.5 else 1, int(scale[1]) if scale[1] >= 1.5 else 1)
    if factors != (1, 1):
        out = _box_average(out, factors)
        scale = (scale[0] / factors[0], scale[1] / factors[1])
    # columns first, rows last: gathering whole rows (axis 1) copies contiguous memory, the
    # cheaper gather on the larger, final array. In place: the same float32 products and
    # sum as ``a[lo] * (1 - w) + a[hi] * w``, with two temporaries instead of four.
    out = _lerp_axis(out, 2, *_linear_axis(out.shape[2], shape[1], scale[1]))
    return _lerp_axis(out, 1, *_linear_axis(out.shape[1], shape[0], scale[0]))


def _lerp_axis(stack: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray,
               w: np.ndarray) -> np.ndarray:
    """``stack[lo] * (1 - w) + stack[hi] * w`` along ``axis`` (1 or 2), computed in place."""
    weight_shape = [1, 1, 1]
    weight_shape[axis] = len(w)
    w_hi = w.reshape(weight_shape)
    w_lo = (1 - w).reshape(weight_shape)
    out = np.take(stack, lo, axis=axis)
    out *= w_lo
    upper = np.take(stack, hi, axis=axis)
    upper *= w_hi
    out += upper
    return out


def _box_average(stack: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    fr, fc = factors
    n, rows, cols = stack.shape
    rows_kept, cols_kept = rows // fr * fr, cols // fc * fc
    blocks = stack[:, :rows_kept, :cols_kept].reshape(n, rows // fr, fr, cols // fc, fc)
    return blocks.mean(axis=(2, 4))


#: the most pixels per side of the localiser's grid (MAX_GRID x pixel_mm = 3 m of field of view)
MAX_GRID = 2048


def grid_shape(shape: tuple[int, int], spacing: tuple[float, float],
               pixel_mm: float) -> tuple[int, int]:
    """Rows, cols of a slice of ``shape`` at ``spacing`` mm once resampled to ``pixel_mm``."""
    return (max(1, round(shape[0] * spacing[0] / pixel_mm)),
            max(1, round(shape[1] * spacing[1] / pixel_mm)))


def normalise_slices(stack: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0,
                     ) -> np.ndarray:
    """Each slice mapped so its ``low_pct`` percentile is 0 and its ``high_pct`` one 1, then
    clipped to [-0.5, 1.5]: the scanner's scale and the weighting's window drop out."""
    flat = stack.reshape(stack.shape[0], -1)
    lo, hi = np.percentile(flat, [low_pct, high_pct], axis=1)
    span = np.maximum(hi - lo, 1e-6)
    out = (stack - lo[:, None, None]) / span[:, None, None]
    return np.clip(out, -0.5, 1.5).astype(np.float32)


def pad_to_multiple(stack: np.ndarray, multiple: int = MULTIPLE,
                    minimum: int = 64) -> np.ndarray:
    """Zero-pad (after normalisation, 0 = the dark end) rows and cols at the bottom/right."""
    rows, cols = stack.shape[1:]
    want_r = max(minimum, -(-rows // multiple) * multiple)
    want_c = max(minimum, -(-cols // multiple) * multiple)
    return np.pad(stack, ((0, 0), (0, want_r - rows), (0, want_c - cols)))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_card(model_dir: str | PathLike | None = None) -> dict:
    """The localiser's ``model.json``; :class:`LocaliserModelError` naming what is missing."""
    folder = Path(model_dir) if model_dir is not None else LOCALISER_DIR
    card_path, model_path = folder / CARD_FILE, folder / MODEL_FILE
    for needed in (card_path, model_path):
        if not needed.is_file():
            raise LocaliserModelError(
                f"vertebral-body localiser not found: {needed} is missing (the folder needs "
                f"{MODEL_FILE} and {CARD_FILE}; train one with tools/train_localiser.py)")
    card = json.loads(card_path.read_text())
    card["_model_path"] = str(model_path)
    return card


@lru_cache(maxsize=4)
def _session(model_path: str, mtime_ns: int, threads: int):
    """One session per model file (and its mtime) and thread count, reused by every call in
    the process: opening one costs ~50 ms, more than a small series' run."""
    import onnxruntime as ort  # runtime dependency; imported lazily like the classifier's

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting between ops: on a loaded 2-core machine spinning threads steal the
    # cores the other thread needs (measured: median 0.45-0.54 s vs 0.66-0.83 s with spinning
    # on 15 x 176^2, identical outputs)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_path, sess_options=options,
                                providers=["CPUExecutionProvider"])


@dataclass
class ModelInput:
    """A series prepared for the localiser: the padded, normalised batch on the model's grid."""
    batch: np.ndarray                  # float32 (slices, 1, rows, cols), rows/cols padded
    shape: tuple[int, int]             # rows, cols of the model grid before padding
    spacing: tuple[float, float]       # the series' row, col spacing (mm)
    series_shape: tuple[int, int]      # the series' rows, cols
    pixel_mm: float                    # the model grid's pixel (mm)


def prepare_input(image: np.ndarray, spacing_mm: tuple[float, float, float],
                  card: dict) -> ModelInput:
    """Check ``image`` (slices, rows, cols) and ``spacing_mm`` (slice, row, col), resample every
    slice to the card's pixel size, normalise and pad it: the localiser's input batch."""
    volume = np.asarray(image, dtype=np.float32)
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(f"segment_bodies needs a (slices, rows, cols) volume, got shape "
                         f"{volume.shape}")
    if len(spacing_mm) != 3 or min(float(s) for s in spacing_mm[1:]) <= 0:
        raise ValueError(f"spacing_mm must be (slice, row, col) with positive in-plane "
                         f"spacing, got {spacing_mm}")
    if not np.isfinite(volume).all():
        volume = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    pixel_mm = float(card["input"]["pixel_mm"])
    pct = card["input"]["normalisation"]["percentiles"]
    spacing = (float(spacing_mm[1]), float(spacing_mm[2]))
    shape = grid_shape(volume.shape[1:], spacing, pixel_mm)
    if max(shape) > MAX_GRID:  # a header's spacing, not a spine: never allocate for it
        raise ValueError(f"a {volume.shape[1]} x {volume.shape[2]} slice at {spacing} mm spans "
                         f"{shape[0] * pixel_mm:.0f} x {shape[1] * pixel_mm:.0f} mm: not a "
                         "plausible spine field of view")
    scale = (pixel_mm / spacing[0], pixel_mm / spacing[1])
    model_in = resample_slices(volume, scale, shape)
    model_in = pad_to_multiple(normalise_slices(model_in, pct[0], pct[1]))
    return ModelInput(model_in[:, None], shape, spacing,
                      (volume.shape[1], volume.shape[2]), pixel_mm)


@dataclass
class SpineMaps:
    """The localiser's maps on one grid (slices, rows, cols): the body probability and, from a
    two-output localiser, the sacrum probability (None from a body-only one)."""
    body: np.ndarray
    sacrum: np.ndarray | None = None


def run_model(prepared: ModelInput, card: dict, threads: int = DEFAULT_THREADS) -> SpineMaps:
    """The localiser's maps on the model grid, padding cut off: every slice in one batched run
    of the cached session. Outputs are read by name (``probability``, ``sacrum``)."""
    path = card["_model_path"]
    session = _session(path, Path(path).stat().st_mtime_ns, int(threads))
    name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {name: prepared.batch})))
    rows, cols = prepared.shape
    body = np.asarray(outputs.get(BODY_OUTPUT, outputs[names[0]]))
    sacrum = outputs.get(SACRUM_OUTPUT)
    return SpineMaps(body[:, 0, :rows, :cols],
                     None if sacrum is None else np.asarray(sacrum)[:, 0, :rows, :cols])


def to_series_grid(prob: np.ndarray, prepared: ModelInput) -> np.ndarray:
    """A model-grid probability map resampled back onto the series grid, clipped to 0..1."""
    back = (prepared.spacing[0] / prepared.pixel_mm, prepared.spacing[1] / prepared.pixel_mm)
    out = resample_slices(prob, back, prepared.series_shape)
    return np.clip(out, 0.0, 1.0, out=out)


def segment_spine(image: np.ndarray, spacing_mm: tuple[float, float, float],
                  model_dir=None, threads: int = DEFAULT_THREADS) -> SpineMaps:
    """:func:`segment_bodies` plus the sacrum map (when the model has one), both on the input
    grid."""
    card = load_card(model_dir)
    prepared = prepare_input(image, spacing_mm, card)
    maps = run_model(prepared, card, threads)
    return SpineMaps(to_series_grid(maps.body, prepared),
                     None if maps.sacrum is None else to_series_grid(maps.sacrum, prepared))


def segment_bodies(image: np.ndarray, spacing_mm: tuple[float, float, float],
                   model_dir=None, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """image: (slices, rows, cols) one sagittal series, any weighting, any intensity scale;
    spacing_mm: (slice, row, col) mm. Returns float32 (slices, rows, cols) probability that the
    voxel is vertebral body (0..1), on the input grid. model_dir default: weights/localiser/.
    The three stages are :func:`prepare_input`, :func:`run_model`, :func:`to_series_grid`."""
    card = load_card(model_dir)
    prepared = prepare_input(image, spacing_mm, card)
    return to_series_grid(run_model(prepared, card, threads).body, prepared)
