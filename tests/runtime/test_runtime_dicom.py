"""DICOM ingestion: every MR file shipped with pydicom / pydicom-data, Enhanced MR multi-frame,
signed pixels, missing decoders, objects without pixels, and study scanning."""
from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_rescale
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, JPEGLSLossless, RLELossless

from spinefx.runtime import (
    DicomReadError,
    SeriesError,
    SpineFXError,
    SpineFXWarning,
    load_series,
    scan_study,
)
from tests.helpers.dicom import (
    PYDICOM_DATA,
    PYDICOM_TEST_FILES,
    SAG_IOP,
    coded_volume,
    normal_of,
    position_code,
    stack_positions,
    write_enhanced,
    write_series,
)


# ---------------------------------------------------------------------------------------------
# Real files: pydicom's test files and the pydicom-data package
# ---------------------------------------------------------------------------------------------
def _real_mr_files() -> list[tuple[str, Path]]:
    roots = [PYDICOM_TEST_FILES] + ([PYDICOM_DATA] if PYDICOM_DATA is not None else [])
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:
                continue
            if str(ds.get("Modality", "")) == "MR":
                found.append((str(path.relative_to(root)), path))
    return found


REAL_MR = _real_mr_files()
BY_NAME = {path.name: path for _, path in REAL_MR}
# Files that are broken on purpose; every other MR file must decode (the decoders are core
# dependencies of spinefx).
EXPECTED_BROKEN = {"MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"}


def _real(name: str) -> Path:
    if name not in BY_NAME:
        where = "pydicom-data" if name.startswith(("emri", "MR2", "MR-")) else "pydicom"
        pytest.skip(f"{name} not installed ({where} test files)")
    return BY_NAME[name]


def _load_quiet(paths, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_series(paths, **kw)


def test_real_mr_files_were_found():
    names = set(BY_NAME)
    assert {"MR_small.dcm", "MR_truncated.dcm", "MR_small_RLE.dcm"} <= names
    assert len(REAL_MR) >= 20  # pydicom alone ships ~27 MR files (dicomdirtests included)
    if PYDICOM_DATA is not None:
        assert {"emri_small.dcm", "MR2_UNCR.dcm", "MR2_J2KI.dcm"} <= names


@pytest.mark.parametrize("path", [p for _, p in REAL_MR], ids=[i for i, _ in REAL_MR])
def test_real_mr_file_loads_or_fails_cleanly(path: Path):
    header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    try:
        vol = _load_quiet([path], min_slices=1)
    except SpineFXError as exc:
        assert path.name in str(exc), f"error does not name the file: {exc}"
        assert isinstance(exc, DicomReadError)
        assert path.name in EXPECTED_BROKEN, f"{path.name} should load but raised: {exc}"
        return
    except Exception as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"{path.name}: {type(exc).__name__} escaped instead of SpineFXError: {exc}")
    assert path.name not in EXPECTED_BROKEN, f"{path.name} is broken but loaded"
    n_frames = int(header.get("NumberOfFrames", 1) or 1)
    assert vol.data.dtype == np.float32 and vol.data.ndim == 3
    assert vol.shape == (n_frames, int(header.Rows), int(header.Columns))
    assert np.isfinite(vol.data).all()
    assert vol.data.max() > vol.data.min()
    assert len(vol.slice_sources) == n_frames
    # same pixels as pydicom's own decoder + rescale, in the order the loader chose
    ds = pydicom.dcmread(path, force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = apply_rescale(ds.pixel_array, ds).astype(np.float64)
    ref = ref.reshape(n_frames, *vol.shape[1:])
    frames = [int(s.rsplit("#", 1)[1]) if "#" in s else 0 for s in vol.slice_sources]
    assert str(ds.get("PhotometricInterpretation")) == "MONOCHROME2"
    np.testing.assert_allclose(vol.data, ref[frames], rtol=1e-6, atol=1e-3)


def test_rescale_slope_intercept_applied_manually():
    """MR2_UNCR has RescaleSlope 3.77...: check the formula by hand, not through pydicom."""
    path = _real("MR2_UNCR.dcm")
    ds = pydicom.dcmread(path)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert slope != 1.0
    vol = _load_quiet([path], min_slices=1)
    expected = ds.pixel_array.astype(np.float64) * slope + intercept
    np.testing.assert_allclose(vol.data[0], expected, rtol=1e-6, atol=1e-3)
    assert not np.allclose(vol.data[0], ds.pixel_array)  # really rescaled


def test_signed_pixels_of_real_file_survive():
    path = _real("MR_small.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1
    vol = _load_quiet([path], min_slices=1)
    np.testing.assert_array_equal(vol.data[0], ds.pixel_array.astype(np.float32))


def test_truncated_file_names_problem():
    path = _real("MR_truncated.dcm")
    with pytest.raises(DicomReadError) as info:
        _load_quiet([path], min_slices=1)
    msg = str(info.value)
    assert "MR_truncated.dcm" in msg
    assert "truncated" in msg.lower() or "corrupt" in msg.lower()


def test_too_short_compressed_file_is_a_dicom_read_error():
    path = _real("emri_small_jpeg_2k_lossless_too_short.dcm")
    with pytest.raises(DicomReadError, match="emri_small_jpeg_2k_lossless_too_short"):
        _load_quiet([path], min_slices=1)


TWINS = [  # (variant, uncompressed twin, exact?)
    ("MR_small_RLE.dcm", "MR_small.dcm", True),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", True),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", True),
    ("MR_small_bigendian.dcm", "MR_small.dcm", True),
    ("MR_small_expb.dcm", "MR_small.dcm", True),
    ("MR_small_implicit.dcm", "MR_small.dcm", True),
    ("MR_small_padded.dcm", "MR_small.dcm", True),
    ("emri_small_RLE.dcm", "emri_small.dcm", True),
    ("emri_small_big_endian.dcm", "emri_small.dcm", True),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", True),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", True),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm", True),
    ("MR2_J2KI.dcm", "MR2_UNCI.dcm", True),   # UNCI = the lossy image stored uncompressed
    ("MR2_J2KI.dcm", "MR2_UNCR.dcm", False),  # lossy vs the original: close, not equal
]


@pytest.mark.parametrize("variant,twin,exact", TWINS,
                         ids=[f"{a}-vs-{b}" for a, b, _ in TWINS])
def test_encodings_decode_to_their_uncompressed_twin(variant, twin, exact):
    a = _load_quiet([_real(variant)], min_slices=1)
    b = _load_quiet([_real(twin)], min_slices=1)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
    if exact:
        np.testing.assert_array_equal(a.data, b.data)
    else:
        span = float(b.data.max() - b.data.min())
        diff = np.abs(a.data - b.data)
        assert not np.array_equal(a.data, b.data)  # it *is* lossy
        assert diff.mean() < 0.02 * span
        assert np.corrcoef(a.data.ravel(), b.data.ravel())[0, 1] > 0.99


def test_multiframe_emri_loads_ten_slices():
    with pytest.warns(SpineFXWarning) as record:
        vol = load_series([_real("emri_small.dcm")], min_slices=1)
    messages = " ".join(str(w.message) for w in record)
    assert "ImagePositionPatient" in messages and "PixelSpacing" in messages
    assert vol.shape == (10, 64, 64)
    assert np.all(np.diff(vol.slice_coordinates) > 0)
    assert vol.slice_sources[3].endswith("#3")


# ---------------------------------------------------------------------------------------------
# Enhanced MR multi-frame with functional groups, built here
# ---------------------------------------------------------------------------------------------
def test_enhanced_mr_frames_sorted_geometry_and_rescale(tmp_path):
    n, step = 7, 3.5
    positions = stack_positions(n, step, SAG_IOP, origin=(22.0, -80.0, 90.0))
    coords = positions @ normal_of(SAG_IOP)
    stored = [4, 0, 6, 2, 5, 1, 3]  # frame f of the file holds stack slice stored[f]
    raw = coded_volume([position_code(coords[s]) for s in stored], rows=18, cols=14)
    path = write_enhanced(tmp_path / "enh.dcm", raw, positions[stored], spacing=(0.8, 0.6),
                          slope=2.0, intercept=-5.0)
    vol = load_series(path)
    assert vol.shape == (n, 18, 14)
    assert vol.pixel_spacing == pytest.approx((0.8, 0.6))
    assert vol.plane == "sagittal"
    assert vol.slice_spacing == pytest.approx(step, abs=1e-3)
    np.testing.assert_allclose(vol.slice_coordinates, np.sort(coords), atol=1e-3)
    np.testing.assert_allclose(vol.positions, positions, atol=1e-3)
    # rescale: stored raw values * 2 - 5, in position order
    expected_codes = np.array([position_code(c) for c in np.sort(coords)]) * 2.0 - 5.0
    np.testing.assert_allclose(vol.data[:, 0, 0], expected_codes)
    np.testing.assert_allclose(vol.data[:, 5, 7],
                               (raw[np.argsort(stored), 5, 7]).astype(float) * 2 - 5)
    # frame bookkeeping: slice i came from the frame that held stack slice i
    assert [int(s.rsplit("#", 1)[1]) for s in vol.slice_sources] == list(np.argsort(stored))
    info = scan_study(tmp_path).series[0]
    assert info.n_slices == n and info.slice_spacing == pytest.approx(step, abs=1e-3)
    assert info.weighting == "T2"


def test_enhanced_mr_acquisition_contrast_gives_weighting(tmp_path):
    positions = stack_positions(3, 4.0)
    write_enhanced(tmp_path / "e.dcm", coded_volume([10, 20, 30]), positions,
                   description="sag tse", acquisition_contrast="T1")
    assert scan_study(tmp_path).series[0].weighting == "T1"


# ---------------------------------------------------------------------------------------------
# Pixel representations and broken objects, built here
# ---------------------------------------------------------------------------------------------
def test_signed_int16_negative_values_survive(tmp_path):
    rng = np.random.default_rng(0)
    vol_in = rng.integers(-1500, 1500, size=(3, 16, 16)).astype(np.int16)
    vol_in[:, 0, 0] = [-1500, -7, 1499]
    write_series(tmp_path, vol_in, signed=True, slope=0.5, intercept=10.0)
    vol = load_series(tmp_path)
    np.testing.assert_allclose(vol.data, vol_in.astype(np.float64) * 0.5 + 10.0)
    assert vol.data.min() < -700  # negative values were not wrapped to 65535-ish


@pytest.mark.parametrize("signed", [False, True])
def test_12_bit_pixels(tmp_path, signed):
    lo, hi = (-2048, 2047) if signed else (0, 4095)
    vol_in = np.random.default_rng(2).integers(lo, hi + 1, size=(3, 16, 16))
    vol_in[0, 0, :2] = [lo, hi]
    write_series(tmp_path, vol_in, signed=signed, extra={"BitsStored": 12, "HighBit": 11})
    vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.data, vol_in.astype(np.float32))
    assert vol.data.min() == lo and vol.data.max() == hi


def test_unsigned_high_values_not_wrapped(tmp_path):
    vol_in = coded_volume([60000, 61000, 62000], 16, 16)
    write_series(tmp_path, vol_in)
    vol = load_series(tmp_path)
    assert vol.data[:, 0, 0].tolist() == [60000, 61000, 62000]


@pytest.mark.parametrize("name,uid,package", [
    ("MR_small_jp2klossless.dcm", JPEG2000Lossless, "pylibjpeg-openjpeg"),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless, "pyjpegls"),
    ("MR_small_RLE.dcm", RLELossless, "pylibjpeg-rle"),
])
def test_missing_decoder_names_transfer_syntax_and_package(monkeypatch, name, uid, package):
    path = _real(name)
    monkeypatch.setattr(get_decoder(uid), "_available", {})  # as if no plugin were installed
    with pytest.raises(DicomReadError) as info:
        _load_quiet([path], min_slices=1)
    msg = str(info.value)
    assert name in msg
    assert str(uid) in msg and uid.name in msg
    assert package in msg and "install" in msg.lower()


@pytest.mark.parametrize("ts", [MPEG2MPML, "1.2.826.0.1.3680043.99.1.1"])
def test_unsupported_transfer_syntax_is_named(tmp_path, ts):
    src = write_series(tmp_path / "src", coded_volume([100], 16, 16))[0]
    ds = pydicom.dcmread(src)
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    out = tmp_path / "odd_syntax.dcm"
    ds.save_as(out)
    with pytest.raises(DicomReadError) as info:
        _load_quiet([out], min_slices=1)
    msg = str(info.value)
    assert "odd_syntax.dcm" in msg
    assert "transfer syntax" in msg.lower()
    assert str(ts) in msg or pydicom.uid.UID(ts).name in msg
    assert "not supported" in msg and "truncated" not in msg  # not blamed on a broken file


def test_file_without_pixel_data(tmp_path):
    path = write_series(tmp_path, coded_volume([5, 6], 16, 16))[0]
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(DicomReadError) as info:
        load_series([path], min_slices=1)
    assert path.name in str(info.value) and "no pixel data" in str(info.value)


def test_truncated_member_of_a_series_is_named(tmp_path):
    paths = write_series(tmp_path, coded_volume([1, 2, 3], 32, 32))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 300])
    with pytest.raises(DicomReadError) as info:
        load_series(tmp_path)
    assert paths[1].name in str(info.value)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DicomReadError, match="no such file"):
        scan_study(tmp_path / "nowhere")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DicomReadError, match="no DICOM image series"):
        load_series(tmp_path)


# ---------------------------------------------------------------------------------------------
# Study scanning
# ---------------------------------------------------------------------------------------------
def test_scan_skips_non_dicom_and_dicomdir_with_a_note(tmp_path):
    write_series(tmp_path / "series", coded_volume([1, 2, 3], 16, 16))
    dicomdir = PYDICOM_TEST_FILES / "dicomdirtests" / "DICOMDIR"
    assert dicomdir.is_file()
    shutil.copy(dicomdir, tmp_path / "DICOMDIR")
    shutil.copy(dicomdir, tmp_path / "series" / "index.dcm")  # a DICOMDIR under another name
    (tmp_path / "README.txt").write_text("exported by PACS\n")
    (tmp_path / "series" / "thumbs.db").write_bytes(bytes(range(256)) * 4)
    scan = scan_study(tmp_path)
    assert len(scan.series) == 1 and scan.series[0].n_slices == 3
    reasons = {p.name: why for p, why in scan.skipped}
    assert set(reasons) == {"DICOMDIR", "index.dcm", "README.txt", "thumbs.db"}
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert "DICOMDIR" in reasons["index.dcm"]
    assert "not a DICOM" in reasons["README.txt"]
    assert "not a DICOM" in reasons["thumbs.db"]
    # and the series still loads despite the junk beside it
    vol = load_series(scan.series[0])
    assert vol.shape == (3, 16, 16)


def test_scan_pydicom_dicomdir_folder():
    """pydicom's DICOMDIR test tree: the indexes are skipped, every MR image is in a series."""
    folder = PYDICOM_TEST_FILES / "dicomdirtests"
    scan = scan_study(folder)
    reasons = {p.relative_to(folder).as_posix(): why for p, why in scan.skipped}
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert all("DICOMDIR" in why for name, why in reasons.items()
               if Path(name).name.startswith("DICOMDIR"))
    mr_images = [p for _, p in REAL_MR if folder in p.parents]
    assert len(mr_images) >= 15
    in_series = {r.path for s in scan.series for r in s.records}
    assert set(mr_images) <= in_series
    assert not in_series & {folder / name for name in reasons}
    assert all(s.modality for s in scan.series)


def _random_name(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(12))


def test_scan_nested_folder_groups_by_series_uid(tmp_path):
    rng = random.Random(3)
    study_uid = pydicom.uid.generate_uid()
    t1_pos = stack_positions(9, 4.4)
    t2_pos = stack_positions(7, 5.0)
    t1_names = [f"d{rng.randint(0, 2)}/s{rng.randint(0, 3)}/{_random_name(rng)}" for _ in range(9)]
    t2_names = [f"d{rng.randint(0, 2)}/s{rng.randint(0, 3)}/{_random_name(rng)}" for _ in range(7)]
    write_series(tmp_path, coded_volume(range(9), 20, 16), spacing=(0.6, 0.7), positions=t1_pos,
                 description="SAG T1 TSE", names=t1_names, tr=550, te=9, study_uid=study_uid,
                 series_number=3)
    write_series(tmp_path, coded_volume(range(7), 24, 24), spacing=(0.5, 0.5), positions=t2_pos,
                 description="t2_tse_sag", names=t2_names, tr=3500, te=95, study_uid=study_uid,
                 series_number=4)
    scan = scan_study(tmp_path)
    assert scan.skipped == []
    assert [s.series_number for s in scan.series] == [3, 4]
    t1, t2 = scan.series
    assert (t1.plane, t1.weighting, t1.n_slices, t1.rows, t1.columns) == \
        ("sagittal", "T1", 9, 20, 16)
    assert (t2.plane, t2.weighting, t2.n_slices, t2.rows, t2.columns) == \
        ("sagittal", "T2", 7, 24, 24)
    assert t1.pixel_spacing == pytest.approx((0.6, 0.7))
    assert t1.slice_spacing == pytest.approx(4.4, abs=1e-3)
    assert t2.slice_spacing == pytest.approx(5.0, abs=1e-3)
    assert {p.relative_to(tmp_path).as_posix() for p in t1.files} == set(t1_names)
    assert t1.repetition_time == 550 and t2.echo_time == 95
    summary = t1.summary()
    assert summary["slices"] == 9 and summary["weighting"] == "T1"
    assert summary["plane"] == "sagittal"
    text = json.dumps([s.summary() for s in scan.series])
    assert "PHANTOM" not in text and "19000101" not in text  # no PHI in what is shown
    assert scan.by_weighting("T2") == [t2]
    assert scan.find("4") is t2 and scan.find("T1 TSE") is t1
    with pytest.raises(SeriesError, match="matches no series"):
        scan.find("STIR")
    with pytest.raises(SeriesError, match="2 series"):
        load_series(tmp_path)
    vol = load_series(t2)
    assert vol.shape == (7, 24, 24) and vol.weighting == "T2"
    assert load_series(t2, weighting="STIR").weighting == "STIR"  # override wins


# --- garbled geometry tags count as missing, never as a crash -----------------------------------
def test_zeroed_orientation_is_missing_geometry_not_a_crash(tmp_path):
    write_series(tmp_path / "s", coded_volume([10, 20, 30]), iop=(0, 0, 0, 0, 0, 0))
    scan = scan_study(tmp_path / "s")
    assert scan.series[0].plane == "unknown"
    with pytest.raises(SeriesError, match="no ImagePositionPatient / ImageOrientationPatient"):
        load_series(tmp_path / "s")


def test_zero_pixel_spacing_is_treated_as_unknown(tmp_path):
    write_series(tmp_path / "s", coded_volume([10, 20, 30]), spacing=(0, 0))
    with pytest.warns(SpineFXWarning, match="no PixelSpacing"):
        vol = load_series(tmp_path / "s")
    assert vol.pixel_spacing == (1.0, 1.0) and not vol.spacing_known


def test_monochrome1_series_inverts_consistently_across_slices(tmp_path):
    # slice i is uniformly 100*(i+1): after inversion the brightest stored slice is the darkest
    vol = np.stack([np.full((16, 16), 100 * (i + 1), np.uint16) for i in range(3)])
    vol[:, 0, 0] += 1  # not constant, so nothing special-cases it
    write_series(tmp_path / "s", vol, extra={"PhotometricInterpretation": "MONOCHROME1"})
    loaded = load_series(tmp_path / "s").data
    means = loaded[:, 4:, 4:].mean(axis=(1, 2))
    assert means[0] > means[1] > means[2]
    np.testing.assert_allclose(means, [301, 201, 101], atol=1)
