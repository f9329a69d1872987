"""The demo's engine, free of gradio: one shared model per process, predictions, API results.

Every user-caused failure becomes a :class:`SpineFXError` with a readable message; the UI and
the API turn it into text on the page / an ``{"status": "error"}`` result, never a traceback.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from spinefx.runtime import PreprocessConfig, RoiError, SpineFXError, Volume, build_six_channel
from spinefx.runtime.inference import Prediction, Predictor
from spinefx.runtime.model_files import BUNDLED_DIR
from spinefx.runtime.predict import parse_numbers

from .ingest import Study

log = logging.getLogger("spinefx.demo")

_MODELS: dict[tuple, Predictor] = {}
_MODELS_LOCK = threading.Lock()


def shared_predictor(model: str | PathLike | None = None, threads: int | None = None) -> Predictor:
    """One :class:`Predictor` per model folder per process (ONNX sessions are thread-safe)."""
    key = (str(Path(model).resolve()) if model is not None else None, threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = Predictor(model, threads=threads)
        return _MODELS[key]


@dataclass
class ModelState:
    predictor: Predictor | None
    message: str          # one line for the page
    synthetic: bool

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    def require(self) -> Predictor:
        if self.predictor is None:
            raise SpineFXError(f"no model is loaded, so nothing can be predicted: {self.message}")
        return self.predictor

    @property
    def config(self) -> PreprocessConfig:
        return self.predictor.config if self.predictor is not None else PreprocessConfig()


def load_model(model: str | PathLike | None, concurrency: int) -> ModelState:
    """The model for this app. An explicit ``model`` that fails raises (the user asked for it);
    a missing bundled model leaves the app running without predictions and says so."""
    threads = max(1, (os.cpu_count() or 1) // max(1, concurrency))
    try:
        predictor = shared_predictor(model, threads)
    except SpineFXError as exc:
        if model is not None:
            raise
        return ModelState(None, f"the bundled model is not installed ({BUNDLED_DIR}): start the "
                          f"demo with `spinefx demo --model DIR` ({exc.problem})", False)
    spec = predictor.spec
    metrics = spec.raw.get("metrics") or {}
    auc = metrics.get("auc") or metrics.get("roc_auc")
    extra = f", cross-validated AUC {float(auc):.2f}" if isinstance(auc, (int, float)) else ""
    origin = "bundled" if model is None else "from " + Path(model).name
    trained = "SYNTHETIC phantoms" if spec.synthetic else "data described in its model card"
    return ModelState(predictor, f"`{predictor.model_id}` ({origin}; trained on {trained}; "
                      f"threshold {predictor.threshold:.2f}{extra}; {predictor.provider})",
                      spec.synthetic)


# ---------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------
def parse_pair(text: str | None, what: str) -> tuple[float, float] | None:
    values = _numbers(text, 2, what)
    return None if values is None else (values[0], values[1])


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    values = _numbers(text, 4, "the box (x0, y0, x1, y1)")
    if values is None:
        return None
    x0, y0, x1, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise RoiError(f"box {format_box(values)} is empty: need x0 < x1 and y0 < y1")
    return values  # type: ignore[return-value]


def _numbers(text, n: int, what: str):
    """None for an empty field, else the runtime's parser (one rule for CLI and page)."""
    if text is None or not str(text).strip():
        return None
    return parse_numbers(text, n, what)


def format_box(box) -> str:
    return ", ".join(f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}" for v in box)


def box_from_click(vol: Volume, center: tuple[float, float], size_mm: float):
    from spinefx.runtime import box_from_center
    h, w = vol.data.shape[1:]
    x, y = center
    if not (0 <= x < w and 0 <= y < h):
        raise RoiError(f"point ({x:.0f}, {y:.0f}) lies outside the {w}x{h} image")
    return box_from_center(center, float(size_mm), vol.pixel_spacing)


def check_box(vol: Volume, box) -> None:
    """A box must overlap the image (the runtime pads ROIs that cross the edge)."""
    h, w = vol.data.shape[1:]
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise RoiError(f"box ({format_box(box)}) lies outside the {w}x{h} image")


def check_slice(vol: Volume, k) -> int:
    if k is None or (isinstance(k, float) and not math.isfinite(k)):
        raise RoiError("choose a lesion slice")
    k = int(k)
    if not 0 <= k < vol.n_slices:
        raise RoiError(f"slice {k} is outside the series (0..{vol.n_slices - 1})")
    return k


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------
def preview_input(model: ModelState, t1: Volume, t2: Volume, k: int, box):
    return build_six_channel(t1, t2, check_slice(t1, k), box=box, config=model.config)


def predict(model: ModelState, t1: Volume, t2: Volume, k: int, box) -> Prediction:
    predictor = model.require()
    k = check_slice(t1, k)
    check_box(t1, box)
    t0 = time.perf_counter()
    pred = predictor.predict_volumes(t1, t2, k, box=box)
    log.info("prediction p=%.3f in %.0f ms", pred.probability, (time.perf_counter() - t0) * 1e3)
    return pred


def result_json(model: ModelState, pred: Prediction, study: Study, k: int, t1_key: str,
                t2_key: str) -> dict:
    """A JSON-able, PHI-free result (what the API returns and the page shows in 'details')."""
    out = {"status": "ok", **pred.summary(), "slice": int(k),
           "synthetic_model": model.synthetic,
           "disclaimer": "Research and teaching use only; not for diagnosis.",
           "series": {"t1": study.labels.get(t1_key, t1_key), "t2": study.labels.get(t2_key, t2_key)},
           "study_notes": list(study.notes)}
    if study.truth is not None:
        out["truth"] = study.truth
    return out


def error_json(exc: BaseException) -> dict:
    return {"status": "error", "error": str(exc)}


def resolve_roi(study: Study, t1: Volume, k: int | None, box_text: str | None,
                center_text: str | None, size_mm: float | None, config: PreprocessConfig):
    """(slice, box) from API arguments: slice < 0 or None -> the study default or the middle;
    box text, else centre + size, else the study's default box."""
    if k is None or (isinstance(k, (int, float)) and k < 0):
        k = study.default_slice if study.default_slice is not None else t1.n_slices // 2
    k = check_slice(t1, k)
    box = parse_box(box_text)
    center = parse_pair(center_text, "the centre (x, y)")
    if box is None and center is not None:
        box = box_from_click(t1, center, float(size_mm or config.default_size_mm))
    if box is None:
        box = study.default_box
    if box is None:
        raise RoiError("say where the vertebra is: give a box 'x0,y0,x1,y1' or a centre 'x,y' "
                       "(T1 pixels)")
    check_box(t1, box)
    return k, tuple(float(v) for v in box)
