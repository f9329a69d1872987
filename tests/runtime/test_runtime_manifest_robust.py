"""A manifest from a real archive: bad paths, devices, huge numbers end in one ManifestError
that names the file (and line); nothing hangs, walks the filesystem or fills memory."""
from __future__ import annotations

import os
import time

import pytest

from spinefx.runtime import ImageError, ManifestError, load_volume, read_manifest
from spinefx.runtime import cases as cases_mod

HEADER = "case_id,label,t1,t2,slice,box_x0,box_y0,box_x1,box_y1,center_x,center_y,size_mm\n"


def _manifest(tmp_path, row: str, header: str = HEADER):
    path = tmp_path / "data" / "manifest.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + row + "\n")
    return path


def _refused(path, *words, **kw):
    with pytest.raises(ManifestError) as info:
        read_manifest(path, **kw)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_folder_as_manifest(tmp_path):
    _refused(tmp_path, str(tmp_path), "folder")


def test_device_as_manifest_is_refused_without_reading():
    _refused("/dev/zero", "/dev/zero", "not a regular file")


def test_fifo_as_manifest(tmp_path):
    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    _refused(fifo, str(fifo), "not a regular file")


def test_manifest_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(cases_mod, "MAX_MANIFEST_BYTES", 100)
    path = _manifest(tmp_path, "c1,benign,a,b,1,1,2,3,4,,,\n" * 10)
    _refused(path, str(path), "MiB")


@pytest.mark.parametrize("series", ["../../../../../../../../", "/etc/passwd", "../outside",
                                    "a/../../x", "/dev/zero"])
def test_series_outside_the_manifest_folder(tmp_path, series):
    path = _manifest(tmp_path, f"c1,benign,{series},t2,1,1,2,3,4,,,")
    _refused(path, str(path), "line 2", "'t1'", "outside")


def test_allow_outside_still_refuses_devices(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    path = _manifest(tmp_path, "c1,benign,../elsewhere,/dev/zero,1,1,2,3,4,,,")
    _refused(path, "line 2", "'t2'", "not a regular file", allow_outside=True)
    ok = _manifest(tmp_path, f"c1,benign,../elsewhere,{tmp_path}/elsewhere,1,1,2,3,4,,,")
    (case,) = read_manifest(ok, allow_outside=True)
    assert case.t1.resolve() == (tmp_path / "elsewhere").resolve() and case.line == 2


def test_inside_paths_need_not_exist_yet(tmp_path):
    (case,) = read_manifest(_manifest(tmp_path, "c1,benign,c1/t1,c1/../c1/t2,1,1,2,3,4,,,"))
    assert case.t1 == tmp_path / "data" / "c1" / "t1"


@pytest.mark.parametrize("row,words", [
    ("c1,benign,a,b,1,inf,2,3,4,,,", ["box_x0", "finite"]),
    ("c1,benign,a,b,1,1e300,2,3,4,,,", ["beyond"]),
    ("c1,benign,a,b,1,nan,2,3,4,,,", ["box_x0"]),
    ("c1,benign,a,b,1,0,0,5000,5000,,,", ["4096"]),
    ("c1,benign,a,b,1,10,10,5,20,,,", ["empty"]),
    ("c1,benign,a,b,1,,,,,10,10,1e5", ["size_mm", "5..300"]),
    ("c1,benign,a,b,1,,,,,10,10,inf", ["size_mm"]),
    ("c1,benign,a,b,1,,,,,10,10,1", ["size_mm"]),
    ("c1,benign,a,b,1,,,,,inf,10,", ["center_x"]),
    ("c1,benign,a,b,1,,,,,1e300,10,", ["centre"]),
    ("c1,benign,a,b,-1,1,2,3,4,,,", ["slice", ">= 0"]),
    ("c1,benign,a,b,2.5,1,2,3,4,,,", ["slice", "whole"]),
    ("c1,benign,a,b,1e300,1,2,3,4,,,", ["slice"]),
    ("c1,benign,a,b,inf,1,2,3,4,,,", ["slice"]),
])
def test_numbers_are_finite_and_bounded(tmp_path, row, words):
    path = _manifest(tmp_path, row)
    t0 = time.perf_counter()
    _refused(path, str(path), "line 2", *words)
    assert time.perf_counter() - t0 < 2


def test_load_volume_refuses_devices_and_fifos(tmp_path):
    with pytest.raises(ImageError, match="/dev/zero.*not a regular file"):
        load_volume("/dev/zero")
    fifo = tmp_path / "series.npy"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        load_volume(fifo)


def test_roi_resolver_refuses_boxes_far_larger_than_the_image():
    import numpy as np

    from spinefx.runtime import PreprocessConfig, RoiError
    from spinefx.runtime.service import check_box, resolve_roi
    from spinefx.runtime.volume import Volume

    t1 = Volume.from_array(np.zeros((5, 40, 50), np.float32), weighting="T1")
    check_box(t1, (-10, -10, 190, 150))  # 4x the larger side: padded, allowed
    t0 = time.perf_counter()
    for box, words in [((0, 0, 5000, 5000), ["0, 0, 5000, 5000", "far larger", "50x40"]),
                       ((0, 0, 201, 10), ["far larger"]),
                       ((0, 0, float("inf"), 10), ["finite"]),
                       ((10, 10, 5, 20), ["empty"])]:
        with pytest.raises(RoiError) as info:
            resolve_roi(t1, PreprocessConfig(), 2, box)
        for w in words:
            assert w in str(info.value), str(info.value)
    with pytest.raises(RoiError, match="far larger"):  # a centre with a huge size
        resolve_roi(t1, PreprocessConfig(), 2, None, (10, 10), 1e300)
    assert time.perf_counter() - t0 < 2


def test_a_link_the_archive_holds_is_inside(tmp_path):
    (tmp_path / "store").mkdir()
    path = _manifest(tmp_path, "c1,benign,t1,t1/../t1,1,1,2,3,4,,,")
    (path.parent / "t1").symlink_to(tmp_path / "store")
    (case,) = read_manifest(path)
    assert case.t1 == path.parent / "t1"
