"""Manifest CSV parsing and validation, and a case prepared end to end from DICOM."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.runtime import (
    FEATURE_KEYS,
    Case,
    ManifestError,
    load_volume,
    prepare_case,
    read_manifest,
)
from tests.helpers.dicom import sample_series, stack_positions, write_series

HEADER = "case_id,label,t1,t2,slice,box_x0,box_y0,box_x1,box_y1,level"
GOOD_ROW = "c001,benign,c001/t1,c001/t2,6,10,20,50,60,L1"


def _write(tmp_path, text, name="manifest.csv"):
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_good_manifest(tmp_path):
    text = (
        "case_id,label,t1,t2,slice,box_x0,box_y0,box_x1,box_y1,center_x,center_y,size_mm,"
        "level,patient_id,mask,fluid_sign,epidural_mass\n"
        "c001,benign,c001/t1,c001/t2,6,10,20,50.5,60,,,,L1,p1,c001/mask.nii.gz,1,0\n"
        "c002,Malignant,c002/T1 series,c002/t2,3,,,,,40,41.5,45,T12,,,0,1\n"
        "c003,,c003/t1,c003/t2,0,1,2,3,4,,,,,p1,,,\n"
    )
    path = _write(tmp_path, text)
    cases = read_manifest(path)
    assert [c.case_id for c in cases] == ["c001", "c002", "c003"]
    a, b, c = cases
    root = path.parent
    assert a.t1 == root / "c001" / "t1" and a.t2 == root / "c001" / "t2"
    assert b.t1 == root / "c002" / "T1 series"
    assert a.box == (10.0, 20.0, 50.5, 60.0) and a.center is None and a.slice == 6
    assert b.box is None and b.center == (40.0, 41.5) and b.size_mm == 45.0
    assert (a.label, b.label, c.label) == ("benign", "malignant", None)
    assert (a.target, b.target) == (0, 1)
    with pytest.raises(ManifestError, match="no label"):
        c.target
    assert a.level == "L1" and b.level == "T12"
    assert (a.patient_id, b.patient_id, c.patient_id) == ("p1", "c002", "p1")
    assert a.mask == root / "c001" / "mask.nii.gz" and b.mask is None
    assert a.features == {"fluid_sign": 1, "epidural_mass": 0}
    assert b.features == {"fluid_sign": 0, "epidural_mass": 1}
    assert c.features == {}  # blank = not scored
    assert all(k in FEATURE_KEYS for k in a.features)


def test_bom_and_relative_to_manifest_folder_not_cwd(tmp_path, monkeypatch):
    path = _write(tmp_path, "\ufeff" + HEADER + "\n" + GOOD_ROW + "\n")
    monkeypatch.chdir(tmp_path)
    (case,) = read_manifest("data/manifest.csv")
    assert case.case_id == "c001"
    assert case.t1.resolve() == (path.parent / "c001" / "t1").resolve()


def _error(tmp_path, text) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    msg = str(info.value)
    assert str(path) in msg, f"file not named: {msg}"
    return msg


@pytest.mark.parametrize("header,missing", [
    ("case_id,label,t1,slice,box_x0,box_y0,box_x1,box_y1", "t2"),
    ("case_id,t1,t2,slice,box_x0,box_y0,box_x1,box_y1", "label"),
    ("case_id,label,t1,t2,slice,box_x0,box_y0,box_x1", "box_x0..box_y1 or center_x/center_y"),
    ("case_id,label,t1,t2,slice,center_x", "box_x0..box_y1 or center_x/center_y"),
])
def test_missing_columns(tmp_path, header, missing):
    msg = _error(tmp_path, header + "\n" + ",".join(["x"] * len(header.split(","))) + "\n")
    assert "missing column" in msg and missing in msg
    assert "line 1" in msg


@pytest.mark.parametrize("row,line,words", [
    ("c002,malign,a,b,1,1,2,3,4,L2", 3, ["label", "malign"]),
    ("c002,benign,a,b,1,1,two,3,4,L2", 3, ["box_y0", "two"]),
    ("c002,benign,a,b,1.5,1,2,3,4,L2", 3, ["slice", "1.5"]),
    ("c001,benign,a,b,1,1,2,3,4,L2", 3, ["c001", "repeated"]),
    (",benign,a,b,1,1,2,3,4,L2", 3, ["empty"]),
    ("c002,benign,a,b,1,,,,,L2", 3, ["neither a box nor a centre"]),
])
def test_bad_rows_name_file_and_line(tmp_path, row, line, words):
    msg = _error(tmp_path, HEADER + "\n" + GOOD_ROW + "\n" + row + "\n")
    assert f"line {line}" in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("value,word", [("2", "0 or 1"), ("yes", "number"), ("-1", "0 or 1")])
def test_feature_column_must_be_0_or_1(tmp_path, value, word):
    msg = _error(tmp_path, HEADER + ",fluid_sign\n" + GOOD_ROW + ",1\n"
                 + "c002,benign,a,b,1,1,2,3,4,L2," + value + "\n")
    assert "line 3" in msg and "fluid_sign" in msg and word in msg


def test_empty_unreadable_and_missing_manifests(tmp_path):
    assert "no cases" in _error(tmp_path, HEADER + "\n")
    path = tmp_path / "data" / "latin1.csv"
    path.write_bytes((HEADER + "\n" + "c\xe9,benign,a,b,1,1,2,3,4,L1\n").encode("latin-1"))
    with pytest.raises(ManifestError, match="latin1.csv"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "absent.csv")


def test_prepare_case_end_to_end_from_dicom(tmp_path):
    """Manifest -> DICOM T1 + T2 on different grids -> the (6, 224, 224) input."""
    def fn(p):
        return 500 + 400 * np.exp(-((p[..., 1] + 40) ** 2 + (p[..., 2] - 60) ** 2) / 200.0)

    t1_pos = stack_positions(6, 4.0, origin=(10.0, -70.0, 90.0))
    t2_pos = stack_positions(6, 4.0, origin=(10.0, -75.0, 95.0))
    write_series(tmp_path / "c001" / "t1", sample_series(fn, 6, 80, 80, (0.5, 0.5), t1_pos),
                 spacing=(0.5, 0.5), positions=t1_pos, description="SAG T1")
    write_series(tmp_path / "c001" / "t2", sample_series(fn, 6, 60, 60, (0.8, 0.8), t2_pos),
                 spacing=(0.8, 0.8), positions=t2_pos, description="SAG T2", tr=3000, te=90)
    (tmp_path / "m.csv").write_text(HEADER + "\n" + "c001,malignant,c001/t1,c001/t2,2,40,40,"
                                    "72,70,L2\n")
    (case,) = read_manifest(tmp_path / "m.csv")
    assert isinstance(case, Case)
    mi = prepare_case(case)
    assert mi.array.shape == (6, 224, 224) and mi.array.dtype == np.float32
    assert np.isfinite(mi.array).all() and mi.slices == (1, 2, 3)
    # T1 and the resampled T2 show the same blob: the channels agree closely
    assert np.abs(mi.array[1] - mi.array[4]).mean() < 0.05
    assert load_volume(case.t2).weighting == "T2"
