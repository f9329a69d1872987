"""spinefx.export: torch -> ONNX with in-graph Grad-CAM and parity gates.

- :func:`export_model` (``spinefx export RUN --out MODEL_DIR``): a training run folder ->
  ``model.onnx`` (+ ``model.int8.onnx``) + ``model.json``, the folder ``spinefx.runtime`` loads.
- :class:`CamModel`: the exported wrapper, ``x -> (probability, cam)``; for a GAP + linear head
  the map ``ReLU(sum_k w_k A_k)`` at ``layer4`` is Grad-CAM up to a positive constant.
- Gates run by every export: probability vs PyTorch (max |diff| <= 1e-4) and CAM vs the
  ``grad-cam`` package's GradCAM (Pearson r >= 0.999 per map) -> :class:`ParityError`; with
  int8, AUC drop <= 0.005 and max |dp| <= 0.03 on held-out cases, else the int8 file is refused.

Names are imported lazily (PEP 562) so ``import spinefx.export.cli`` (the CLI parser) loads no
torch; the heavy modules load on first use.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "CamModel": "onnx_export", "ExportError": "onnx_export", "ParityError": "onnx_export",
    "export_onnx": "onnx_export", "check_onnx": "onnx_export",
    "check_probability_parity": "onnx_export", "check_cam_parity": "onnx_export",
    "quantize_int8": "quantize", "int8_gate": "quantize", "Int8Gate": "quantize",
    "export_model": "exporter",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
