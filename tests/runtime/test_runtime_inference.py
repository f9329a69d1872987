"""Torch-free inference, overlays and `spinefx predict` on a tiny hand-made ONNX model."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image

from spinefx.cli import main
from spinefx.runtime import PreprocessConfig, align_pair, build_six_channel, load_series
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.inference import Predictor, place_cam
from spinefx.runtime.model_files import ModelIntegrityError, read_model_spec
from tests.helpers.onnx_model import expected_probability

pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")


def test_predictor_verifies_sha256_and_refuses_tampering(tiny_model, tmp_path) -> None:
    predictor = Predictor(tiny_model)
    assert predictor.provider == "CPUExecutionProvider"
    assert len(predictor.sha256) == 64
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match model.json"):
        Predictor(bad)


def test_probability_and_cam_follow_the_graph(tiny_model, malignant_study) -> None:
    _, t1_dir, t2_dir, case = malignant_study
    t1, t2 = load_series(t1_dir), load_series(t2_dir)
    predictor = Predictor(tiny_model, snap_roi=False)   # the graph at exactly this box
    pred = predictor.predict_volumes(t1, t2, case.slice, box=case.box)
    direct = build_six_channel(align_pair(t1, t2), case.slice, box=case.box,
                               config=PreprocessConfig(image_size=64))
    assert pred.probability == pytest.approx(float(expected_probability(direct.array[None])[0]),
                                             abs=1e-5)
    assert pred.label == ("malignant" if pred.probability >= 0.5 else "benign")
    x0, y0, x1, y1 = pred.roi
    inside = pred.cam_slice[max(y0, 0):y1, max(x0, 0):x1]
    assert inside.max() == pytest.approx(1.0, abs=0.01)  # bilinear upsampling rounds the peak
    outside = pred.cam_slice.copy()
    outside[max(y0, 0):y1, max(x0, 0):x1] = 0
    assert outside.max() == 0
    assert set(pred.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_batch_run_matches_single_runs(tiny_model) -> None:
    predictor = Predictor(tiny_model)
    batch = np.random.default_rng(0).random((3, 6, 64, 64), dtype=np.float32)
    prob, cam = predictor.run(batch)
    assert prob.shape == (3,) and cam.shape == (3, 8, 8)
    np.testing.assert_allclose(prob, expected_probability(batch), atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        predictor.run(batch[:, :5])


def test_place_cam_clips_rois_past_the_edge() -> None:
    cam = np.ones((4, 4), np.float32)
    out = place_cam(cam, (-10, -10, 15, 15), (20, 25))
    assert out.shape == (20, 25)
    assert out[:15, :15].min() == pytest.approx(1.0)
    assert out[15:, :].max() == 0 and out[:, 15:].max() == 0


def test_cli_predict_writes_result_overlay_and_secondary_capture(tiny_model, malignant_study,
                                                                 tmp_path, capsys) -> None:
    folder, t1_dir, _, case = malignant_study
    out = tmp_path / "out"
    box = ",".join(str(v) for v in case.box)
    before = sorted(p.name for p in folder.rglob("*"))
    rc = main(["predict", str(folder), "--box", box, "--slice", str(case.slice),
               "--model", str(tiny_model), "--out", str(out), "--dicom", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in folder.rglob("*")) == before  # the input is untouched
    result = json.loads((out / "result.json").read_text())
    assert 0 <= result["probability"] <= 1 and result["label"] in ("benign", "malignant")
    assert result["model_sha256"] == read_model_spec(tiny_model).file()[2]
    assert result["slice"] == case.slice and result["synthetic_model"] is True
    overlay = Image.open(out / "overlay.png")
    assert overlay.mode == "RGB" and overlay.width > overlay.height
    # the capture joins the source study and references the source series
    src = pydicom.dcmread(next(t1_dir.iterdir()), stop_before_pixels=True)
    sc = pydicom.dcmread(out / "overlay_sc.dcm")
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.file_meta.MediaStorageSOPClassUID == sc.SOPClassUID
    assert sc.StudyInstanceUID == src.StudyInstanceUID
    # patient data: only what the source study carried, copied (PACS files it with the study)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs",
                    "PatientAddress", "PatientTelephoneNumbers"):
        assert keyword not in sc or (keyword in src and sc[keyword].value == src[keyword].value)
    assert sc.SeriesInstanceUID != src.SeriesInstanceUID
    assert sc.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    np.testing.assert_array_equal(sc.pixel_array, np.asarray(overlay))
    # no PHI where a person or a log can see it
    name = str(src.PatientName)
    for text in (captured.out, captured.err, (out / "result.json").read_text()):
        assert name not in text and str(src.PatientID) not in text


def test_cli_predict_refuses_output_inside_the_study(tiny_model, malignant_study, capsys) -> None:
    folder, _, _, case = malignant_study
    rc = main(["predict", str(folder), "--box", ",".join(map(str, case.box)),
               "--model", str(tiny_model), "--out", str(folder / "results")])
    assert rc == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (folder / "results").exists()


def test_cli_predict_slice_without_a_location_is_a_usage_error(tiny_model, malignant_study,
                                                               tmp_path, capsys) -> None:
    """No location at all localises every vertebra (tests/runtime/test_predict_whole_spine.py);
    a slice with no box or centre says which is missing."""
    assert main(["predict", str(malignant_study[0]), "--model", str(tiny_model), "--slice", "5",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--box" in capsys.readouterr().err


def test_manifest_batch_reports_a_bad_case_and_goes_on(tiny_model, malignant_study, tmp_path,
                                                       capsys) -> None:
    folder, t1_dir, t2_dir, case = malignant_study
    manifest = tmp_path / "m.csv"
    rows = [("good", t1_dir, t2_dir), ("broken", tmp_path / "missing", t2_dir),
            ("good2", t1_dir, t2_dir)]
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1",
                    "box_y1"])
        for cid, a, b in rows:
            w.writerow([cid, "malignant", a, b, case.slice, *case.box])
    out = tmp_path / "batch"
    # the series lie outside the manifest's folder: allowed here explicitly
    assert main(["predict", "--manifest", str(manifest), "--model", str(tiny_model),
                 "--out", str(out), "--no-progress", "--allow-outside"]) == 0
    got = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["status"] for r in got] == ["ok", "error", "ok"]
    assert "missing" in got[1]["error"] and got[0]["probability"] == got[2]["probability"]


def test_predict_without_bundled_model_says_so(malignant_study, tmp_path, capsys,
                                               monkeypatch) -> None:
    import spinefx.runtime.model_files as mf

    monkeypatch.setattr(mf, "BUNDLED_DIR", tmp_path / "nowhere")
    folder, _, _, case = malignant_study
    rc = main(["predict", str(folder), "--box", ",".join(map(str, case.box)),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "no bundled model" in capsys.readouterr().err


def test_secondary_capture_needs_dicom_input(tiny_model, tmp_path) -> None:
    from spinefx.runtime.predict import predict_study

    img = (np.random.default_rng(1).random((80, 80)) * 255).astype(np.uint8)
    for name in ("t1.png", "t2.png"):
        Image.fromarray(img).save(tmp_path / name)
    with pytest.raises(SpineFXError, match="needs DICOM input"):
        predict_study(Predictor(tiny_model), None, tmp_path / "out", t1=str(tmp_path / "t1.png"),
                      t2=str(tmp_path / "t2.png"), slice_index=0, box=(20, 20, 60, 60),
                      dicom=True)


def test_box_text_is_parsed_one_way_for_cli_and_demo() -> None:
    from spinefx.runtime.errors import RoiError
    from spinefx.runtime.predict import parse_numbers

    assert parse_numbers("1,2, 3;4", 4, "--box") == (1.0, 2.0, 3.0, 4.0)
    for bad in ("1,2,3", "1,2,x,4", "1,2,nan,4"):
        with pytest.raises(RoiError, match="--box must be 4 numbers"):
            parse_numbers(bad, 4, "--box")
