"""Slice ordering from patient-space geometry, broken series, and putting T2 on the T1 grid."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from spinefx.runtime import (
    GeometryError,
    RoiError,
    SeriesError,
    SpineFXWarning,
    Volume,
    align_pair,
    align_to,
    build_six_channel,
    load_series,
    match_slices,
)
from tests.helpers.dicom import (
    AX_IOP,
    COR_IOP,
    SAG_IOP,
    blob_function,
    coded_volume,
    normal_of,
    position_code,
    sample_series,
    stack_positions,
    write_series,
)


def _names(n, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
            + rng.choice(["", ".dcm", ".IMA"]) for _ in range(n)]


def _coded_series(folder, positions, iop=SAG_IOP, names=None, instance_numbers=None, **kw):
    coords = positions @ normal_of(iop)
    vol = coded_volume([position_code(c) for c in coords])
    return write_series(folder, vol, positions=positions, iop=iop, names=names,
                        instance_numbers=instance_numbers, **kw), coords


# ---------------------------------------------------------------------------------------------
# Ordering
# ---------------------------------------------------------------------------------------------
def test_order_comes_from_positions_not_names_or_instance_numbers(tmp_path):
    n = 11
    positions = stack_positions(n, 3.3)
    perm = np.random.default_rng(1).permutation(n)  # file i holds stack slice perm[i]
    names = sorted(_names(n))  # sorted names: name order = file index order = shuffled anatomy
    misleading = [int(x) for x in (n - perm)]  # InstanceNumber runs against the anatomy
    _, coords = _coded_series(tmp_path, positions[perm], names=names,
                              instance_numbers=misleading)
    vol = load_series(tmp_path)
    expected = np.sort(coords)
    np.testing.assert_allclose(vol.slice_coordinates, expected, atol=1e-3)
    assert vol.data[:, 0, 0].tolist() == [position_code(c) for c in expected]
    assert np.all(np.diff(vol.slice_coordinates) > 0)
    assert vol.slice_spacing == pytest.approx(3.3, abs=1e-3)
    assert vol.plane == "sagittal"
    # slice_sources follow the sorted order
    by_name = dict(zip(names, perm))
    from pathlib import Path
    assert [by_name[Path(s).name] for s in vol.slice_sources] == list(range(n))


def test_reversed_slice_direction_and_flipped_normal(tmp_path):
    # IOP whose normal is +x; files written with the position *decreasing* along it
    iop = (0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    assert normal_of(iop) @ np.array([1.0, 0, 0]) == pytest.approx(1.0)
    n = 8
    positions = stack_positions(n, 4.0, iop)[::-1]  # file 0 = highest coordinate
    _, coords = _coded_series(tmp_path, positions, iop=iop)
    assert np.all(np.diff(coords) < 0)
    vol = load_series(tmp_path)
    assert np.allclose(vol.normal, [1.0, 0.0, 0.0])
    assert np.all(np.diff(vol.slice_coordinates) > 0)
    assert np.all(np.diff(vol.positions[:, 0]) > 0)  # ascending along +x
    assert vol.data[:, 0, 0].tolist() == [position_code(c) for c in np.sort(coords)]
    assert vol.plane == "sagittal"


def test_standard_sagittal_iop_sorts_right_to_left(tmp_path):
    # the usual IOP (0,1,0,0,0,-1) has normal -x: ascending along it = x decreasing
    positions = stack_positions(5, 4.0)
    _, coords = _coded_series(tmp_path, positions[[3, 1, 4, 0, 2]])
    vol = load_series(tmp_path)
    assert np.all(np.diff(vol.positions[:, 0]) < 0)
    assert vol.data[:, 0, 0].tolist() == [position_code(c) for c in np.sort(coords)]


def test_oblique_stack_ordered_along_its_own_normal(tmp_path):
    a = np.deg2rad(20)
    iop = (0.0, np.cos(a), np.sin(a), 0.0, np.sin(a), -np.cos(a))
    positions = stack_positions(6, 3.0, iop)[[5, 0, 3, 1, 4, 2]]
    _, coords = _coded_series(tmp_path, positions, iop=iop)
    vol = load_series(tmp_path)
    assert np.all(np.diff(vol.slice_coordinates) > 0)
    assert vol.slice_spacing == pytest.approx(3.0, abs=1e-3)
    assert vol.data[:, 0, 0].tolist() == [position_code(c) for c in np.sort(coords)]


# ---------------------------------------------------------------------------------------------
# Broken series
# ---------------------------------------------------------------------------------------------
def test_mixed_orientations_rejected(tmp_path):
    positions = stack_positions(4, 4.0)
    iops = [SAG_IOP, SAG_IOP, COR_IOP, SAG_IOP]
    write_series(tmp_path, coded_volume(range(4)), positions=positions, iop=iops,
                 description="SAG T2 mixed")
    with pytest.raises(SeriesError) as info:
        load_series(tmp_path)
    msg = str(info.value)
    assert "SAG T2 mixed" in msg and "orientation" in msg
    assert "sagittal" in msg and "coronal" in msg
    assert str(tmp_path) in msg


def test_single_slice_needs_min_slices_one(tmp_path):
    write_series(tmp_path, coded_volume([7]), description="one slice")
    with pytest.raises(SeriesError, match="1 slice"):
        load_series(tmp_path)
    with pytest.raises(SeriesError, match="at least 2"):
        load_series(tmp_path, min_slices=2)
    assert load_series(tmp_path, min_slices=1).shape == (1, 24, 20)


def test_duplicate_positions_rejected(tmp_path):
    positions = stack_positions(5, 4.0)
    positions[3] = positions[1]
    paths = write_series(tmp_path, coded_volume(range(5)), positions=positions)
    with pytest.raises(SeriesError) as info:
        load_series(tmp_path)
    msg = str(info.value)
    assert "same position" in msg
    assert paths[1].name in msg and paths[3].name in msg


def test_gap_warns(tmp_path):
    positions = stack_positions(8, 4.0)
    keep = [0, 1, 2, 3, 5, 6, 7]  # slice 4 missing
    write_series(tmp_path, coded_volume(range(7)), positions=positions[keep])
    with pytest.warns(SpineFXWarning, match="gap") as record:
        vol = load_series(tmp_path)
    assert "after slice(s) [3]" in str(record[0].message)
    assert vol.n_slices == 7
    assert vol.slice_spacing == pytest.approx(4.0, abs=1e-3)


def test_regular_series_does_not_warn(tmp_path):
    write_series(tmp_path, coded_volume(range(6)), positions=stack_positions(6, 4.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_series(tmp_path)


def test_mixed_matrix_sizes_rejected(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.1"
    pos = stack_positions(3, 4.0)
    write_series(tmp_path, coded_volume([1, 2], 24, 20), positions=pos[:2], series_uid=uid)
    write_series(tmp_path, coded_volume([3], 32, 32), positions=pos[2:], series_uid=uid,
                 names=["other.dcm"])
    with pytest.raises(SeriesError, match="matrix sizes"):
        load_series(tmp_path)


def test_missing_geometry_in_multi_file_series(tmp_path):
    paths = write_series(tmp_path, coded_volume(range(3)))
    import pydicom
    ds = pydicom.dcmread(paths[2])
    del ds.ImagePositionPatient
    ds.save_as(paths[2])
    with pytest.raises(SeriesError) as info:
        load_series(tmp_path)
    assert paths[2].name in str(info.value) and "ImagePositionPatient" in str(info.value)


# ---------------------------------------------------------------------------------------------
# T2 onto the T1 grid
# ---------------------------------------------------------------------------------------------
def _analytic_pair(tmp_path, t2_offset_mm=0.0, t2_iop=SAG_IOP):
    """T1: 0.5 x 0.6 mm pixels, 120x100, 7 slices 4 mm apart. T2: 0.9 x 0.7 mm, 80x100 matrix,
    a larger, shifted FOV that covers T1's, 6 slices on (almost) the same planes. Both sample
    blob_function. Anisotropic pixels on both sides catch a row/column spacing mix-up."""
    t1_pos = stack_positions(7, 4.0, SAG_IOP, origin=(12.0, -70.0, 90.0))
    t1_img = sample_series(blob_function, 7, 120, 100, (0.5, 0.6), t1_pos)
    write_series(tmp_path / "t1", t1_img, spacing=(0.5, 0.6), positions=t1_pos,
                 description="SAG T1")
    # sagittal: the planes of T1 slices 1..6 (normal = -x), shifted by t2_offset_mm along it
    t2_pos = stack_positions(6, 4.0, t2_iop, origin=(12.0 - 4.0 - t2_offset_mm, -78.0, 96.0))
    t2_img = sample_series(blob_function, 6, 80, 100, (0.9, 0.7), t2_pos, t2_iop)
    write_series(tmp_path / "t2", t2_img, spacing=(0.9, 0.7), positions=t2_pos, iop=t2_iop,
                 description="SAG T2", tr=3000, te=90)
    return load_series(tmp_path / "t1"), load_series(tmp_path / "t2")


def test_align_resamples_t2_onto_t1_grid(tmp_path):
    t1, t2 = _analytic_pair(tmp_path)
    assert t2.shape == (6, 80, 100) and t2.pixel_spacing == (0.9, 0.7)
    index = match_slices(t1, t2)
    assert index.tolist() == [-1, 0, 1, 2, 3, 4, 5]
    out = align_to(t1, t2)
    assert out.shape == t1.shape
    assert out.pixel_spacing == t1.pixel_spacing
    np.testing.assert_allclose(out.positions, t1.positions)
    assert np.isnan(out.data[0]).all()  # no T2 slice at T1 slice 0
    assert out.metadata["matched_t2_slices"] == index.tolist()
    r, c = np.mgrid[0:120, 0:100]
    for i in range(1, 7):
        truth = blob_function(t1.pixel_to_patient(i, r, c))
        err = np.abs(out.data[i] - truth)
        assert err.max() < 3.0, f"slice {i}: max error {err.max():.2f}"
        assert err.mean() < 0.8
        # and not trivially: T1's own pixels equal the same function (up to x: 2*x term)
        np.testing.assert_allclose(t1.data[i], np.round(truth), atol=0.51)


def test_align_identical_grid_copies_pixels(tmp_path):
    pos = stack_positions(5, 4.0)
    write_series(tmp_path / "a", coded_volume(range(5)), positions=pos)
    t2_img = coded_volume(range(100, 105))
    write_series(tmp_path / "b", t2_img[[4, 2, 0, 1, 3]], positions=pos[[4, 2, 0, 1, 3]])
    t1, t2 = load_series(tmp_path / "a"), load_series(tmp_path / "b")
    out = align_to(t1, t2)
    np.testing.assert_array_equal(out.data, t2.data)
    np.testing.assert_array_equal(out.data[:, 0, 0], np.arange(100, 105))


def test_slices_offset_within_tolerance_match(tmp_path):
    t1, t2 = _analytic_pair(tmp_path, t2_offset_mm=1.2)  # tolerance = 2 mm + 0.05
    assert match_slices(t1, t2).tolist() == [-1, 0, 1, 2, 3, 4, 5]
    out = align_to(t1, t2)
    assert np.isfinite(out.data[1:]).all()


def test_slices_offset_beyond_tolerance_do_not_overlap(tmp_path):
    t1, t2 = _analytic_pair(tmp_path, t2_offset_mm=1.2)
    with pytest.raises(GeometryError, match="do not overlap"):
        match_slices(t1, t2, tolerance_mm=1.0)
    # a T2 stack far away along the normal (another region of the spine) never matches
    far = t2.with_data(t2.data, positions=t2.positions + 100.0 * t2.normal)
    with pytest.raises(GeometryError, match="do not overlap"):
        align_to(t1, far)


def test_non_parallel_t2_rejected(tmp_path):
    t1, t2 = _analytic_pair(tmp_path, t2_iop=AX_IOP)
    assert t2.plane == "axial"
    with pytest.raises(GeometryError) as info:
        align_to(t1, t2)
    assert "not parallel" in str(info.value) and "axial" in str(info.value)


def test_slightly_tilted_t2_still_parallel():
    t1 = Volume.from_array(np.random.default_rng(0).random((5, 32, 32)))
    a = np.deg2rad(3.0)
    t2 = Volume(data=t1.data.copy(), pixel_spacing=(1.0, 1.0), positions=t1.positions,
                row_direction=[0.0, np.cos(a), np.sin(a)], column_direction=[0.0, np.sin(a),
                                                                             -np.cos(a)])
    assert match_slices(t1, t2).tolist() == [0, 1, 2, 3, 4]


def test_lesion_slice_without_t2_partner_is_refused(tmp_path):
    t1, t2 = _analytic_pair(tmp_path)
    with pytest.raises(RoiError, match="no T2 slice"):
        build_six_channel(align_pair(t1, t2), 0, box=(30, 30, 70, 80))
    # a neighbour without a partner falls back to the lesion slice, with a warning
    with pytest.warns(SpineFXWarning, match="no matching T2"):
        mi = build_six_channel(align_pair(t1, t2), 1, box=(30, 30, 70, 80))
    np.testing.assert_array_equal(mi.array[3], mi.array[4])
    assert np.isfinite(mi.array).all()
    assert mi.slices == (0, 1, 2) and mi.t2_slices == (1, 1, 2)  # what the T2 channels hold
