"""The exported graph: checker-clean, dynamic batch, and both parity gates (and that they bite)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spinefx.export.onnx_export import (
    CamModel,
    ParityError,
    check_onnx,
    gradcam_postprocess,
    gradcam_reference,
    ort_session,
    pearson,
    run_session,
)


def test_onnx_is_checker_clean_single_file_with_dynamic_batch(settings, exported, inputs):
    out, spec = exported
    info = check_onnx(out / "model.onnx")          # onnx.checker full_check + structure
    assert info["opset"] >= 17
    assert not list(out.glob("*.data")), "external data written beside the model"
    assert spec["input"]["shape"] == [None, 6, settings.image_size, settings.image_size]
    session = ort_session(out / "model.onnx")
    x = inputs[0]
    p1, c1 = session.run(["probability", "cam"], {"input": x[:1]})
    p3, c3 = session.run(["probability", "cam"], {"input": x[:3]})
    assert p1.shape == (1,) and c1.shape == (1, 2, 2)
    assert p3.shape == (3,) and c3.shape == (3, 2, 2)
    np.testing.assert_allclose(p1, p3[:1], atol=1e-6)
    np.testing.assert_allclose(c1, c3[:1], rtol=1e-4, atol=1e-5)


def test_probability_parity_with_torch(exported, inputs, model):
    out, spec = exported
    gate = spec["parity"]["probability"]
    assert gate["passed"] and gate["measured"] <= 1e-4 and gate["n_cases"] == 12
    p_onnx, _ = run_session(ort_session(out / "model.onnx"), inputs[0])
    with torch.no_grad():
        p_torch = torch.sigmoid(model(torch.from_numpy(inputs[0]))).numpy()
    assert np.abs(p_onnx - p_torch).max() <= 1e-4
    assert p_torch.std() > 0.05, "the test model should not give every case the same probability"


def test_in_graph_cam_matches_pytorch_grad_cam(settings, exported, inputs, model):
    out, spec = exported
    gate = spec["parity"]["cam"]
    assert gate["passed"] and gate["verified"] and gate["n_compared"] == 12
    assert gate["measured"] >= 0.999
    # independently: grad-cam's GradCAM on layer4 vs the ONNX map, post-processed alike
    _, cams = run_session(ort_session(out / "model.onnx"), inputs[0])
    reference = gradcam_reference(model, inputs[0])
    ours = gradcam_postprocess(cams, settings.image_size)
    assert reference.shape == ours.shape == (12, settings.image_size, settings.image_size)
    assert min(pearson(a, b) for a, b in zip(ours, reference)) >= 0.999
    # and the raw in-graph map is Grad-CAM's map times h*w (the positive constant)
    with torch.no_grad():
        feats = model.forward_features(torch.from_numpy(inputs[0][:2]))
        raw = torch.relu(torch.einsum("bkhw,k->bhw", feats, model.head.weight[0])).numpy()
    np.testing.assert_allclose(cams[:2], raw, rtol=1e-3, atol=1e-4)


def _perturb(monkeypatch, what: str):
    original = CamModel.forward

    def forward(self, x):
        probability, cam = original(self, x)
        if what == "probability":
            return probability + 1e-3, cam
        return probability, torch.flip(cam, dims=(-1, -2)) + cam.mean() * torch.rand_like(cam)
    monkeypatch.setattr(CamModel, "forward", forward)


@pytest.mark.parametrize("what, gate", [("probability", "probability"), ("cam", "CAM")])
def test_broken_export_fails_the_gate_loudly(run_dir, tmp_path, monkeypatch, what, gate):
    from spinefx.export import export_model
    from spinefx.runtime.errors import SpineFXError

    _perturb(monkeypatch, what)
    out = tmp_path / "model"
    with pytest.raises(ParityError) as info:
        export_model(run_dir, out, log=None)
    message = str(info.value)
    assert isinstance(info.value, SpineFXError)
    assert f"{gate} parity gate FAILED" in message and "measured" in message
    if what == "probability":
        assert "<= 0.0001" in message and info.value.measured >= 9e-4
    else:
        assert ">= 0.999" in message and info.value.measured < 0.999
    assert not out.exists(), "a failed export must not leave a model folder"
    assert not list(tmp_path.glob(".spinefx-export-*")), "staging folder left behind"


def test_model_json_records_the_gates(exported):
    _, spec = exported
    text = json.dumps(spec)
    assert "NaN" not in text and "Infinity" not in text
    assert spec["export"]["exporter"] in ("dynamo", "torchscript")
    assert spec["outputs"] == {**spec["outputs"], "probability": "probability", "cam": "cam"}
