"""The demo's named endpoints through gradio_client against a real server on 127.0.0.1:
an example, an uploaded phantom DICOM study (files and .zip), a PNG pair, and bad inputs,
each of which must come back as a readable message while the server keeps serving."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from gradio_client import handle_file
from PIL import Image


def _files(paths):
    return [handle_file(p) for p in paths]


def _ok(result):
    data, overlay = result
    assert data["status"] == "ok", data
    assert 0.0 <= data["probability"] <= 1.0
    assert data["label"] in ("benign", "malignant")
    assert data["disclaimer"].startswith("Research and teaching use only")
    assert overlay and Path(overlay).is_file()
    with Image.open(overlay) as im:
        assert im.width > 200 and im.height > 200
    return data


def _error(result, *words):
    data, overlay = result
    assert data["status"] == "error", data
    assert overlay is None
    message = data["error"]
    assert "Traceback" not in message and len(message) < 1000
    for w in words:
        assert w.lower() in message.lower(), message
    return message


def test_model_info_names_model_examples_and_disclaimer(client):
    info = client.predict(api_name="/model_info")
    assert info["ready"] and info["model"] == "tiny-test-model:fp32"
    assert info["synthetic"] is True
    assert {"phantom_malignant", "phantom_benign"} <= set(info["examples"])
    assert "not for diagnosis" in info["disclaimer"]


def test_example_case_runs_with_truth(client):
    data = _ok(client.predict("phantom_malignant", api_name="/predict_example"))
    assert data["truth"]["label"] == "malignant" and data["truth"]["synthetic"] is True
    assert data["synthetic_model"] is True
    assert data["model"] == "tiny-test-model:fp32" and len(data["model_sha256"]) == 64


def test_real_mri_examples_when_present(client, real_spine):
    for key in ("real_dzz", "real_aka3"):
        data = _ok(client.predict(key, api_name="/predict_example"))
        assert data["truth"]["label"] is None  # real MRI, no ground truth


def test_uploaded_phantom_dicom_study(client, phantom_study, dicom_files):
    t1_dir, t2_dir, case = phantom_study
    box = ",".join(str(v) for v in case.box)
    data = _ok(client.predict(_files(dicom_files(t1_dir, t2_dir)), "", "", case.slice, box, "", 0,
                              api_name="/predict_case"))
    assert data["slice"] == case.slice
    assert "T1" in data["series"]["t1"] and "T2" in data["series"]["t2"]
    x0, y0, x1, y1 = data["roi"]
    assert x0 <= case.box[0] and y0 <= case.box[1] and x1 >= case.box[2] and y1 >= case.box[3]


def test_uploaded_zip_with_centre_and_named_series(client, phantom_study, dicom_files, tmp_path):
    t1_dir, t2_dir, case = phantom_study
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in dicom_files(t1_dir, t2_dir):
            zf.write(p, f"export/{Path(p).parent.name}/{Path(p).name}")
    cx, cy = (case.box[0] + case.box[2]) / 2, (case.box[1] + case.box[3]) / 2
    data = _ok(client.predict([handle_file(archive)], "T1", "T2", -1, "", f"{cx},{cy}", 40,
                              api_name="/predict_case"))
    assert data["slice"] >= 0


def test_png_pair(client, png_pair):
    t1, t2, case, spacing = png_pair
    box = ",".join(str(v) for v in case.box)
    data = _ok(client.predict(_files(t1), _files(t2), spacing, case.slice, box, "", 0,
                              api_name="/predict_images"))
    assert data["slice"] == case.slice


# ------------------------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, phantom_study, dicom_files):
    t1_dir, t2_dir, _ = phantom_study
    root = tmp_path_factory.mktemp("bad")
    out = {}
    text = root / "notes.txt"
    text.write_text("this is not an image\n" * 20)
    out["non_image"] = [str(text)]
    files = dicom_files(t1_dir)
    trunc = root / "truncated"
    trunc.mkdir()
    for i, p in enumerate(files):
        data = Path(p).read_bytes()
        (trunc / f"{i}.dcm").write_bytes(data[: len(data) // 3] if i == 0 else data)
    out["truncated"] = dicom_files(trunc)
    out["t1_only"] = files
    ct = root / "ct"
    ct.mkdir()
    for p in dicom_files(t1_dir, t2_dir):
        ds = pydicom.dcmread(p)
        ds.Modality = "CT"
        ds.save_as(ct / Path(p).name)
    out["ct"] = dicom_files(ct)
    zbad = root / "bad.zip"
    zbad.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    out["damaged_zip"] = [str(zbad)]
    return out


def test_non_image_file(client, bad_inputs):
    _error(client.predict(_files(bad_inputs["non_image"]), "", "", -1, "10,10,50,50", "", 0,
                          api_name="/predict_case"), "no DICOM image series", "notes.txt")


def test_truncated_dicom_is_named(client, bad_inputs):
    _error(client.predict(_files(bad_inputs["truncated"]), "", "", -1, "10,10,50,50", "", 0,
                          api_name="/predict_case"), "0.dcm", "truncated")


def test_only_one_sequence(client, bad_inputs):
    _error(client.predict(_files(bad_inputs["t1_only"]), "", "", -1, "10,10,50,50", "", 0,
                          api_name="/predict_case"), "only one", "T1", "T2")


def test_ct_instead_of_mr(client, bad_inputs):
    _error(client.predict(_files(bad_inputs["ct"]), "", "", -1, "10,10,50,50", "", 0,
                          api_name="/predict_case"), "CT", "not MR")


def test_damaged_zip(client, bad_inputs):
    msg = _error(client.predict(_files(bad_inputs["damaged_zip"]), "", "", -1, "10,10,50,50", "", 0,
                                api_name="/predict_case"))
    assert "bad.zip" in msg or "DICOM" in msg


def test_box_outside_the_image(client, phantom_study, dicom_files):
    t1_dir, t2_dir, case = phantom_study
    _error(client.predict(_files(dicom_files(t1_dir, t2_dir)), "", "", case.slice,
                          "5000,5000,5100,5100", "", 0, api_name="/predict_case"), "outside")


@pytest.mark.parametrize("box, words", [("1,2,3", ["4 numbers"]), ("50,50,10,10", ["empty"]),
                                        ("", ["say where the vertebra is"])])
def test_malformed_box(client, png_pair, box, words):
    t1, t2, case, spacing = png_pair
    _error(client.predict(_files(t1[:4]), _files(t2[:4]), spacing, 1, box, "", 0,
                          api_name="/predict_images"), *words)


def test_only_t1_images(client, png_pair):
    t1, _, _, _ = png_pair
    _error(client.predict(_files(t1), [], 0, -1, "10,10,40,40", "", 0,
                          api_name="/predict_images"), "only T1")


def test_huge_image(client, tmp_path):
    big = tmp_path / "huge.png"
    Image.fromarray(np.zeros((4200, 4200), np.uint8)).save(big, optimize=True)
    small = tmp_path / "small.png"
    Image.fromarray((np.arange(64 * 64) % 255).reshape(64, 64).astype(np.uint8)).save(small)
    _error(client.predict([handle_file(big)], [handle_file(small)], 0, -1, "10,10,40,40", "", 0,
                          api_name="/predict_images"), "too large", "huge.png")


def test_slice_outside_the_series(client, phantom_study, dicom_files):
    t1_dir, t2_dir, case = phantom_study
    _error(client.predict(_files(dicom_files(t1_dir, t2_dir)), "", "", 99,
                          ",".join(map(str, case.box)), "", 0, api_name="/predict_case"),
           "outside the series")


def test_server_keeps_serving_after_bad_inputs(client):
    """Runs last in this file: every bad input above left the server healthy."""
    _ok(client.predict("phantom_benign", api_name="/predict_example"))
    assert client.predict(api_name="/model_info")["ready"]


def test_uploads_do_not_outlive_the_request(client, demo_server, demo_roots, phantom_study,
                                            dicom_files):
    """Uploaded DICOM is deleted from gradio's cache and from the demo's work folder."""
    t1_dir, t2_dir, case = phantom_study
    _ok(client.predict(_files(dicom_files(t1_dir, t2_dir)), "", "", case.slice,
                       ",".join(map(str, case.box)), "", 0, api_name="/predict_case"))
    left = [p for root in (demo_roots["gradio"], demo_roots["work"]) for p in root.rglob("*")
            if p.is_file() and (p.suffix.lower() in (".dcm", ".zip")
                                or p.read_bytes()[128:132] == b"DICM")]
    assert left == []
