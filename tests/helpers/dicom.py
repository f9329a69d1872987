"""Test helper: a tiny DICOM writer (pydicom only, milliseconds per series) and paths to the
real test data (pydicom's own files, pydicom-data, ../shared real spine MRI).

Import it as ``from tests.helpers.dicom import ...`` (pytest puts the repository root on
``sys.path``: ``pythonpath`` in pyproject.toml).

Never call pydicom.data.get_testdata_file(s): it may try to download. Folders are globbed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

# Sagittal, the way scanners write it: rows run anterior->posterior (+y), columns downwards (-z).
SAG_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AX_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
COR_IOP = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

REPO = Path(__file__).resolve().parents[2]
REAL_SPINE = (REPO / ".." / "shared" / "data" / "real-spine").resolve()
PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
try:  # the pydicom-data package (bigger files: compressed, big-endian, multi-frame)
    import data_store  # type: ignore
    PYDICOM_DATA = Path(data_store.__file__).parent / "data"
except ImportError:  # pragma: no cover - dev extra not installed
    PYDICOM_DATA = None


def normal_of(iop) -> np.ndarray:
    iop = np.asarray(iop, dtype=float)
    return np.cross(iop[:3], iop[3:])


def stack_positions(n: int, step: float, iop=SAG_IOP, origin=(10.0, -60.0, 80.0)) -> np.ndarray:
    """Positions of pixel (0, 0) of ``n`` slices ``step`` mm apart along the IOP's normal."""
    return np.asarray(origin, float)[None] + np.arange(n)[:, None] * step * normal_of(iop)[None]


def coded_volume(codes, rows: int = 24, cols: int = 20) -> np.ndarray:
    """uint16 slices whose pixel (0, 0) equals ``codes[i]`` plus a small fixed in-plane pattern
    (so no slice is constant)."""
    r, c = np.mgrid[0:rows, 0:cols]
    pattern = (r * 3 + c * 5) % 11
    return np.stack([int(code) + pattern for code in codes]).astype(np.uint16)


def position_code(coordinate: float) -> int:
    """The pixel value that encodes a slice coordinate (mm along the normal)."""
    return int(round(2000 + 10 * coordinate))


def _ds_numbers(values, ndigits: int = 6) -> list[float]:
    return [round(float(v), ndigits) for v in values]


def _base_dataset(sop_class, series_uid, study_uid, for_uid, description, tr, te, series_number,
                  extra: dict | None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = "PHANTOM^TEST"
    ds.PatientID = "PHANTOM-0001"
    ds.PatientBirthDate = "19000101"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    if tr is not None:
        ds.RepetitionTime = tr
    if te is not None:
        ds.EchoTime = te
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    return ds


def write_series(folder, volume, spacing=(0.5, 0.5), positions=None, iop=SAG_IOP,
                 description="SAG T1 TSE", names=None, instance_numbers=None, tr=500.0, te=10.0,
                 series_uid=None, study_uid=None, for_uid=None, slice_thickness=4.0,
                 series_number=1, signed=False, slope=None, intercept=None,
                 extra: dict | None = None) -> list[Path]:
    """Write ``volume`` (n, rows, cols) as n single-frame MR Image Storage files.

    ``positions`` (n, 3) ImagePositionPatient per file (default: a stack 4 mm apart);
    ``iop`` one 6-tuple, or a list of n 6-tuples (mixed orientations); ``names`` file names
    (may include sub-folders); ``instance_numbers`` what InstanceNumber says (default 1..n).
    Returns the paths in file-index order.
    """
    folder = Path(folder)
    volume = np.asarray(volume)
    n = volume.shape[0]
    positions = stack_positions(n, 4.0, iop if np.ndim(iop) == 1 else iop[0]) \
        if positions is None else np.asarray(positions, float)
    iops = [iop] * n if np.ndim(iop) == 1 else list(iop)
    names = names or [f"IM{i:04d}.dcm" for i in range(n)]
    instance_numbers = instance_numbers if instance_numbers is not None else range(1, n + 1)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    paths = []
    for i in range(n):
        ds = _base_dataset(MRImageStorage, series_uid, study_uid, for_uid, description, tr, te,
                           series_number, extra)
        ds.InstanceNumber = int(instance_numbers[i])
        ds.ImagePositionPatient = _ds_numbers(positions[i], 4)
        ds.ImageOrientationPatient = _ds_numbers(iops[i])
        ds.PixelSpacing = _ds_numbers(spacing)
        ds.SliceThickness = slice_thickness
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.PixelRepresentation = 1 if signed else 0
        if slope is not None:
            ds.RescaleSlope = slope
        if intercept is not None:
            ds.RescaleIntercept = intercept
        ds.PixelData = volume[i].astype("<i2" if signed else "<u2").tobytes()
        path = folder / names[i]
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(path, frames, positions, iop=SAG_IOP, spacing=(0.8, 0.6),
                   slope=2.0, intercept=-5.0, description="sag T2 enhanced", thickness=3.0,
                   acquisition_contrast=None) -> Path:
    """One Enhanced MR Image Storage file: frame f at ``positions[f]`` (per-frame
    PlanePositionSequence, in whatever order given), orientation, pixel measures and rescale in
    the shared functional groups."""
    frames = np.asarray(frames)
    ds = _base_dataset(EnhancedMRImageStorage, generate_uid(), generate_uid(), generate_uid(),
                       description, None, None, 7, None)
    if acquisition_contrast:
        ds.AcquisitionContrast = acquisition_contrast
    ds.NumberOfFrames = int(frames.shape[0])
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    ds.PixelRepresentation = 0
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = _ds_numbers(iop)
    measures = Dataset()
    measures.PixelSpacing = _ds_numbers(spacing)
    measures.SliceThickness = thickness
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = intercept
    transform.RescaleType = "US"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for pos in positions:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = _ds_numbers(pos, 4)
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.astype("<u2").tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def blob_function(points: np.ndarray) -> np.ndarray:
    """A smooth analytic image of patient coordinates (x, y, z) mm: two Gaussian blobs on a
    gentle wave. Bilinear resampling of it on a ~1 mm grid errs by well under 1 unit."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return (800.0
            + 900.0 * np.exp(-((y + 45.0) ** 2 + (z - 60.0) ** 2) / (2 * 9.0 ** 2))
            + 600.0 * np.exp(-((y + 25.0) ** 2 + (z - 45.0) ** 2) / (2 * 6.0 ** 2))
            + 150.0 * np.sin(y / 11.0) * np.cos(z / 13.0)
            + 2.0 * x)


def sample_series(fn, n, rows, cols, spacing, positions, iop=SAG_IOP) -> np.ndarray:
    """``fn`` sampled at every pixel centre of a stack (uint16, rounded)."""
    iop = np.asarray(iop, float)
    r, c = np.mgrid[0:rows, 0:cols].astype(float)
    out = np.empty((n, rows, cols))
    for i in range(n):
        pts = (np.asarray(positions[i])[None, None]
               + (c * spacing[1])[..., None] * iop[:3] + (r * spacing[0])[..., None] * iop[3:])
        out[i] = fn(pts)
    return np.clip(np.round(out), 0, 65535).astype(np.uint16)
