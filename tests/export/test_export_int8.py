"""int8: static QDQ quantisation behind its gate (pass path, forced refusal, bad calibration)."""
from __future__ import annotations

import json
import shutil

import numpy as np

from spinefx.export.onnx_export import ort_session
from spinefx.export.quantize import int8_gate, quantize_int8
from spinefx.runtime.model_files import read_model_spec


def test_int8_passes_its_gate_and_becomes_default(settings, exported):
    out, spec = exported
    gate = spec["int8"]
    assert gate["passed"], gate["failures"]
    assert spec["default"] == "int8" and "int8" in spec["files"]
    assert gate["held_out_cases"] == 12 - settings.calib_cases
    assert gate["auc_drop"] <= 0.005 and gate["max_abs_probability_diff"] <= 0.03
    assert len(set(gate["calibration_case_ids"])) == settings.calib_cases
    assert gate["quantization"]["format"] == "QDQ" and gate["quantization"]["per_channel"]
    assert gate["cam_pearson_vs_fp32"]["mean"] > 0.9   # the map survives quantisation
    assert (out / "model.int8.onnx").stat().st_size < 0.4 * (out / "model.onnx").stat().st_size
    variant, path, _ = read_model_spec(out).file()
    assert variant == "int8" and path.name == "model.int8.onnx"


def test_int8_refused_with_the_miss_stated_and_previous_export_replaced(settings, run_dir,
                                                                         exported, tmp_path):
    from spinefx.export import export_model

    out = tmp_path / "model"
    shutil.copytree(exported[0], out)          # re-exporting over a previous export is allowed
    path = export_model(run_dir, out, int8=True, calib_cases=settings.calib_cases,
                        prob_diff_bound=1e-6, log=None)
    spec = json.loads(path.read_text())
    gate = spec["int8"]
    assert not gate["passed"] and spec["default"] == "fp32"
    assert list(spec["files"]) == ["fp32"]
    assert "REFUSED" in gate["message"] and "missed by" in gate["message"]
    measured = gate["max_abs_probability_diff"]
    assert f"missed by {measured - 1e-6:.4f}" in gate["message"]
    assert not (out / "model.int8.onnx").exists(), "a refused int8 model must not be kept"


def test_wrong_calibration_is_refused(settings, exported, inputs, tmp_path):
    out, _ = exported
    x, y, _ = inputs
    q8 = tmp_path / "bad.int8.onnx"
    n = settings.calib_cases
    quantize_int8(out / "model.onnx", q8, np.zeros_like(x[:n]))   # all-black calibration images
    gate = int8_gate(ort_session(out / "model.onnx"), ort_session(q8), x[n:], y[n:])
    assert not gate.passed
    assert "missed by" in gate.message and gate.max_prob_diff > 0.03
