"""int8 settings that give the same integers on every x86-64 CPU: the chosen setting is the one
recorded, its quantised weights cannot saturate onnxruntime's non-VNNI U8S8 kernels (read off
the file, so the check holds on any CPU the test runs on), and the float nodes follow the graph's
outputs (a third output keeps its branch in float too)."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.export.quantize import (
    CHOSEN,
    Int8Settings,
    backbone_convs,
    head_nodes,
    quantize_int8,
    weight_range,
)


def test_cpu_independence_of_each_setting():
    assert CHOSEN.cpu_independent and CHOSEN.activations == "QUInt8"
    assert Int8Settings(reduce_range=True).cpu_independent                          # 7-bit U8S8
    assert Int8Settings(weights="QUInt8", reduce_range=False).cpu_independent      # U8U8
    assert not Int8Settings(reduce_range=False).cpu_independent                    # 8-bit U8S8
    assert not Int8Settings(activations="QInt8", symmetric_activations=True).cpu_independent
    assert CHOSEN.to_dict()["cpu_independent"] is True
    assert "7-bit w" in Int8Settings().label and "8-bit w" in Int8Settings(reduce_range=False).label
    assert CHOSEN.label.startswith("u8u8") and "first 2 convs float" in CHOSEN.label


def test_the_export_records_the_chosen_settings(exported):
    _, spec = exported
    q = spec["int8"]["quantization"]
    for key, value in CHOSEN.to_dict().items():
        assert q[key] == value, key
    assert q["settings"] == CHOSEN.label
    # the promise behind cpu_independent, checked on the written weights: uint8 weights (U8U8
    # kernels widen before multiplying), or int8 with |w| <= 64 so that a pair sum
    # 255 * |w_a| + 255 * |w_b| fits int16 (vpmaddubsw cannot saturate)
    wr = q["weight_range"]
    expected = "uint8" if CHOSEN.weights == "QUInt8" else "int8"
    assert wr["dtypes"] == [expected] and wr["u8s8_pair_sum_fits_int16"] is True
    if expected == "int8":
        assert -64 <= wr["min"] and wr["max"] <= 64
    assert spec["int8"]["passed"] and spec["default"] == "int8"


@pytest.mark.parametrize("settings, fits, dtype", [
    (Int8Settings(reduce_range=False), False, "int8"),          # full 8-bit U8S8: can saturate
    (Int8Settings(weights="QUInt8", reduce_range=False), True, "uint8"),   # U8U8
])
def test_weight_range_tells_saturating_weights_apart(exported, inputs, tmp_path, settings,
                                                     fits, dtype):
    out, _ = exported
    q8 = tmp_path / "q.onnx"
    info = quantize_int8(out / "model.onnx", q8, inputs[0][:4], settings=settings)
    wr = weight_range(q8)
    assert wr == info["weight_range"] and wr["dtypes"] == [dtype]
    assert wr["u8s8_pair_sum_fits_int16"] is fits
    if dtype == "int8":
        assert max(-wr["min"], wr["max"]) > 64   # the 8-bit range is really used
    assert info["cpu_independent"] is settings.cpu_independent


def _three_output_graph(path):
    """input -> stem conv -> relu -> conv (shared) -> {GAP -> flatten -> gemm -> sigmoid:
    probability; GAP: features; 1x1 conv -> relu: cam}."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w_stem"], ["s"], name="stem"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w_body"], ["a"], name="body", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", "w_fc"], ["logit"], name="fc", transB=1),
        helper.make_node("Sigmoid", ["logit"], ["probability"], name="sigmoid"),
        helper.make_node("Conv", ["a", "w_cam"], ["c"], name="cam_conv"),
        helper.make_node("Relu", ["c"], ["cam"], name="cam_relu"),
    ]
    graph = helper.make_graph(
        nodes, "three", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 6, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
         for n in ("probability", "cam", "features")],
        [init("w_stem", 3, 6, 1, 1), init("w_body", 4, 3, 3, 3), init("w_fc", 1, 4),
         init("w_cam", 1, 4, 1, 1)])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_float_nodes_follow_the_outputs(tmp_path):
    path = _three_output_graph(tmp_path / "three.onnx")
    # every node not shared by all three outputs: the head, the CAM branch, the features' GAP
    assert head_nodes(path) == sorted(["gap", "flatten", "fc", "sigmoid", "cam_conv",
                                       "cam_relu"])
    assert backbone_convs(path) == ["stem", "body"]      # shared by all outputs, in order


def test_first_and_last_convolutions_can_stay_float(exported, inputs, tmp_path):
    out, _ = exported
    info = quantize_int8(out / "model.onnx", tmp_path / "q.onnx", inputs[0][:4],
                         settings=Int8Settings(float_first_convs=2, float_last_convs=1))
    convs = backbone_convs(tmp_path / "q.onnx")   # the quantised graph keeps the node names
    assert len(convs) > 3
    assert {convs[0], convs[1], convs[-1]} <= set(info["float_nodes"])
    assert not {convs[2], convs[-2]} & set(info["float_nodes"])
    assert info["float_first_convs"] == 2 and info["float_last_convs"] == 1
