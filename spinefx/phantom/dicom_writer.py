"""Write a phantom case as two real DICOM MR series (sagittal T1W TSE and T2W TSE, T2W TSE
with fat saturation or STIR as the case's sequence variants; see :data:`PROTOCOLS`).

One file per slice, explicit VR little endian, 16-bit allocated / 12-bit stored unsigned
pixels, full geometry. UIDs come from :func:`pydicom.uid.generate_uid` with seed-based entropy
and file names from a hash of the SOP Instance UID, so output is byte-identical for a seed yet
file names carry no slice order. InstanceNumber counts from the patient's right (smallest x),
the reverse of the loaded order, as many scanners do; readers must sort by geometry.

Only synthetic identifiers are written: PatientName ``SYNTHETIC^PHANTOM_<case_id>``,
PatientID ``SYN-<case_id>``, empty birth date and sex, a fixed study date.
"""
from __future__ import annotations

import hashlib
from os import PathLike
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .case import PhantomCase, render_case

# Plausible 1.5 T protocols per sequence variant (see spinefx.phantom.contrast). T1_RED is the
# patient's red marrow, not a sequence: it is written as the plain T1 protocol.
PROTOCOLS = {
    "T1": dict(description="SYNTHETIC SAG T1 TSE", tr=520.0, te=10.0, etl=3, number=3,
               sequence="SE", variant=["SK", "SP"], options=""),
    "T2": dict(description="SYNTHETIC SAG T2 TSE", tr=3200.0, te=100.0, etl=17, number=4,
               sequence="SE", variant=["SK", "SP"], options=""),
    "T2_FS": dict(description="SYNTHETIC SAG T2 TSE FS", tr=3500.0, te=90.0, etl=17, number=4,
                  sequence="SE", variant=["SK", "SP"], options="FS"),
    "STIR": dict(description="SYNTHETIC SAG STIR", tr=4000.0, te=60.0, etl=15, number=4,
                 sequence=["SE", "IR"], variant=["SK", "SP", "MP"], options="IR", ti=150.0),
}
PROTOCOLS["T1_RED"] = PROTOCOLS["T1"]
STUDY_DATE = "20200101"  # fixed: output must not depend on the clock


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["spinefx-phantom", *map(str, parts)])


def _ds(value: float) -> str:
    """Decimal String value that fits the 16-character limit."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def write_case_dicom(case: PhantomCase, folder: str | PathLike, case_id: str) -> tuple[Path, Path]:
    """Write ``folder/t1`` and ``folder/t2`` (one .dcm file per slice); returns both folders."""
    folder = Path(folder)
    study_uid = _uid(case_id, case.seed, "study")
    frame_uid = _uid(case_id, case.seed, "frame")
    out = []
    for series in ("t1", "t2"):
        proto = PROTOCOLS[case.t1_variant if series == "t1" else case.t2_variant]
        series_dir = folder / series
        series_dir.mkdir(parents=True, exist_ok=True)
        series_uid = _uid(case_id, case.seed, series)
        volume = getattr(case, series)
        spacing = case.pixel_spacing if series == "t1" else case.t2_pixel_spacing
        n = volume.shape[0]
        # one display window per series (percentiles of a subsample: cheap, deterministic)
        lo, hi = np.percentile(volume[:, ::4, ::4], [1, 99.5])
        window = (_ds(round(float(lo + hi) / 2)), _ds(max(round(float(hi - lo)), 1)))
        # Build the series' dataset once; per slice only the instance tags change.
        ds = _series_dataset(case, volume[0].shape, spacing, proto, case_id, study_uid,
                             series_uid, frame_uid)
        ds.WindowCenter, ds.WindowWidth = window
        for i in range(n):
            sop_uid = _uid(case_id, case.seed, series, i)
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = n - i  # counted from the patient's right: reverse of loaded order
            ds.ImagePositionPatient = [_ds(v) for v in case.image_position(i, series)]
            ds.SliceLocation = _ds(float(case.slice_x[i]))
            ds.PixelData = np.ascontiguousarray(volume[i], dtype="<u2").tobytes()
            name = hashlib.sha1(sop_uid.encode()).hexdigest()[:16] + ".dcm"
            ds.save_as(series_dir / name, enforce_file_format=True)
        out.append(series_dir)
    return out[0], out[1]


def _series_dataset(case: PhantomCase, shape: tuple[int, int], spacing: tuple[float, float],
                    proto: dict, case_id: str, study_uid: str, series_uid: str,
                    frame_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "spinefx synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC PHANTOM SPINE"
    ds.SeriesDescription = proto["description"]
    ds.ImageComments = "SYNTHETIC phantom image, not patient data"
    ds.PatientName = f"SYNTHETIC^PHANTOM_{case_id}"
    ds.PatientID = f"SYN-{case_id}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "SPINE"
    ds.ScanningSequence = proto["sequence"]
    ds.SequenceVariant = proto["variant"]
    ds.ScanOptions = proto["options"]
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = _ds(case.slice_thickness)
    ds.SpacingBetweenSlices = _ds(case.spacing_between_slices)
    ds.RepetitionTime = _ds(proto["tr"])
    ds.EchoTime = _ds(proto["te"])
    if "ti" in proto:
        ds.InversionTime = _ds(proto["ti"])
    ds.EchoTrainLength = proto["etl"]
    ds.MagneticFieldStrength = "1.5"
    ds.ImagingFrequency = "63.86"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = proto["number"]
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    return ds


def write_phantom_study(folder: str | PathLike, seed: int, label: str,
                        case_id: str | None = None, **overrides) -> tuple[Path, Path, PhantomCase]:
    """Render one case and write it as DICOM under ``folder`` (for tests and demos).

    Returns ``(t1_dir, t2_dir, case)``; ``overrides`` go to :func:`render_case`.
    """
    case = render_case(seed, label, **overrides)
    t1_dir, t2_dir = write_case_dicom(case, folder, case_id or f"seed{seed}")
    return t1_dir, t2_dir, case
