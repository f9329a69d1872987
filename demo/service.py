"""The demo's engine, free of gradio: one shared model per process; predictions go through
the runtime's service (``spinefx.runtime.service``), the same path as `spinefx predict`.

Every user-caused failure becomes a :class:`SpineFXError` with a readable message; the UI and
the API turn it into text on the page / an ``{"status": "error"}`` result, never a traceback.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from spinefx.runtime import PreprocessConfig, SpineFXError, build_six_channel
from spinefx.runtime.inference import Predictor
from spinefx.runtime.model_files import BUNDLED_DIR
from spinefx.runtime.preprocess import Box
from spinefx.runtime.service import Result, analyse, check_slice, resolve_roi
from spinefx.runtime.study import SeriesPair, Study

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
# The demo's use of the runtime service
# ---------------------------------------------------------------------------------------------
def preview_input(model: ModelState, study: Study, pair: SeriesPair, k: int, box: Box):
    """The six channels the model would see (the strip under the slice), on the pair aligned
    once for the session."""
    t1 = study.volume(pair.t1)
    return build_six_channel(study.aligned(pair), check_slice(t1, k), box=box,
                             config=model.config)


def predict(model: ModelState, study: Study, pair: SeriesPair, k: int | None,
            box: Box | None = None, center: tuple[float, float] | None = None,
            size_mm: float | None = None) -> Result:
    """One prediction through the runtime's service (the CLI's path too)."""
    predictor = model.require()
    roi = resolve_roi(study.volume(pair.t1), predictor.config, k, box, center, size_mm,
                      study.default_slice, study.default_box)
    return analyse(predictor, study, pair, roi)
