"""The runtime's out-of-distribution check (runtime/ood.py) and input warnings, end to end on
hand-made ONNX graphs (no torch): result.json's ``ood``, predictions.csv's ``ood`` column, the
CLI's plain-words warning, and ``ood: null`` with a reason for models without the check."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinefx.cli import main
from spinefx.phantom import write_phantom_study
from spinefx.runtime import PreprocessConfig, align_pair, build_six_channel, load_series
from spinefx.runtime.inference import Predictor
from spinefx.runtime.model_files import sha256_file
from spinefx.runtime.ood import (
    OOD_WARNING,
    OodScorer,
    fat_suppressed_warning,
    ood_score,
    spacing_warning,
    t2_kind,
    t2_kind_warning,
)
from tests.helpers.onnx_model import write_tiny_model

pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")

SIGMA = 0.01      # the fitted spread of the channel means: a clearly different input is far


def _add_features_output(folder: Path) -> None:
    """features = the six channel means (N, 6): a stand-in for the pooled layer4 features."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(folder / "model.onnx"))
    proto.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "hw"))
    proto.graph.node.append(helper.make_node("ReduceMean", ["input", "hw"], ["features"],
                                             keepdims=0))
    proto.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                            ["N", 6]))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(folder / "model.onnx"))
    spec = json.loads((folder / "model.json").read_text())
    spec["files"]["fp32"]["sha256"] = sha256_file(folder / "model.onnx")
    spec["outputs"]["features"] = "features"
    (folder / "model.json").write_text(json.dumps(spec))


def _ood_block(center: np.ndarray, threshold: float = 4.0) -> dict:
    """A Gaussian around ``center`` (spread SIGMA in every direction), k = 2."""
    return {"method": "test", "k": 2, "mean": center.tolist(),
            "components": np.eye(len(center))[:2].tolist(), "variances": [SIGMA ** 2] * 2,
            "residual_scale": SIGMA ** 2, "threshold": threshold, "quantile": 0.99}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood_study")
    t1_dir, t2_dir, case = write_phantom_study(root / "study", seed=3, label="malignant",
                                               t2_variant="T2", case_id="p3")
    t1, t2 = load_series(t1_dir), load_series(t2_dir)
    x = build_six_channel(align_pair(t1, t2), case.slice, box=case.box,
                          config=PreprocessConfig(image_size=64)).array
    return root / "study", t1_dir, t2_dir, case, x.reshape(6, -1).mean(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory, study) -> dict[str, Path]:
    """old: no features output; no_block: features but no 'ood'; ood: both, fitted around the
    study's own input."""
    root = tmp_path_factory.mktemp("ood_models")
    old = write_tiny_model(root / "old")
    no_block = write_tiny_model(root / "no_block")
    _add_features_output(no_block)
    with_ood = write_tiny_model(root / "ood")
    _add_features_output(with_ood)
    spec = json.loads((with_ood / "model.json").read_text())
    spec["ood"] = _ood_block(study[4])
    spec["training_data"]["slice_spacing_mm"] = {"min": 3.0, "max": 4.5}
    spec["training_data"]["t2_kinds"] = {"T2": 10}
    (with_ood / "model.json").write_text(json.dumps(spec))
    return {"old": old, "no_block": no_block, "ood": with_ood}


def test_score_is_the_documented_formula() -> None:
    """Mahalanobis in the k directions + residual / residual_scale, checked against a direct
    computation with the full covariance of a rank-k + isotropic-residual Gaussian."""
    rng = np.random.default_rng(0)
    dim, k = 12, 3
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    variances, rho = np.array([4.0, 2.0, 1.0]), 0.25
    block = {"mean": rng.normal(size=dim), "components": basis[:, :k].T,
             "variances": variances, "residual_scale": rho}
    f = rng.normal(size=(5, dim))
    cov = basis @ np.diag([*variances, *[rho] * (dim - k)]) @ basis.T
    d = f - block["mean"]
    direct = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))
    np.testing.assert_allclose(ood_score(block, f), direct, rtol=1e-10)
    # a gross shift only grows the score
    shifted = [ood_score(block, block["mean"] + t * basis[:, 5])[0] for t in (0, 1, 10, 100)]
    assert shifted == sorted(shifted) and shifted[0] == 0 and shifted[-1] == pytest.approx(200)


def test_result_json_carries_ood_and_the_cli_warns(models, study, tmp_path, capsys) -> None:
    folder, _, _, case, _ = study
    box = ",".join(str(v) for v in case.box)
    out = tmp_path / "own"
    # --keep-box: the features of exactly the box the OOD block was fitted on
    assert main(["predict", str(folder), "--box", box, "--slice", str(case.slice), "--model",
                 str(models["ood"]), "--out", str(out), "--no-progress", "--keep-box"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["ood"]["flagged"] is False and result["ood"]["score"] < 1.0
    assert "roi_snap" not in result
    assert result["ood"]["threshold"] == 4.0 and "training" in result["ood"]["meaning"]
    printed = capsys.readouterr()
    assert OOD_WARNING not in result["warnings"] and OOD_WARNING not in printed.err
    assert "out-of-distribution check: score" in printed.out and "FLAGGED" not in printed.out
    # another vertebra's box: other channel means, far beyond SIGMA -> flagged, said plainly
    x0, y0, x1, y1 = case.box
    moved = f"{x0},{y0 + 3 * (y1 - y0)},{x1},{y1 + 3 * (y1 - y0)}"
    out2 = tmp_path / "moved"
    assert main(["predict", str(folder), "--box", moved, "--slice", str(case.slice), "--model",
                 str(models["ood"]), "--out", str(out2), "--no-progress"]) == 0
    flagged = json.loads((out2 / "result.json").read_text())
    assert flagged["ood"]["flagged"] is True and flagged["ood"]["score"] > 4.0
    assert OOD_WARNING in flagged["warnings"]
    printed = capsys.readouterr()
    assert f"warning: {OOD_WARNING}" in printed.err and "FLAGGED" in printed.out


@pytest.mark.parametrize("which, reason", [("old", "no 'features' output"),
                                           ("no_block", "no 'ood' block")])
def test_models_without_the_check_give_null_with_a_reason(models, study, tmp_path, capsys,
                                                          which, reason) -> None:
    folder, _, _, case, _ = study
    out = tmp_path / which
    assert main(["predict", str(folder), "--box", ",".join(map(str, case.box)), "--model",
                 str(models[which]), "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["ood"] is None and reason in result["ood_reason"]
    assert "out-of-distribution check: none (" in capsys.readouterr().out
    assert Predictor(models[which]).run_all(np.zeros((1, 6, 64, 64), np.float32))[2] is None


def test_predictions_csv_has_an_ood_column(models, study, tmp_path) -> None:
    _, t1_dir, t2_dir, case, _ = study
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1",
                    "box_y1"])
        w.writerow(["own", "malignant", t1_dir, t2_dir, case.slice, *case.box])
        x0, y0, x1, y1 = case.box
        w.writerow(["moved", "malignant", t1_dir, t2_dir, case.slice, x0, y0 + 3 * (y1 - y0),
                    x1, y1 + 3 * (y1 - y0)])
    rows = {}
    for which in ("ood", "old"):
        out = tmp_path / which
        assert main(["predict", "--manifest", str(manifest), "--model", str(models[which]),
                     "--out", str(out), "--no-progress", "--allow-outside"]) == 0
        rows[which] = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["ood"] for r in rows["ood"]] == ["false", "true"]
    assert float(rows["ood"][1]["ood_score"]) > 4.0
    assert [r["ood"] for r in rows["old"]] == ["", ""]


def test_same_series_and_spacing_warnings(models, study, tmp_path, capsys) -> None:
    _, t1_dir, _, case, _ = study
    out = tmp_path / "same"
    assert main(["predict", "--t1", str(t1_dir), "--t2", str(t1_dir), "--box",
                 ",".join(map(str, case.box)), "--slice", str(case.slice), "--model",
                 str(models["ood"]), "--out", str(out), "--no-progress"]) == 0
    warnings = json.loads((out / "result.json").read_text())["warnings"]
    assert any("same series" in w for w in warnings)
    assert "same series" in capsys.readouterr().err
    raw = {"training_data": {"slice_spacing_mm": {"min": 3.0, "max": 4.5}}}
    assert spacing_warning(raw, 4.0) is None and spacing_warning(raw, 2.5) is None
    assert "10.0 mm apart" in spacing_warning(raw, 10.0)
    assert spacing_warning(raw, 1.0) is not None and spacing_warning({}, 10.0) is None


def test_t2_kind_warnings_follow_the_training_record() -> None:
    assert t2_kind("SYNTHETIC SAG STIR") == "STIR" and t2_kind("x", "STIR") == "STIR"
    assert t2_kind("SYNTHETIC SAG T2 TSE FS") == "T2 fat-suppressed"
    assert t2_kind("t2_tse_fatsat_sag") == "T2 fat-suppressed"
    assert t2_kind("SYNTHETIC SAG T2 TSE") == "T2" and t2_kind("T2 FSE") == "T2"
    seen = {"training_data": {"t2_kinds": {"T2": 5, "STIR": 2}}}
    assert t2_kind_warning(seen, "STIR") is None
    assert "only STIR, T2" in t2_kind_warning(seen, "T2 fat-suppressed")
    assert t2_kind_warning({}, "T2 fat-suppressed") == fat_suppressed_warning("T2 FS")
    assert t2_kind_warning({}, "T2") is None


def test_a_malformed_block_gives_a_reason_not_a_crash() -> None:
    outputs = {"outputs": {"features": "features"}}
    good = _ood_block(np.zeros(6))
    assert OodScorer.from_spec({**outputs, "ood": good}, ["features"])[0] is not None
    for bad in ({k: v for k, v in good.items() if k != "mean"}, {**good, "variances": [0, 1]},
                {**good, "mean": [1.0, 2.0]}, {**good, "components": "x"}):
        scorer, reason = OodScorer.from_spec({**outputs, "ood": bad}, ["features"])
        assert scorer is None and "ood" in reason


def test_the_runtime_ood_path_imports_no_torch() -> None:
    code = ("import sys, spinefx.runtime.ood, spinefx.runtime.inference, "
            "spinefx.runtime.service, spinefx.runtime.predict, spinefx.runtime.segmentation; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_demo_shows_the_same_warning(models, study) -> None:
    from spinefx.demo.views import result_markdown

    _, t1_dir, t2_dir, case, _ = study
    t1, t2 = load_series(t1_dir), load_series(t2_dir)
    predictor = Predictor(models["ood"])
    x0, y0, x1, y1 = case.box
    own = predictor.predict_volumes(t1, t2, case.slice, box=case.box)
    moved = predictor.predict_volumes(t1, t2, case.slice,
                                      box=(x0, y0 + 3 * (y1 - y0), x1, y1 + 3 * (y1 - y0)))
    assert OOD_WARNING not in result_markdown(own, True)
    assert OOD_WARNING in result_markdown(moved, True)


# ---------------------------------------------------------------------------------------------
# the second signal: the vertebral-body fraction of the ROI, and the combined rule
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def body_fractions() -> dict[str, list[float]]:
    """Body fractions of one phantom (seed 5, benign, in memory) at its manifest box, the box
    moved onto the two nearest discs, and onto the image corner farthest from the spine."""
    from spinefx.runtime.ood import body_fraction
    from tests.helpers.phantoms import phantom_volumes

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from ood import background_box, disc_boxes  # benchmarks/ood.py: the same boxes
    finally:
        sys.path.pop(0)
    t1, _, case = phantom_volumes(5, "benign")
    k, box = case.slice, tuple(float(v) for v in case.box)
    spacing = (t1.slice_spacing, *t1.pixel_spacing)
    discs = disc_boxes(case.masks("t1")["discs"][k], box)
    assert len(discs) == 2
    return {"manifest": [body_fraction(t1.data, spacing, k, box)],
            "discs": [body_fraction(t1.data, spacing, k, d) for d in discs],
            "background": [body_fraction(t1.data, spacing, k,
                                         background_box(t1.data[k], box))]}


def test_body_fraction_is_high_on_the_body_and_low_off_it(body_fractions) -> None:
    assert body_fractions["manifest"][0] >= 0.8
    assert body_fractions["background"][0] <= 0.05
    assert max(body_fractions["discs"]) <= 0.5
    assert all(0.0 <= v <= 1.0 for values in body_fractions.values() for v in values)


def test_the_combined_rule_flags_when_either_signal_fires() -> None:
    from spinefx.runtime.ood import combine

    def feature(flagged: bool) -> dict:
        return {"flagged": flagged, "score": 5.0 if flagged else 1.0, "threshold": 4.0,
                "meaning": "x"}

    for feature_flag, fraction, fired in [(False, 0.9, []), (True, 0.9, ["feature score"]),
                                          (False, 0.1, ["no vertebral body"]),
                                          (True, 0.1, ["feature score", "no vertebral body"]),
                                          (False, None, [])]:
        out = combine(feature(feature_flag), fraction, 0.3)
        assert out["fired"] == fired and out["flagged"] is bool(fired)
        assert out["body_fraction_threshold"] == 0.3 and out["score"] == feature(feature_flag)[
            "score"]
        assert "vertebral body" in out["meaning"] and "Flagged when either fires" in out["meaning"]


def test_assess_ood_without_the_new_keys_is_the_feature_score(study) -> None:
    from spinefx.runtime.ood import assess_ood

    _, t1_dir, t2_dir, case, _ = study
    t1 = align_pair(load_series(t1_dir), load_series(t2_dir)).t1
    feature = {"flagged": False, "score": 1.0, "threshold": 4.0, "meaning": "m"}
    old = {"ood": _ood_block(np.zeros(6))}
    assert assess_ood(feature, old, t1, case.slice, case.box) is feature
    assert assess_ood(None, {"ood": {**old["ood"], "body_fraction_threshold": 0.3}}, t1,
                      case.slice, case.box) is None
    # with the key: the body fraction is measured on the study's own vertebra (not flagged)
    new = {"ood": {**old["ood"], "body_fraction_threshold": 0.3}}
    out = assess_ood(feature, new, t1, case.slice, case.box)
    assert out is not None and out["body_fraction"] >= 0.8 and out["flagged"] is False
    # a missing localiser: the feature score alone, and a note saying why
    missing = assess_ood(feature, new, t1, case.slice, case.box,
                         localiser_dir=Path(t1_dir) / "no-localiser")
    assert missing is not None and missing["body_fraction"] is None
    assert "not measured" in missing["body_fraction_note"] and missing["flagged"] is False
