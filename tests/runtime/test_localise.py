"""``spinefx localise`` end to end on ground-truth masks (the localiser model is separate):
schema, phantom levels and fracture, output files, orientation, bad inputs, no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinefx.cli import main
from spinefx.runtime.errors import SeriesError, SpineFXError
from spinefx.runtime.localise import localise_series
from spinefx.runtime.segmentation import SpineMaps
from spinefx.runtime.volume import Volume
from tests.helpers.dicom import AX_IOP, stack_positions, write_series

ENTRY_KEYS = {"level", "level_confidence", "slice", "box", "centroid", "heights_mm",
              "height_loss", "grade", "shape"}


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("loc") / "study"
    # seed 102: T12..S3 in view, a crush fracture at L3 (SYNTHETIC)
    t1_dir, _, case = write_phantom_study(root, seed=102, label="benign", t2_variant="T2",
                                          case_id="p102")
    truth = case.masks("t1")["bodies"]
    return root, t1_dir, case, truth


def _levels_by_truth(doc, truth, names):
    out = []
    for e in doc["vertebrae"]:
        x, y, k = (int(round(c)) for c in e["centroid"])
        out.append(names[truth[k, y, x] - 1])
    return out


def test_schema_levels_and_files(phantom_study, tmp_path):
    root, _, case, truth = phantom_study
    result = localise_series(root, tmp_path / "out", probability=(truth > 0).astype(np.float32),
                             probability_source="ground truth")
    doc = json.loads((tmp_path / "out" / "vertebrae.json").read_text())
    assert doc == json.loads(json.dumps(result.document))
    assert doc["status"] == "ok" and doc["synthetic_input"] is True
    assert doc["series"]["weighting"] == "T1"          # the study's T1 was chosen
    entries = doc["vertebrae"]
    assert len(entries) >= 8
    for e in entries:
        assert ENTRY_KEYS <= set(e)
        assert 0 <= e["level_confidence"] <= 1 and 0 <= e["slice"] < case.n_slices
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= truth.shape[2] and 0 <= y0 < y1 <= truth.shape[1]
        assert e["grade"] in (None, 0, 1, 2, 3)
    assert [e["level"] for e in entries] == _levels_by_truth(doc, truth, case.level_names)
    assert doc["levels_uncertain"] is False and "S1" in doc["level_reason"]
    fractured = next(e for e in entries if e["level"] == case.level)
    assert tuple(fractured["box"]) == tuple(case.box)
    assert set(doc["mask_labels"].values()) == {e["level"] for e in entries}
    assert (tmp_path / "out" / "overview.png").stat().st_size > 1000


def test_label_nifti_overlays_the_series(phantom_study, tmp_path):
    pytest.importorskip("nibabel")
    from spinefx.runtime.images import load_nifti
    from spinefx.runtime.localise import read_sagittal

    root, t1_dir, _, truth = phantom_study
    result = localise_series(t1_dir, tmp_path, probability=(truth > 0).astype(np.float32))
    back = load_nifti(tmp_path / "vertebrae_mask.nii.gz")
    series = read_sagittal(t1_dir)
    assert back.data.shape == truth.shape
    # the bodies' voxels (fragments at the field's edge dropped), the series' geometry
    inside = back.data > 0
    assert not (inside & (truth == 0)).any() and inside.sum() >= 0.99 * (truth > 0).sum()
    assert np.allclose(back.positions, series.positions, atol=1e-3)
    for e in result.document["vertebrae"]:
        x, y, k = (int(round(c)) for c in e["centroid"])
        assert back.data[k, y, x] == e["mask_value"]
    values = {str(int(v)) for v in np.unique(back.data) if v > 0}
    assert values == set(result.document["mask_labels"])


def test_same_input_same_bytes(phantom_study, tmp_path):
    _, t1_dir, _, truth = phantom_study
    prob = (truth > 0).astype(np.float32)
    for name in ("a", "b"):
        localise_series(t1_dir, tmp_path / name, probability=prob)
    for f in ("vertebrae.json", "vertebrae_mask.nii.gz", "overview.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_mirrored_columns_give_mirrored_boxes(phantom_study):
    _, t1_dir, case, truth = phantom_study
    from spinefx.runtime.localise import read_sagittal

    v = read_sagittal(t1_dir)
    n, w = v.data.shape[0], v.data.shape[2]
    # the same anatomy with the columns running posterior -> anterior (and so the slices,
    # sorted along the flipped normal, in reverse), as a loader would return it
    last_col = v.positions + (w - 1) * v.pixel_spacing[1] * v.row_direction
    mirrored = Volume(v.data[::-1, :, ::-1], v.pixel_spacing, last_col[::-1], -v.row_direction,
                      v.column_direction, weighting="T1")
    assert mirrored.slice_spacing > 0
    prob = (truth > 0).astype(np.float32)
    plain = localise_series(v, None, probability=prob).document["vertebrae"]
    flipped = localise_series(mirrored, None,
                              probability=prob[::-1, :, ::-1]).document["vertebrae"]
    assert [e["level"] for e in plain] == [e["level"] for e in flipped]
    for a, b in zip(plain, flipped):
        assert b["box"] == [w - a["box"][2], a["box"][1], w - a["box"][0], a["box"][3]]
        assert b["centroid"][0] == pytest.approx(w - 1 - a["centroid"][0], abs=0.11)
        assert b["centroid"][2] == pytest.approx(n - 1 - a["centroid"][2], abs=0.011)
        assert b["grade"] == a["grade"]


def test_fracture_graded_in_the_document(tmp_path):
    from spinefx.phantom import render_case

    case = render_case(215, "benign")    # an L2 wedge, half its height drawn away (SYNTHETIC)
    volume = Volume.from_array(case.t1, case.pixel_spacing, case.spacing_between_slices,
                               weighting="T1")
    bodies = case.masks("t1")["bodies"]
    doc = localise_series(volume, None, probability=(bodies > 0) * 1.0).document
    by_truth = dict(zip(_levels_by_truth(doc, bodies, case.level_names), doc["vertebrae"]))
    fractured = by_truth[case.level]
    assert fractured["grade"] >= 2 and fractured["shape"] == "wedge"
    assert fractured["height_loss"] >= 0.25


def test_no_spine_is_an_empty_list_with_a_reason(tmp_path):
    volume = Volume.from_array(np.random.default_rng(0).random((8, 64, 64)) * 100)
    result = localise_series(volume, tmp_path, probability=np.zeros((8, 64, 64)))
    doc = json.loads((tmp_path / "vertebrae.json").read_text())
    assert doc["vertebrae"] == [] and "no spine" in doc["reason"]
    assert doc["levels_uncertain"] is False and result.files["overview"].is_file()


def test_axial_and_single_slice_series_are_refused(tmp_path):
    axial = Volume(np.ones((6, 32, 32)), (1.0, 1.0), np.c_[np.zeros((6, 2)), np.arange(6.0)],
                   [1, 0, 0], [0, 1, 0], source="axial.nii")
    with pytest.raises(SeriesError, match="axial series") as info:
        localise_series(axial, None, probability=np.ones((6, 32, 32)))
    assert "axial.nii" in str(info.value)
    single = Volume.from_array(np.ones((1, 32, 32)), source="one.png")
    with pytest.raises(SeriesError, match="1-slice") as info:
        localise_series(single, None, probability=np.ones((1, 32, 32)))
    assert "one.png" in str(info.value)
    folder = tmp_path / "ax"
    write_series(folder, np.full((4, 16, 16), 100, np.int16),
                 positions=stack_positions(4, 5.0, iop=AX_IOP), iop=AX_IOP, description="AX T2")
    with pytest.raises(SeriesError, match="axial") as info:
        localise_series(folder, None)
    assert str(folder) in str(info.value)


def test_probability_grid_must_match():
    volume = Volume.from_array(np.zeros((4, 32, 32)))
    with pytest.raises(SpineFXError, match="does not match"):
        localise_series(volume, None, probability=np.zeros((4, 16, 16)))


def test_missing_model_names_its_folder(phantom_study, tmp_path, capsys):
    _, t1_dir, _, _ = phantom_study
    missing = tmp_path / "no_model"
    with pytest.raises(SpineFXError, match="localiser model not found") as info:
        localise_series(t1_dir, None, model_dir=missing)
    assert str(missing) in str(info.value)
    code = main(["localise", str(t1_dir), "--out", str(tmp_path / "o"), "--model", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(missing) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_bad_path_is_one_line(tmp_path, capsys):
    assert main(["localise", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and len(err.strip().splitlines()) == 1


def test_localise_imports_no_torch(tmp_path):
    code = ("import sys, numpy as np\n"
            "from spinefx.runtime.localise import localise_series\n"
            "from spinefx.runtime.volume import Volume\n"
            "p = np.zeros((5, 60, 60), np.float32); p[1:4, 5:25, 10:40] = 1; "
            "p[1:4, 33:53, 10:40] = 1\n"
            "doc = localise_series(Volume.from_array(p), sys.argv[1], probability=p).document\n"
            "assert len(doc['vertebrae']) == 2, doc\n"
            "import spinefx.cli.localise\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_vb3_subject_levels_flagged_uncertain(real_spine, tmp_path):
    path = Path(real_spine) / "vb3" / "vb3_45.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    data = np.load(path)
    volume = Volume.from_array(np.moveaxis(data["image"], 2, 0), source="vb3_45")
    truth = np.moveaxis(data["vertebral_bodies"], 2, 0)
    doc = localise_series(volume, tmp_path, probability=(truth > 0) * 1.0).document
    assert [e["level"] for e in doc["vertebrae"]] == ["L1", "L2", "L3", "L4", "L5"]
    assert doc["levels_uncertain"] is True and "lumbar-by-default" in doc["level_reason"]
    assert doc["synthetic_input"] is False


def test_user_anchor_relabels_before_grading(tmp_path):
    p = np.zeros((5, 120, 60), np.float32)
    for top in (5, 40, 75):
        p[1:4, top:top + 26, 10:42] = 1
    volume = Volume.from_array(p)
    doc = localise_series(volume, None, probability=p, anchor=(0, "T11")).document
    assert [e["level"] for e in doc["vertebrae"]] == ["T11", "T12", "L1"]
    assert doc["level_confidence"] == 1.0 and doc["levels_uncertain"] is False
    with pytest.raises(SpineFXError, match="unknown level"):
        localise_series(volume, None, probability=p, anchor=(0, "X9"))
    with pytest.raises(SystemExit):
        main(["localise", "s", "--out", "o", "--anchor", "0=L1"])


def test_cli_end_to_end_with_a_stand_in_localiser(phantom_study, tmp_path, monkeypatch, capsys):
    import spinefx.runtime.localise as loc

    root, _, case, truth = phantom_study
    monkeypatch.setattr(loc, "localiser_maps", lambda volume, model_dir=None:
                        SpineMaps((truth > 0).astype(np.float32)))
    out = tmp_path / "o"
    assert main(["localise", str(root), "--out", str(out), "--anchor", "1=T11"]) == 0
    captured = capsys.readouterr()
    assert "T11" in captured.out and "vertebrae:" in captured.out
    doc = json.loads((out / "vertebrae.json").read_text())
    assert doc["vertebrae"][0]["level"] == "T11" and "user" in doc["level_reason"]
    assert main(["localise", str(root), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["vertebrae"][0]["level"] == "T12"      # counted from S1 again
    # no sacrum in the map: lumbar-by-default, and the warning says how to correct it
    sacral = [i + 1 for i, name in enumerate(case.level_names) if name.startswith("S")]
    lumbar = np.isin(truth, sacral, invert=True) & (truth > 0)
    monkeypatch.setattr(loc, "localiser_maps", lambda volume, model_dir=None:
                        SpineMaps(lumbar.astype(np.float32)))
    assert main(["localise", str(root), "--out", str(tmp_path / "o2")]) == 0
    err = capsys.readouterr().err
    assert "levels uncertain" in err and "--anchor N=LEVEL" in err


def test_stage_seconds_and_a_soft_map_same_as_its_threshold(phantom_study, tmp_path):
    """localise_series thresholds the map before flipping it: a soft map and the same map
    thresholded at 0.5 give one document; every stage's seconds are recorded."""
    root, t1_dir, _, truth = phantom_study
    noise = np.random.default_rng(5).uniform(0.0, 0.45, truth.shape).astype(np.float32)
    soft = np.where(truth > 0, 1.0 - noise, noise).astype(np.float32)
    a = localise_series(t1_dir, tmp_path / "soft", probability=soft, probability_source="p")
    b = localise_series(t1_dir, probability=(soft >= 0.5).astype(np.float32),
                        probability_source="p")
    a.document.pop("files")
    assert a.document == b.document and np.array_equal(a.vertebrae.labels, b.vertebrae.labels)
    assert len(a.document["vertebrae"]) >= 5
    assert set(a.seconds) == {"postprocess", "grading", "document", "writing"}
    assert set(b.seconds) == {"postprocess", "grading", "document"}
    assert all(s >= 0 for s in a.seconds.values())


def test_localiser_document_same_as_the_reference_implementation(phantom_study, monkeypatch):
    """The whole path with the ONNX localiser (segmentation, instances, levels, grading)
    gives the document the implementations before the speed work give."""
    from spinefx.runtime import segmentation, vertebrae
    from tests.runtime.test_segmentation import reference_resample_slices
    from tests.runtime.test_vertebrae import (
        reference_disc_gap,
        reference_grow_back,
        reference_label_components,
        reference_split_merged,
    )

    _, t1_dir, _, _ = phantom_study
    new = localise_series(t1_dir)
    assert new.seconds["segmentation"] > 0 and len(new.document["vertebrae"]) >= 5
    with monkeypatch.context() as m:
        m.setattr(segmentation, "resample_slices", reference_resample_slices)
        m.setattr(vertebrae, "label_components", reference_label_components)
        m.setattr(vertebrae, "grow_back", reference_grow_back)
        m.setattr(vertebrae, "_split_merged", reference_split_merged)
        m.setattr(vertebrae, "disc_gap", reference_disc_gap)
        old = localise_series(t1_dir)
    assert new.document == old.document
    assert np.array_equal(new.vertebrae.labels, old.vertebrae.labels)
