"""The one study/prediction service: series matcher, pairing policies, decoding only what is
used, T2 aligned once per prediction, the ROI resolver and the result document."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from spinefx.runtime import RoiError, SeriesError, Volume, matching
from spinefx.runtime.inference import Predictor
from spinefx.runtime.predict import predict_study
from spinefx.runtime.provenance import DISCLAIMER
from spinefx.runtime.service import analyse_study, resolve_roi
from spinefx.runtime.study import Study
from tests.helpers.onnx_model import write_tiny_model


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A phantom study: a sagittal T1 and a T2 series (DICOM)."""
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("service")
    t1_dir, t2_dir, case = write_phantom_study(root / "study", seed=3, label="malignant",
                                               t2_variant="T2")
    return root / "study", t1_dir, t2_dir, case


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor(write_tiny_model(tmp_path_factory.mktemp("tiny"), image_size=64))


def _vol(weighting: str, n: int, description: str = "") -> Volume:
    data = np.random.default_rng(n).normal(100, 10, (n, 32, 32)).astype(np.float32)
    vol = Volume.from_array(data, pixel_spacing=(1.0, 1.0), slice_spacing=3.0,
                            weighting=weighting)
    vol.description = description
    return vol


def _memory_study() -> Study:
    return Study.from_volumes({"a": ("#1 T1 SAG", _vol("T1", 9, "T1 SAG")),
                               "b": ("#2 T1 SAG thin", _vol("T1", 15, "T1 SAG thin")),
                               "c": ("#3 T2 SAG", _vol("T2", 12, "T2 SAG"))},
                              title="memory", kind="memory")


def test_strict_refuses_what_guess_guesses_and_says_so():
    study = _memory_study()
    with pytest.raises(SeriesError, match="several sagittal T1 series found; name one with --t1"):
        study.choose_pair(policy="strict")
    guessed = study.choose_pair(policy="guess")
    assert (guessed.t1, guessed.t2) == ("b", "c") and guessed.guessed   # most slices wins
    assert any("several T1 series" in n for n in guessed.notes)
    named = study.choose_pair("a", None, "strict")
    assert (named.t1, named.t2, named.notes) == ("a", "c", ())
    with pytest.raises(SeriesError, match="same series"):
        study.choose_pair("c", "c")


def test_one_matcher_for_keys_numbers_and_descriptions():
    study = _memory_study()
    assert study.find("b").key == "b"
    assert study.find("thin").key == "b"
    assert study.find("T2").key == "c"
    with pytest.raises(SeriesError, match="matches several series"):
        study.find("T1 SAG")
    with pytest.raises(SeriesError, match="matches no usable series"):
        study.find("STIR")


def test_only_the_chosen_pair_is_decoded(study_dir, tmp_path):
    folder, t1_dir, t2_dir, _ = study_dir
    copy = tmp_path / "study"
    shutil.copytree(folder, copy)
    stir_uid = generate_uid()
    (copy / "stir").mkdir()
    for i, path in enumerate(sorted(t2_dir.glob("*.dcm"))):   # a third series, never used
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber = stir_uid, 99
        ds.SeriesDescription = "STIR SAG"
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(copy / "stir" / f"{i}.dcm")
    study = Study.open(copy)
    assert study.decoded == [] and len(study.usable) == 3
    assert study.find("99").weighting == "STIR"
    pair = study.choose_pair()
    study.aligned(pair)
    study.aligned(pair)
    assert sorted(study.decoded) == sorted([pair.t1, pair.t2])   # each decoded once


def test_t2_is_aligned_once_per_prediction(study_dir, predictor, tmp_path, monkeypatch):
    folder, _, _, case = study_dir
    calls = []
    real = matching.on_t1_grid
    monkeypatch.setattr(matching, "on_t1_grid", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = predict_study(predictor, folder, tmp_path / "out", slice_index=case.slice,
                           box=case.box)
    assert len(calls) == 1
    # several predictions on one study (a demo session) reuse the aligned pair
    study = Study.open(folder)
    for k in (case.slice - 1, case.slice, case.slice + 1):
        analyse_study(predictor, study, slice_index=k, box=case.box)
    assert len(calls) == 2
    assert result.files["result"].name == "result.json"


def test_result_document_is_what_result_json_holds(study_dir, predictor, tmp_path):
    folder, _, _, case = study_dir
    result = predict_study(predictor, folder, tmp_path / "out", slice_index=case.slice,
                           box=case.box)
    written = json.loads((tmp_path / "out" / "result.json").read_text())
    assert written["files"] == {"overlay": "overlay.png"}
    doc = result.to_json()
    assert {k: v for k, v in written.items() if k != "files"} == \
        {k: v for k, v in doc.items() if k != "files"}
    assert doc["status"] == "ok" and doc["disclaimer"] == DISCLAIMER
    assert doc["slice"] == case.slice and doc["box"] == [float(v) for v in case.box]
    assert "T1" in doc["series"]["t1"] and "T2" in doc["series"]["t2"]


def test_roi_resolver_rules():
    t1 = _vol("T1", 9)
    from spinefx.runtime import PreprocessConfig
    config = PreprocessConfig()
    assert resolve_roi(t1, config, None, (1, 2, 20, 22)).slice_index == 4     # the middle
    assert resolve_roi(t1, config, -1, None, None, None, default_slice=2,
                       default_box=(1, 1, 9, 9)).slice_index == 2
    roi = resolve_roi(t1, config, 3, None, (16, 16), 10)
    assert roi.box == pytest.approx((11.5, 11.5, 21.5, 21.5)) and roi.size_mm == 10  # pixel centre
    with pytest.raises(RoiError, match="not both"):
        resolve_roi(t1, config, 3, (1, 1, 5, 5), (3, 3))
    with pytest.raises(RoiError, match="outside the series"):
        resolve_roi(t1, config, 9, (1, 1, 5, 5))
    with pytest.raises(RoiError, match="lies outside the 32x32 image"):
        resolve_roi(t1, config, 0, (40, 40, 50, 50))
