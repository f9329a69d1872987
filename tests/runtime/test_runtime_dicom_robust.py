"""A real archive holds broken files: each one is skipped with a note or refused with a
SpineFXError naming the file, never a crash, a hang, a huge allocation or a silent change of
slice numbering ("Safe on a real archive", items 1-5, 10, 14)."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from spinefx.runtime.dicom import MAX_FRAMES, SeriesInfo, scan_study
from spinefx.runtime.dicom_series import MAX_SERIES_VOXELS, load_series
from spinefx.runtime.errors import DicomReadError, SeriesError, SpineFXWarning
from spinefx.runtime.matching import bilinear
from tests.helpers.dicom import coded_volume, write_series

PHI = ("PHANTOM^TEST", "PHANTOM-0001", "19000101")


def _no_phi(text: str) -> None:
    for value in PHI:
        assert value not in text


def _good_and_bad(tmp_path):
    """A good 3-slice series, and the one file of a second series (the test breaks it)."""
    write_series(tmp_path / "good", coded_volume([1, 2, 3]))
    bad = write_series(tmp_path / "bad", coded_volume([4]), description="SAG T2")[0]
    return bad


def _patch_bytes(path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) >= 1
    path.write_bytes(data.replace(old, new, 1))


def _rewrite(path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _scan_skips(tmp_path, bad):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the values it cannot convert
        scan = scan_study(tmp_path)
    assert [s.n_slices for s in scan.series] == [3]
    reasons = {p.name: why for p, why in scan.skipped}
    assert bad.name in reasons, reasons
    _no_phi(reasons[bad.name])
    return reasons[bad.name]


# --- 1: one corrupt header is skipped with a note; the scan goes on ----------------------------
def test_unknown_vr_header_is_skipped_not_fatal(tmp_path):
    bad = _good_and_bad(tmp_path)
    _patch_bytes(bad, b"\x08\x00\x16\x00UI", b"\x08\x00\x16\x00UJ")  # a bit flip in a VR
    assert "DICOM" in _scan_skips(tmp_path, bad)


def test_multi_valued_rows_is_skipped_not_fatal(tmp_path):
    bad = _good_and_bad(tmp_path)
    _rewrite(bad, Rows=[24, 24])
    assert "Rows" in _scan_skips(tmp_path, bad)


def test_garbage_series_number_is_skipped_not_fatal(tmp_path):
    bad = _good_and_bad(tmp_path)
    _patch_bytes(bad, b"\x20\x00\x11\x00IS\x02\x001 ", b"\x20\x00\x11\x00IS\x02\x00x?")
    _scan_skips(tmp_path, bad)


def test_odd_length_us_value_is_skipped_not_fatal(tmp_path):
    bad = _good_and_bad(tmp_path)
    # Columns (0028,0011) US: declare 3 bytes where 2 are stored (BytesLengthException)
    data = bad.read_bytes()
    tag = b"\x28\x00\x11\x00US\x02\x00"
    i = data.index(tag)
    bad.write_bytes(data[:i] + b"\x28\x00\x11\x00US\x03\x00" + data[i + 8:i + 10] + b"\x00"
                    + data[i + 10:])
    _scan_skips(tmp_path, bad)


# --- 2: a Rust decoder's panic is a DicomReadError naming the file ----------------------------
def test_rle_decoder_panic_is_a_dicom_read_error(tmp_path):
    paths = write_series(tmp_path, coded_volume([1, 2, 3], 32, 32))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.Columns = 31  # the RLE decoder panics (index out of bounds) on this
        ds.save_as(p)
    with pytest.raises(DicomReadError) as info:
        load_series(tmp_path)
    assert paths[0].name in str(info.value)


# --- 3: an absurd NumberOfFrames is skipped at once, never looped over -------------------------
@pytest.mark.parametrize("frames", [65535, 10 ** 9, 3])
def test_implausible_frame_count_is_skipped(tmp_path, frames):
    bad = _good_and_bad(tmp_path)
    _rewrite(bad, NumberOfFrames=frames)  # 3 frames claimed, pixel bytes for one
    why = _scan_skips(tmp_path, bad)
    assert "NumberOfFrames" in why
    assert frames <= MAX_FRAMES or str(MAX_FRAMES) in why


# --- 4: header sizes are checked before anything is allocated ---------------------------------
def test_huge_matrix_in_header_is_skipped(tmp_path):
    bad = _good_and_bad(tmp_path)
    _rewrite(bad, Rows=65535, Columns=65535)
    assert "implausible" in _scan_skips(tmp_path, bad)


def test_load_series_refuses_huge_claims_before_allocating(tmp_path):
    write_series(tmp_path, coded_volume([1, 2, 3]))
    info = scan_study(tmp_path).series[0]
    big = dataclasses.replace(info, records=[dataclasses.replace(r, rows=5000, columns=5000)
                                             for r in info.records])
    with pytest.raises(DicomReadError, match="implausible matrix") as caught:
        load_series(big)
    assert info.records[0].path.name in str(caught.value)
    n = MAX_SERIES_VOXELS // (4096 * 4096) + 1
    records = [dataclasses.replace(info.records[0], rows=4096, columns=4096,
                                   position=(0.0, float(i), 0.0)) for i in range(n)]
    with pytest.raises(SeriesError, match="voxels"):
        load_series(dataclasses.replace(info, records=records))


# --- 5: implausible geometry is refused at header reading; bilinear survives NaN ---------------
def test_absurd_pixel_spacing_counts_as_missing(tmp_path):
    write_series(tmp_path, coded_volume([1, 2, 3]), spacing=(1e308, 1e308))
    info = scan_study(tmp_path).series[0]
    assert info.pixel_spacing is None
    with pytest.warns(SpineFXWarning, match="no PixelSpacing"):
        vol = load_series(info)
    assert vol.pixel_spacing == (1.0, 1.0)


def test_absurd_position_counts_as_missing(tmp_path):
    positions = [(0.0, 0.0, 0.0), (4.0, 0.0, 0.0), (1e300, 0.0, 0.0)]
    write_series(tmp_path, coded_volume([1, 2, 3]), positions=positions)
    info = scan_study(tmp_path).series[0]
    assert info.records and sum(r.position is None for r in info.records) == 1
    with pytest.raises(SeriesError, match="ImagePositionPatient"):
        load_series(info)


def test_bilinear_treats_non_finite_coordinates_as_outside():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    r = np.array([np.nan, np.inf, -np.inf, 1.0, 1e300])
    c = np.array([0.0, 0.0, 1.0, 2.0, 1.0])
    out = bilinear(image, r, c, fill=-1.0)
    assert out.tolist() == [-1.0, -1.0, -1.0, 6.0, -1.0]


# --- 10: non-finite pixels after rescale are refused, never clipped silently -------------------
@pytest.mark.parametrize("rescale", [{"slope": "NaN"}, {"intercept": "inf"}, {"slope": "1e39"}])
def test_non_finite_rescale_is_refused(tmp_path, rescale):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: "Invalid value for VR DS"
        paths = write_series(tmp_path, coded_volume([1, 2, 3]), **rescale)
    with pytest.raises(DicomReadError, match="non-finite pixel values after rescale") as info:
        load_series(tmp_path)
    assert paths[0].name in str(info.value)


def test_nan_in_float_pixel_data_is_refused(tmp_path):
    paths = write_series(tmp_path, coded_volume([1, 2, 3]))
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        pixels = np.full((ds.Rows, ds.Columns), 100.0 + i, dtype="<f4")
        if i == 1:
            pixels[3, 4] = np.inf
        del ds.PixelData
        del ds.PixelRepresentation
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
        ds.FloatPixelData = pixels.tobytes()
        ds.save_as(p)
    with pytest.raises(DicomReadError, match="non-finite") as info:
        load_series(tmp_path)
    assert paths[1].name in str(info.value)


# --- 14: a broken file of a series never silently renumbers the slices -------------------------
def test_file_cut_in_its_header_makes_the_series_refuse(tmp_path):
    names = [f"IM{i:04d}" for i in range(5)]  # PACS exports: no .dcm suffix
    paths = write_series(tmp_path, coded_volume([1, 2, 3, 4, 5]), names=names)
    data = paths[2].read_bytes()
    uid_at = data.index(b"\x20\x00\x0e\x00UI")
    paths[2].write_bytes(data[:uid_at + 80])  # SeriesInstanceUID readable, the rest gone
    scan = scan_study(tmp_path)
    [info] = scan.series
    assert info.n_slices == 4 and [p.name for p, _ in info.unreadable] == ["IM0002"]
    assert info.summary()["unreadable_files"] == 1
    for source in (info, tmp_path):
        with pytest.raises(DicomReadError, match="incomplete|unreadable") as caught:
            load_series(source)
        assert "IM0002" in str(caught.value)


def test_broken_file_without_a_series_uid_fails_a_folder_load(tmp_path):
    names = [f"IM{i:04d}" for i in range(4)]
    paths = write_series(tmp_path, coded_volume([1, 2, 3, 4]), names=names)
    data = paths[1].read_bytes()
    j = data.index(b"\x08\x00\x16\x00UI")
    paths[1].write_bytes(data[:j + 4] + b"UJ" + data[j + 6:])  # header unreadable early on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DicomReadError) as caught:
            load_series(tmp_path)
    assert "IM0001" in str(caught.value)


def test_series_info_record_whose_pixels_fail_raises(tmp_path):
    paths = write_series(tmp_path, coded_volume([1, 2, 3, 4]))
    info = scan_study(tmp_path).series[0]
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 200])  # cut in its pixels after the scan
    assert isinstance(info, SeriesInfo)
    with pytest.raises(DicomReadError) as caught:
        load_series(info)
    assert paths[1].name in str(caught.value)


def test_any_error_interpreting_a_header_is_skipped_without_quoting_it(tmp_path, monkeypatch):
    """OSError from a garbled sequence (or anything else pydicom raises lazily) is a skip whose
    reason never repeats the exception text: it may quote header values, PHI included."""
    import spinefx.runtime.dicom as dicom

    bad = _good_and_bad(tmp_path)
    real = dicom._header_fields

    def garbled(ds, path):
        if path == bad:
            raise OSError(f"garbled sequence near {PHI[0]}")
        return real(ds, path)

    monkeypatch.setattr(dicom, "_header_fields", garbled)
    assert "OSError" in _scan_skips(tmp_path, bad)
