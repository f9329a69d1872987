"""Requantising a model folder's int8 file from its own weights (spinefx.export.requantize): the
float graph of a QDQ file is the model it quantised, and a requantised folder is gated,
recorded and written beside the input, which stays as it was."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from spinefx.export.onnx_export import ExportError, ort_session, run_session
from spinefx.export.quantize import FAST, weight_range
from spinefx.export.requantize import int8_float_graph, requantize_int8
from spinefx.runtime.inference import Predictor
from spinefx.runtime.model_files import sha256_file


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_the_float_graph_of_an_int8_file_is_the_model_it_quantised(exported, inputs, tmp_path):
    out, _ = exported
    undone = int8_float_graph(out / "model.int8.onnx", tmp_path / "float.onnx")
    ops = _ops(tmp_path / "float.onnx")
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    # every ReLU of the fp32 graph is back (those the quantiser folded into a zero point of
    # 0), and every other clamp at 0 the int8 file does (a conv output calibrated >= 0)
    assert ops.count("Relu") >= _ops(out / "model.onnx").count("Relu")
    assert undone["relus_restored"] > 0 and undone["weights_dequantised"] > 0
    x = inputs[0]
    p32 = run_session(ort_session(out / "model.onnx"), x)[0]
    p_float = run_session(ort_session(tmp_path / "float.onnx"), x)[0]
    p8 = run_session(ort_session(out / "model.int8.onnx"), x)[0]
    # only the weights' rounding is left: closer to fp32 than the int8 file itself
    assert np.abs(p_float - p32).max() <= np.abs(p8 - p32).max()
    assert np.abs(p_float - p32).max() < 0.01


def test_a_requantised_folder_is_gated_recorded_and_the_input_untouched(exported, cohort,
                                                                         tmp_path):
    out, spec = exported
    before = {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()}
    path = requantize_int8(out, tmp_path / "new", cohort, FAST, log=None)
    assert {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()} == before
    new = json.loads(path.read_text())
    int8 = new["int8"]
    assert int8["passed"] and "dequantised" in int8["reference"]
    assert int8["quantization"]["settings"] == FAST.label
    assert int8["calibration_case_ids"] == spec["int8"]["calibration_case_ids"]
    assert int8["previous_int8"]["sha256"] == spec["files"]["int8"]["sha256"]
    q8 = tmp_path / "new" / "model.int8.onnx"
    assert new["files"]["int8"]["sha256"] == sha256_file(q8) != spec["files"]["int8"]["sha256"]
    wr = weight_range(q8)
    assert wr["dtypes"] == ["int8"] and -64 <= wr["min"] and wr["max"] <= 64
    assert new["ood"]["previous_threshold"] == spec["ood"]["threshold"]
    assert new["ood"]["body_fraction_threshold"] == spec["ood"]["body_fraction_threshold"]
    predictor = Predictor(tmp_path / "new", variant="int8")
    assert predictor.sha256 == sha256_file(q8)


def test_another_manifest_or_order_is_refused_and_nothing_written(exported, cohort, tmp_path):
    out, _ = exported
    with pytest.raises(ExportError, match="calibration cases"):
        requantize_int8(out, tmp_path / "new", cohort, FAST, seed=1, log=None)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ExportError, match="another folder"):
        requantize_int8(out, out, cohort, FAST, log=None)


def test_the_bundled_int8_file_gives_the_same_integers_on_every_cpu():
    """Its weights, read off the file: 7-bit int8 (or uint8), so no CPU's U8S8 kernel can
    saturate, and model.json records exactly that range (the gate's verdict holds on VNNI and
    non-VNNI machines alike)."""
    from spinefx.runtime.model_files import BUNDLED_DIR, read_model_spec

    spec = read_model_spec(BUNDLED_DIR)
    _, path, _ = spec.file("int8")
    wr = weight_range(path)
    assert wr["u8s8_pair_sum_fits_int16"] is True
    quantization = spec.raw["int8"]["quantization"]
    assert quantization["cpu_independent"] is True and quantization["weight_range"] == wr
    assert spec.raw["int8"]["passed"] is True
