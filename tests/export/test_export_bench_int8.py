"""`spinefx bench`'s int8 parts: an fp16-only bundle still gets an int8 row and an int8
runtime process (its weights cast back to float32 first), and the targets line reads the
measurements (correctness only: no wall-time or memory bound is asserted)."""
from __future__ import annotations

import json
import shutil

import numpy as np

from spinefx.export.bench import format_targets, int8_runtime_profile
from spinefx.export.compress import fp16_weights
from spinefx.export.onnx_export import ort_session, run_session
from spinefx.export.quantize import float32_weights
from spinefx.export.variants import file_entry


def _fp16_only_copy(out, dest):
    """The exported folder as a bundle like weights/: only the fp16-weights file."""
    dest.mkdir()
    spec = json.loads((out / "model.json").read_text())
    fp16_weights(out / "model.onnx", dest / "model.fp16.onnx")
    spec["files"] = {"fp16": file_entry(dest / "model.fp16.onnx", "float16 weights")}
    spec["default"] = "fp16"
    (dest / "model.json").write_text(json.dumps(spec))
    return dest


def test_float32_weights_undoes_fp16_storage_exactly(exported, inputs, tmp_path):
    import onnx

    out, _ = exported
    f16 = tmp_path / "m.fp16.onnx"
    fp16_weights(out / "model.onnx", f16)
    f32 = float32_weights(f16, tmp_path / "m.fp32.onnx")
    assert not [n for n in onnx.load(str(f32)).graph.node if n.op_type == "Cast"
                and n.name.endswith("__cast")]
    x = inputs[0][:3]
    p16, c16 = run_session(ort_session(f16), x)
    p32, c32 = run_session(ort_session(f32), x)
    np.testing.assert_allclose(p32, p16, atol=1e-6)   # same weights, same float32 arithmetic
    np.testing.assert_allclose(c32, c16, atol=1e-5)


def test_int8_runtime_process_with_the_folders_int8_file(exported):
    out, spec = exported
    assert "int8" in spec["files"]
    profile = int8_runtime_profile(out, size=256, n_slices=12)
    assert profile["variant"] == "int8" and profile["int8_from"] == "folder"
    assert profile["torch_loaded"] is False and profile["peak_rss_mib"] > 0


def test_int8_runtime_process_of_an_fp16_only_bundle(exported, tmp_path):
    bundle = _fp16_only_copy(exported[0], tmp_path / "bundle")
    before = sorted(p.name for p in bundle.iterdir())
    profile = int8_runtime_profile(bundle, size=256, n_slices=12)
    assert profile["variant"] == "int8" and profile["int8_from"].startswith("quantised here")
    assert sorted(p.name for p in bundle.iterdir()) == before   # the bundle is left as it was
    shutil.rmtree(bundle)


def test_targets_line_reads_the_measurements():
    rows = [{"variant": "torch eager", "batch": 1, "median_ms": 100.0},
            {"variant": "ORT int8", "batch": 1, "median_ms": 25.0},
            {"variant": "ORT int8", "batch": 8, "median_ms": 400.0}]
    text = format_targets({"rows": rows, "runtime_process_int8": {"peak_rss_mib": 250.0}})
    assert "4.00x faster (target >= 3x: met)" in text
    assert "250 MiB (target <= 200 MiB: missed)" in text
    slow = format_targets({"rows": [{**rows[0]}, {**rows[1], "median_ms": 50.0}]})
    assert "2.00x faster (target >= 3x: missed)" in slow and "RSS" not in slow
