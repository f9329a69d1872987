"""spinefx.export: torch -> ONNX with in-graph Grad-CAM and parity gates.

- :func:`export_model` (``spinefx export RUN --out MODEL_DIR``): a training run folder ->
  ``model.onnx`` (+ ``model.int8.onnx``) + ``model.json``, the folder ``spinefx.runtime`` loads.
- :class:`CamModel`: the exported wrapper, ``x -> (probability, cam)``; for a GAP + linear head
  the map ``ReLU(sum_k w_k A_k)`` at ``layer4`` is Grad-CAM up to a positive constant.
- Gates run by every export: probability vs PyTorch (max |diff| <= 1e-4) and CAM vs the
  ``grad-cam`` package's GradCAM (Pearson r >= 0.999 per map) -> :class:`ParityError`; with
  int8, AUC drop <= 0.005 and max |dp| <= 0.03 on held-out cases, else the int8 file is refused.

Importing this package loads torch and onnx; the ``spinefx`` command line imports it only when
``spinefx export`` / ``bench`` runs (:mod:`spinefx.cli`).
"""
from __future__ import annotations

from .exporter import export_model
from .onnx_export import (
    CamModel,
    ExportError,
    ParityError,
    check_cam_parity,
    check_onnx,
    check_probability_parity,
    export_onnx,
)
from .quantize import Int8Gate, int8_gate, quantize_int8

__all__ = [
    "CamModel", "ExportError", "Int8Gate", "ParityError", "check_cam_parity", "check_onnx",
    "check_probability_parity", "export_model", "export_onnx", "int8_gate", "quantize_int8",
]
