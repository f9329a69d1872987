"""A tiny ONNX model with the spinefx contract (input -> probability, cam), built in
milliseconds with onnx.helper, so runtime tests need neither torch nor a trained network.

probability = sigmoid(10 * (mean(input) - 0.4)); cam = ReLU(8x8 average pool of channel 1).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spinefx.runtime import PreprocessConfig
from spinefx.runtime.model_files import FORMAT, sha256_file


def expected_probability(batch: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-10 * (batch.reshape(len(batch), -1).mean(1) - 0.4)))


def write_tiny_model(folder: Path, image_size: int = 64, threshold: float = 0.5,
                     synthetic: bool = True) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    s, h = image_size, image_size // 8
    init = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes_all"),
            numpy_helper.from_array(np.array(10.0, np.float32), "scale"),
            numpy_helper.from_array(np.array(-4.0, np.float32), "bias"),
            numpy_helper.from_array(np.array([1], np.int64), "c_start"),
            numpy_helper.from_array(np.array([2], np.int64), "c_end"),
            numpy_helper.from_array(np.array([1], np.int64), "c_axis")]
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes_all"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "scale"], ["a"]),
        helper.make_node("Add", ["a", "bias"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["probability"]),
        helper.make_node("Slice", ["input", "c_start", "c_end", "c_axis"], ["c"]),
        helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Squeeze", ["p", "c_axis"], ["q"]),
        helper.make_node("Relu", ["q"], ["cam"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_spinefx",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 6, s, s])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", h, h])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    config = PreprocessConfig(image_size=image_size)
    spec = {
        "format": FORMAT, "name": "tiny-test-model",
        "files": {"fp32": {"path": "model.onnx", "sha256": sha256_file(folder / "model.onnx")}},
        "default": "fp32",
        "input": {"name": "input", "shape": [None, 6, s, s],
                  "channels": list(config.channel_names)},
        "outputs": {"probability": "probability", "cam": "cam"},
        "preprocessing": config.to_dict(), "classes": ["benign", "malignant"],
        "threshold": threshold, "metrics": {},
        "training_data": {"description": "none: a hand-made test graph", "synthetic": synthetic},
    }
    (folder / "model.json").write_text(json.dumps(spec, indent=2))
    return folder
