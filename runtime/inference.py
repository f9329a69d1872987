"""Torch-free inference: an ONNX model with two outputs, probability and class-activation map,
and, in models exported with the OOD check, a third: the pooled features ``runtime.ood`` scores.

For a ResNet head of global average pooling + one linear layer, Grad-CAM at the last block is
ReLU(sum_k w_k A_k) up to a positive constant, so the exported graph emits the map itself and
nothing here needs autograd (see DESIGN.md, "Explanations").
"""
from __future__ import annotations

import importlib.metadata
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from os import PathLike

import numpy as np
from PIL import Image

from spinefx.hub.download import resolve_model  # hf:// -> a verified local folder

from .cases import Case, load_volume
from .errors import SpineFXError, SpineFXWarning
from .matching import AlignedPair, align_pair
from .model_files import ModelSpec, read_model_spec
from .occlusion import METHODS, occlusion_map
from .ood import OodScorer, assess_ood
from .preprocess import Box, ModelInput, build_six_channel, resize
from .roi_snap import RoiSnap, snap_roi
from .volume import Volume

log = logging.getLogger("spinefx.runtime")

PROVIDER_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")

# onnxruntime comes from exactly one of the extras: `cpu` (onnxruntime) or `gpu`
# (onnxruntime-gpu). Both distributions write the same `onnxruntime/` folder, so with both
# installed whichever came last wins and CUDA silently disappears.
INSTALL_CPU = "pip install 'spinefx[cpu]'"
INSTALL_GPU = "pip install 'spinefx[gpu]'"
FIX_BOTH = f"pip uninstall -y onnxruntime onnxruntime-gpu && {INSTALL_GPU}"
_RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def installed_onnxruntimes() -> list[str]:
    """Which of the onnxruntime distributions (CPU, GPU) pip has installed."""
    found = []
    for name in _RUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def import_onnxruntime():
    """The onnxruntime module, after checking how it was installed.

    Missing: a :class:`SpineFXError` with the install lines. Both the CPU and the GPU
    distribution installed: a :class:`SpineFXWarning` and a log line with the fix.
    """
    installed = installed_onnxruntimes()
    if len(installed) > 1:
        message = ("both onnxruntime and onnxruntime-gpu are installed: they share one "
                   "onnxruntime/ folder, so the one installed last wins and CUDA may be "
                   f"silently unavailable. Fix: {FIX_BOTH} (or {INSTALL_CPU} alone for CPU)")
        log.warning("spinefx: %s", message)
        warnings.warn(message, SpineFXWarning, stacklevel=3)
    try:
        import onnxruntime as ort  # imported here so reading files never needs it
    except ImportError as exc:
        raise SpineFXError(f"onnxruntime is not installed: {INSTALL_CPU} (a workstation) or "
                           f"{INSTALL_GPU} (NVIDIA CUDA), one of the two, never both") from exc
    return ort


@dataclass
class Prediction:
    probability: float
    label: str                        # at the model's threshold
    threshold: float
    cam_roi: np.ndarray               # (side, side) in [0, 1], on the square ROI
    cam_slice: np.ndarray             # (rows, cols) in [0, 1] on the T1 lesion slice, 0 off-ROI
    model_input: ModelInput
    t1_slice: np.ndarray              # the T1 and T2 lesion slices on the T1 grid, for overlays
    t2_slice: np.ndarray
    model_id: str
    model_sha256: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    ood: dict | None = None           # runtime.ood: flagged, score, threshold, meaning
    ood_reason: str = ""              # why ``ood`` is None (the model has no OOD check)
    roi_snap: dict | None = None      # runtime.roi_snap: the box the model saw and why
    map_method: str = "cam"           # which map cam_roi/cam_slice hold (runtime.occlusion)

    @property
    def ood_flagged(self) -> bool:
        return bool(self.ood and self.ood["flagged"])

    @property
    def roi(self) -> tuple[int, int, int, int]:
        return self.model_input.roi

    def summary(self) -> dict:
        """JSON-able result without pixels (and without any patient identifiers)."""
        return {"probability": round(self.probability, 6), "label": self.label,
                "threshold": self.threshold, "roi": list(self.roi),
                "slices": list(self.model_input.slices), "model": self.model_id,
                "model_sha256": self.model_sha256,
                "preprocessing": self.model_input.config.to_dict(),
                "notes": list(self.model_input.notes),
                "ood": self.ood, **({"ood_reason": self.ood_reason} if self.ood is None else {}),
                **({"roi_snap": self.roi_snap} if self.roi_snap is not None else {}),
                "map_method": self.map_method,
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """Scale one map to [0, 1] by its maximum (Grad-CAM is defined up to a positive constant)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def place_cam(cam: np.ndarray, roi: tuple[int, int, int, int],
              shape: tuple[int, int]) -> np.ndarray:
    """Upsample a (h, w) map onto the square ROI and paste it into a (rows, cols) slice."""
    x0, y0, x1, y1 = roi
    side = x1 - x0
    up = np.asarray(Image.fromarray(normalise_cam(cam)).resize((side, side),
                                                                Image.Resampling.BILINEAR))
    out = np.zeros(shape, dtype=np.float32)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0:sy1, sx0:sx1] = up[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    return out


class Predictor:
    """Load a model folder once; predict many cases.

    ``model``: a folder with ``model.json``, ``None`` for the bundled demonstration model.
    ``variant``: which ONNX file (``fp32``/``int8``; default from model.json). The sha256 of the
    file is checked before onnxruntime sees it. Providers: CUDA when available, else CPU.
    ``release_memory``: after each run, hand the CPU arena's unused chunks back (onnxruntime's
    arena otherwise keeps the peak of every batch size it has seen; a long-running process
    such as ``spinefx node`` wants that memory back, a one-shot command does not care).
    ``spinning``: onnxruntime's threads busy-wait between operators (its default); off, they
    sleep, which on a loaded 2-core machine made a batch 35-40% faster (the spinning thread
    takes the core the other one needs) and leaves the node's listener its share.
    ``snap_roi``: a given box or click is replaced by the tight box of the vertebral body the
    localiser finds under its centre (:mod:`spinefx.runtime.roi_snap`; kept where there is
    none); off, the model sees the box as given (``spinefx predict --keep-box``).
    ``map_method``: the map returned as ``cam_roi``/``cam_slice``: ``cam`` (the graph's own,
    free) or ``occlusion`` (:mod:`spinefx.runtime.occlusion`: 49 more runs per ROI; it points
    into the fractured body far more often, see the README).
    """

    def __init__(self, model: str | PathLike | None = None, variant: str | None = None,
                 providers: list[str] | None = None, threads: int | None = None,
                 release_memory: bool = False, spinning: bool = True, snap_roi: bool = True,
                 map_method: str = "cam"):
        if map_method not in METHODS:
            raise SpineFXError(f"unknown map method {map_method!r}: one of {', '.join(METHODS)}")
        ort = import_onnxruntime()
        self.snap_roi = snap_roi
        self.map_method = map_method
        self.spec: ModelSpec = read_model_spec(resolve_model(model))
        self.variant, self.path, self.sha256 = self.spec.file(variant)
        available = ort.get_available_providers()
        if "onnxruntime-gpu" in installed_onnxruntimes() and "CUDAExecutionProvider" not in \
                available:
            log.warning("spinefx: onnxruntime-gpu is installed but CUDA is not available "
                        "(providers: %s); running on the CPU", ", ".join(available))
        wanted = providers or [p for p in PROVIDER_ORDER if p in available]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
        self.run_options = None
        if release_memory:
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.provider = self.session.get_providers()[0]
        graph_outputs = [o.name for o in self.session.get_outputs()]
        self.ood, self.ood_reason = OodScorer.from_spec(self.spec.raw, graph_outputs)
        log.info("spinefx model %s (%s) running on %s", self.model_id, self.variant, self.provider)

    @property
    def model_id(self) -> str:
        return f"{self.spec.name}:{self.variant}"

    @property
    def config(self):
        return self.spec.preprocessing

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N,) and raw maps (N, h, w) for a float32 batch (N, 6, S, S)."""
        prob, cam, _ = self.run_all(batch, features=False)
        return prob, cam

    def run_all(self, batch: np.ndarray, features: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`run` plus the pooled features (N, D) when the model has an OOD check (else
        None)."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        expected = (self.config.n_channels, self.config.image_size, self.config.image_size)
        if batch.shape[1:] != expected:
            raise ValueError(f"input shape {batch.shape[1:]} does not match the model's {expected}")
        names = list(self.spec.output_names)
        if features and self.ood is not None:
            names.append(self.ood.output)
        out = self.session.run(names, {self.spec.input_name: batch}, self.run_options)
        pooled = np.asarray(out[2], dtype=np.float32) if len(out) > 2 else None
        return (np.asarray(out[0], dtype=np.float64).reshape(-1),
                np.asarray(out[1], dtype=np.float32), pooled)

    def predict_volumes(self, t1: Volume, t2: Volume, slice_index: int, box: Box | None = None,
                        center: tuple[float, float] | None = None,
                        size_mm: float | None = None) -> Prediction:
        """Align ``t2`` to ``t1`` (once) and predict; see :meth:`predict_pair`."""
        t0 = time.perf_counter()
        pair = align_pair(t1, t2)
        align_ms = (time.perf_counter() - t0) * 1e3
        prediction = self.predict_pair(pair, slice_index, box=box, center=center, size_mm=size_mm)
        prediction.timings_ms["preprocess"] += align_ms   # aligning is part of preprocessing
        return prediction

    def predict_pair(self, pair: AlignedPair, slice_index: int, box: Box | None = None,
                     center: tuple[float, float] | None = None,
                     size_mm: float | None = None, snap: bool | None = None) -> Prediction:
        """Predict the lesion at T1 slice ``slice_index`` of an aligned pair; ``snap``: fit the
        box to the body under its centre (None: the predictor's ``snap_roi``)."""
        t1, t2 = pair.t1, pair.t2
        t0 = time.perf_counter()
        fitted = self._snap(t1, slice_index, box, center, size_mm,
                            self.snap_roi if snap is None else snap)
        if fitted is not None and fitted.snapped:
            model_input = build_six_channel(pair, slice_index, box=fitted.box, config=self.config)
        else:
            model_input = build_six_channel(pair, slice_index, box=box, center=center,
                                            size_mm=size_mm, config=self.config)
        t1_ = time.perf_counter()
        prob, cam, pooled = self.run_all(model_input.array)
        t2_ = time.perf_counter()
        cam_map = self._map(cam[0], model_input.array)
        side = model_input.roi[2] - model_input.roi[0]
        prediction = Prediction(
            probability=float(prob[0]),
            label=self.spec.classes[int(prob[0] >= self.threshold)],
            threshold=self.threshold,
            cam_roi=resize(cam_map, side),
            cam_slice=place_cam(cam_map, model_input.roi, t1.data.shape[1:]),
            model_input=model_input, t1_slice=t1.data[slice_index],
            t2_slice=np.nan_to_num(t2.data[slice_index]),
            model_id=self.model_id, model_sha256=self.sha256,
            ood=self._ood(pooled, 0, t1, slice_index, fitted.given if fitted else
                          (box or model_input.roi)),
            ood_reason=self.ood_reason, roi_snap=fitted.to_json() if fitted else None,
            map_method=self.map_method)
        prediction.timings_ms = {"preprocess": (t1_ - t0) * 1e3, "inference": (t2_ - t1_) * 1e3,
                                 "postprocess": (time.perf_counter() - t2_) * 1e3}
        return prediction

    def _map(self, cam: np.ndarray, model_input: np.ndarray,
             method: str | None = None) -> np.ndarray:
        """The explanation map of one item, scaled to [0, 1]: the graph's CAM (h, w) as
        computed, or the occlusion map (S, S) of ``model_input`` (C, S, S)."""
        if (method or self.map_method) == "occlusion":
            return normalise_cam(occlusion_map(lambda b: self.run(b)[0], model_input))
        return normalise_cam(cam)

    def remap(self, prediction: Prediction, map_method: str) -> Prediction:
        """``prediction`` with its map made by ``map_method`` instead (the demo's "occlusion
        map" button); the probability, box and OOD verdict are those of ``prediction``."""
        if map_method not in METHODS:
            raise SpineFXError(f"unknown map method {map_method!r}: one of {', '.join(METHODS)}")
        array = prediction.model_input.array
        cam = self.run(array)[1][0] if map_method == "cam" else np.zeros((1, 1), np.float32)
        cam_map = self._map(cam, array, map_method)
        roi = prediction.roi
        return replace(prediction, cam_roi=resize(cam_map, roi[2] - roi[0]),
                       cam_slice=place_cam(cam_map, roi, prediction.t1_slice.shape),
                       map_method=map_method)

    def _snap(self, t1: Volume, slice_index: int, box: Box | None,
              center: tuple[float, float] | None, size_mm: float | None,
              wanted: bool) -> RoiSnap | None:
        """The vertebral body under the given box or click (None: snapping is off, or the
        ROI is malformed, which :func:`build_six_channel` then reports)."""
        if not wanted:
            return None
        return snap_roi(t1, slice_index, box, center, size_mm, self.config.default_size_mm)

    def _ood(self, pooled: np.ndarray | None, j: int, t1: Volume, slice_index: int,
             box: Box) -> dict | None:
        """result.json's ``ood`` of batch item ``j``: the feature score combined with the
        body fraction of ``box`` (runtime.ood.assess_ood), None without an OOD check."""
        if self.ood is None or pooled is None:
            return None
        return assess_ood(self.ood.assess(pooled[j]), self.spec.raw, t1, slice_index, box)

    def predict_rois(self, pair: AlignedPair, rois: list[tuple[int, Box]],
                     batch_size: int = 32) -> list[Prediction]:
        """:meth:`predict_pair` for many ``(slice_index, box)`` ROIs of one aligned pair, the
        model run once per ``batch_size`` of them (the graph's batch axis is dynamic; the
        map and the features come per item): the same predictions as one call each, one
        session start-up instead of one per vertebra. ``timings_ms['inference']`` is each
        item's share of its batch's run."""
        t1, t2 = pair.t1, pair.t2
        inputs, preprocess_ms = [], []
        for slice_index, box in rois:
            t0 = time.perf_counter()
            inputs.append(build_six_channel(pair, slice_index, box=box, config=self.config))
            preprocess_ms.append((time.perf_counter() - t0) * 1e3)
        predictions: list[Prediction] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            t0 = time.perf_counter()
            prob, cam, pooled = self.run_all(np.stack([m.array for m in chunk]))
            share_ms = (time.perf_counter() - t0) * 1e3 / len(chunk)
            for j, model_input in enumerate(chunk):
                t_post = time.perf_counter()
                k = rois[start + j][0]
                cam_map = self._map(cam[j], model_input.array)
                side = model_input.roi[2] - model_input.roi[0]
                prediction = Prediction(
                    probability=float(prob[j]),
                    label=self.spec.classes[int(prob[j] >= self.threshold)],
                    threshold=self.threshold, cam_roi=resize(cam_map, side),
                    cam_slice=place_cam(cam_map, model_input.roi, t1.data.shape[1:]),
                    model_input=model_input, t1_slice=t1.data[k],
                    t2_slice=np.nan_to_num(t2.data[k]),
                    model_id=self.model_id, model_sha256=self.sha256,
                    ood=self._ood(pooled, j, t1, k, rois[start + j][1]),
                    ood_reason=self.ood_reason, map_method=self.map_method)
                prediction.timings_ms = {
                    "preprocess": preprocess_ms[start + j], "inference": share_ms,
                    "postprocess": (time.perf_counter() - t_post) * 1e3}
                predictions.append(prediction)
        return predictions

    def predict_case(self, case: Case) -> Prediction:
        t0 = time.perf_counter()
        t1, t2 = load_volume(case.t1, "T1"), load_volume(case.t2, "T2")
        load_ms = (time.perf_counter() - t0) * 1e3
        prediction = self.predict_volumes(t1, t2, case.slice, box=case.box, center=case.center,
                                          size_mm=case.size_mm)
        prediction.timings_ms = {"load": load_ms, **prediction.timings_ms}
        return prediction

