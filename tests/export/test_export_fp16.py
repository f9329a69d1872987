"""fp16-stored weights: half the file, float32 arithmetic, gated like int8; --only-default."""
from __future__ import annotations

import json

import numpy as np
import onnx

from spinefx.export.compress import fp16_weights
from spinefx.export.onnx_export import ort_session, run_session
from spinefx.runtime.inference import Predictor


def test_fp16_weights_halve_the_file_and_keep_the_outputs(exported, inputs, tmp_path):
    out, _ = exported
    half = tmp_path / "half.onnx"
    info = fp16_weights(out / "model.onnx", half)
    assert info["cast_nodes"] > 50
    assert half.stat().st_size < 0.55 * (out / "model.onnx").stat().st_size
    onnx.checker.check_model(onnx.load(str(half)))
    x = inputs[0][:4]
    p32, c32 = run_session(ort_session(out / "model.onnx"), x)
    p16, c16 = run_session(ort_session(half), x)
    assert np.abs(p16 - p32).max() < 5e-3
    assert np.abs(c16 - c32).max() <= 0.02 * max(float(c32.max()), 1e-6)
    assert not np.array_equal(p16, p32)  # the weights really changed


def test_export_fp16_only_default_ships_one_gated_file(run_dir, settings, tmp_path):
    from spinefx.export import export_model

    out = tmp_path / "lean"
    spec = json.loads(export_model(run_dir, out, fp16=True, only_default=True, log=None)
                      .read_text())
    assert spec["fp16"]["passed"] and spec["fp16"]["variant"] == "fp16"
    assert spec["default"] == "fp16" and list(spec["files"]) == ["fp16"]
    assert sorted(p.name for p in out.iterdir()) == ["model.fp16.onnx", "model.json"]
    predictor = Predictor(out)
    assert predictor.variant == "fp16"
    prob, cam = predictor.run(np.zeros((1, 6, settings.image_size, settings.image_size),
                                       np.float32))
    assert prob.shape == (1,) and np.isfinite(prob).all() and cam.ndim == 3
