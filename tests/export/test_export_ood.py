"""The export's ``features`` output and OOD fit (export/ood.py) on the tiny fixture model:
the graph's pooled features match torch's, model.json's ``ood`` block is complete and its
threshold is the stated quantile of out-of-fold scores, and the runtime scores with it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spinefx.export.exporter import stratified_order
from spinefx.export.onnx_export import ort_session, run_features, run_session, torch_features
from spinefx.export.ood import fit_gaussian, out_of_fold_scores, patient_folds, usable_k
from spinefx.runtime.inference import Predictor
from spinefx.runtime.ood import FORMULA, OodScorer


def test_features_output_matches_torch_and_leaves_probability_alone(exported, model, inputs):
    out, spec = exported
    x = inputs[0]
    assert spec["outputs"]["features"] == "features"
    assert spec["outputs"]["features_shape"] == [None, 2048]
    session = ort_session(out / "model.onnx")
    assert [o.name for o in session.get_outputs()] == ["probability", "cam", "features"]
    ours, ref = run_features(session, x), torch_features(model, x)
    assert ours.shape == (len(x), 2048)
    assert np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max()
    # the head is linear on exactly these features: probability = sigmoid(w . f + b)
    w = model.head.weight.detach().double().numpy()[0]
    b = float(model.head.bias.detach()[0])
    prob, _ = run_session(session, x)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-(ours.astype(np.float64) @ w + b))),
                               atol=1e-5)
    assert spec["parity"]["features"]["passed"] is True
    assert spec["parity"]["probability"]["measured"] <= 1e-4   # parity as before


def test_ood_block_is_complete_and_small(exported):
    out, spec = exported
    ood = spec["ood"]
    k = ood["k"]
    assert ood["formula"] == FORMULA and 0 < ood["quantile"] < 1
    assert np.shape(ood["mean"]) == (2048,) and np.shape(ood["components"]) == (k, 2048)
    assert np.shape(ood["variances"]) == (k,) and min(ood["variances"]) > 0
    assert ood["residual_scale"] > 0 and ood["threshold"] > 0
    components = np.asarray(ood["components"])
    np.testing.assert_allclose(components @ components.T, np.eye(k), atol=1e-4)  # rounded
    assert ood["fitted_on"]["n_cases"] == 12 and "description" in ood["fitted_on"]
    assert (out / "model.json").stat().st_size < 2 * 2 ** 20
    # the arrays are written compactly (one component per line): valid JSON, clearly fewer
    # bytes than the indented document (0.55 of it measured at k = 4 and k = 11)
    text = (out / "model.json").read_text()
    written = json.loads(text)
    assert written["ood"]["components"] == ood["components"]
    assert len(text) < 0.7 * len(json.dumps(written, indent=2))
    kinds = spec["training_data"]["t2_kinds"]
    assert sum(kinds.values()) == 12 and set(kinds) <= {"T2", "T2 fat-suppressed", "STIR"}
    spacing = spec["training_data"]["slice_spacing_mm"]
    assert 0 < spacing["min"] <= spacing["max"] < 20


def _export_order(inputs):
    """Features' rows in the exporter's order (stratified, seed 0)."""
    x, _, cases = inputs
    order = stratified_order(cases, 0)
    return x[order], [cases[i] for i in order]


@pytest.fixture(scope="module")
def fitted_inputs(cohort, inputs):
    """(inputs at the boxes the runtime gives the model, labels, cases), manifest order: each
    manifest box fitted to the body under its centre (runtime.roi_snap), as the export fits
    the OOD score; the manifest-box inputs must differ for some cases, or the tests below
    could not tell the two apart."""
    from spinefx.export.exporter import prepare_inputs
    from spinefx.runtime import PreprocessConfig, read_manifest

    fitted: list[np.ndarray] = []
    x, cases, _ = prepare_inputs(read_manifest(cohort), PreprocessConfig(image_size=64),
                                 fitted=fitted)
    np.testing.assert_array_equal(x, inputs[0])
    moved = [float(np.abs(a - b).max()) for a, b in zip(x, fitted)]
    assert len(fitted) == len(x) and max(moved) > 0.05, moved
    return np.stack(fitted), inputs[1], cases


def test_threshold_is_the_stated_quantile_of_out_of_fold_scores(exported, model,
                                                               fitted_inputs):
    _, spec = exported
    ood = spec["ood"]
    x, cases = _export_order(fitted_inputs)
    features = torch_features(model, x).astype(np.float64)
    folds = patient_folds(cases, 5)
    assert usable_k(folds, 32) == ood["k"]
    # no case is scored by a Gaussian fitted on it: a fold's fit never contains the fold
    for fold in set(folds):
        held = np.asarray(folds) == fold
        fit = fit_gaussian(features[~held], ood["k"])
        scores = fit.scores(features[held])
        in_sample = fit.scores(features[~held])
        assert np.median(scores) > np.median(in_sample)  # held-out cases lie farther
    held_scores = out_of_fold_scores(features, folds, ood["k"])
    assert ood["threshold"] == pytest.approx(np.quantile(held_scores, ood["quantile"]),
                                             rel=1e-3)
    assert ood["held_out"]["flagged_rate"] == pytest.approx(
        np.mean(held_scores > ood["threshold"]), abs=1e-3)


def test_runtime_scores_gross_shifts_higher_and_flags_them(exported, inputs):
    out, _ = exported
    predictor = Predictor(out, variant="fp32")
    assert predictor.ood is not None
    x = inputs[0]
    _, _, features = predictor.run_all(x)
    assert features is not None
    own = predictor.ood.scores(features)
    rng = np.random.default_rng(0)
    noise = rng.random(x.shape, dtype=np.float32)
    shifted = []
    for a in (0.0, 0.5, 1.0):
        _, _, f = predictor.run_all(((1 - a) * x + a * noise).astype(np.float32))
        shifted.append(float(np.median(predictor.ood.scores(f))))
    assert shifted == sorted(shifted) and shifted[0] == pytest.approx(np.median(own), rel=1e-4)
    blank = np.zeros_like(x[:1])
    _, _, f_blank = predictor.run_all(blank)
    _, _, f_noise = predictor.run_all(noise[:1])
    threshold = predictor.ood.threshold
    assert predictor.ood.scores(f_blank)[0] > threshold
    assert predictor.ood.scores(f_noise)[0] > threshold
    # the exporter's own (training) cases lie mostly under the threshold
    assert np.mean(own > threshold) <= 0.25


def test_model_without_ood_block_loads_with_a_reason(exported, tmp_path):
    import shutil

    out, spec = exported
    copy = tmp_path / "no_ood"
    shutil.copytree(out, copy)
    raw = json.loads((copy / "model.json").read_text())
    raw["ood"] = None
    (copy / "model.json").write_text(json.dumps(raw))
    predictor = Predictor(copy, variant="fp32")
    assert predictor.ood is None and "no 'ood' block" in predictor.ood_reason
    assert OodScorer.from_spec(spec, ["probability", "cam"])[0] is None  # graph lacks it


def test_body_fraction_threshold_is_the_stated_quantile_of_the_cases(exported, inputs):
    from spinefx.export.ood import case_body_fraction
    from spinefx.runtime.ood import body_threshold

    _, spec = exported
    ood = spec["ood"]
    _, cases = _export_order(inputs)
    fractions = np.array([case_body_fraction(c, 50.0) for c in cases])
    assert np.median(fractions) >= 0.8        # the manifest boxes hold a vertebral body
    assert ood["body_fraction_threshold"] == pytest.approx(
        np.quantile(fractions, ood["body_fraction_quantile"]), abs=1e-5)
    assert body_threshold(spec) == ood["body_fraction_threshold"]
    held = ood["body_fraction_held_out"]
    assert held["n"] == 12 and held["flagged_rate"] == pytest.approx(
        np.mean(fractions < ood["body_fraction_threshold"]), abs=1e-3)
    assert "quantile" in ood["body_fraction_rule"]
    from spinefx.runtime.ood import CENTRAL

    assert ood["body_fraction_definition"]["central_area"] == list(CENTRAL)


def test_body_fraction_fit_and_its_failures():
    from pathlib import Path

    from spinefx.export.ood import add_body_fraction, fit_body_fraction
    from spinefx.runtime import Case

    values = np.linspace(0.0, 1.0, 101)
    keys = fit_body_fraction(values, "m.csv", quantile=0.05)
    assert keys["body_fraction_threshold"] == pytest.approx(0.05)
    assert keys["body_fraction_held_out"]["flagged_rate"] == pytest.approx(0.05, abs=0.011)
    with pytest.raises(ValueError):
        fit_body_fraction([0.5] * 4, "m.csv")
    lost = Case("x", "benign", Path("/nonexistent/t1"), Path("/nonexistent/t2"), 3,
                box=(1.0, 1.0, 9.0, 9.0))
    notes: list[str] = []
    info = add_body_fraction({"threshold": 1.0}, [lost] * 5, "m.csv", 50.0, notes.append)
    assert "body_fraction_threshold" not in info and info["threshold"] == 1.0
    assert info["body_fraction_note"].startswith("not fitted") and notes


def test_the_ood_fit_is_made_at_the_boxes_the_runtime_gives_the_model(exported, model, inputs,
                                                                      fitted_inputs):
    """The runtime scores the features of the box it fits to the body (runtime.roi_snap), so
    the export fits the Gaussian there, not at the manifest's boxes."""
    from spinefx.export.ood import FITTED_BOXES

    _, spec = exported
    ood = spec["ood"]
    assert ood["fitted_on"]["boxes"] == FITTED_BOXES
    fitted, _ = _export_order(fitted_inputs)
    given, _ = _export_order(inputs)
    mean = np.asarray(ood["mean"])
    np.testing.assert_allclose(mean, torch_features(model, fitted).mean(0), rtol=1e-4,
                               atol=1e-6)
    assert np.abs(mean - torch_features(model, given).mean(0)).max() > 0.01
