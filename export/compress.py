"""A half-size ONNX file without changing the arithmetic: weights stored as float16.

Every large float32 initializer is stored as float16 and cast back to float32 by a ``Cast``
node in front of its users; onnxruntime folds those casts when the session starts, so the
network still computes in float32 (same speed as fp32, no fp16 kernels needed on a CPU) and the
only change is the rounding of each weight to 11 significant bits. Used for the bundled model,
which must stay <= 50 MB when int8 fails its gate. Gated like int8 (same held-out checks).
"""
from __future__ import annotations

import time
from os import PathLike

import numpy as np

MIN_ELEMENTS = 1024  # small tensors (biases, BN shapes, constants) stay float32: no gain, risk


def fp16_weights(fp32_path: str | PathLike, out_path: str | PathLike) -> dict:
    """Write ``out_path``: the model of ``fp32_path`` with float16-stored weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t0 = time.perf_counter()
    model = onnx.load(str(fp32_path))
    graph = model.graph
    casts, kept = [], []
    converted = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < MIN_ELEMENTS:
            kept.append(init)
            continue
        array = numpy_helper.to_array(init)
        if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
            kept.append(init)  # would overflow: leave it exact
            continue
        half = numpy_helper.from_array(array.astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__cast"))
        converted += array.size
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # casts first: graph nodes must be topologically sorted
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return {"method": "float16 weight storage, float32 compute (Cast folded at load)",
            "converted_weights": int(converted), "cast_nodes": len(casts),
            "seconds": round(time.perf_counter() - t0, 2)}
