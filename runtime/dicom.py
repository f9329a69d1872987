"""DICOM study scanning (numpy + pydicom only; no torch).

`scan_study` walks a folder (nested, any file names), groups images by SeriesInstanceUID and
describes each series from its headers alone (no pixel decoding). Decoding a series into a
:class:`Volume` is `dicom_series.load_series`.

Nothing here reads, logs or returns PatientName, PatientID or PatientBirthDate.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .errors import DicomReadError, SeriesError
from .volume import plane_of

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR

ORIENTATION_TOLERANCE = 1e-3  # direction cosines agree to this: same orientation


# ---------------------------------------------------------------------------------------------
# Per-slice header records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceRecord:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""
    path: Path
    frame: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    slope: float
    intercept: float


@dataclass
class SeriesInfo:
    """What a series is, from headers alone (no pixel decoding, no PHI)."""
    series_uid: str
    description: str
    modality: str
    plane: str
    weighting: str
    n_slices: int
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    slice_thickness: float | None
    repetition_time: float | None
    echo_time: float | None
    inversion_time: float | None
    scanning_sequence: str
    series_number: int | None
    study_uid: str
    frame_of_reference_uid: str
    records: list[SliceRecord] = field(repr=False, default_factory=list)

    @property
    def files(self) -> list[Path]:
        return sorted({r.path for r in self.records})

    def summary(self) -> dict:
        """A JSON-able, PHI-free description (what `spinefx inspect` prints)."""
        return {
            "series_number": self.series_number,
            "description": self.description,
            "modality": self.modality,
            "plane": self.plane,
            "weighting": self.weighting,
            "slices": self.n_slices,
            "matrix": f"{self.rows}x{self.columns}",
            "pixel_spacing_mm": None if self.pixel_spacing is None
            else [round(s, 3) for s in self.pixel_spacing],
            "slice_spacing_mm": (None if self.slice_spacing is None
                                 else round(self.slice_spacing, 3)),
            "tr_ms": self.repetition_time,
            "te_ms": self.echo_time,
            "ti_ms": self.inversion_time,
            "series_uid": self.series_uid,
        }


@dataclass
class StudyScan:
    series: list[SeriesInfo]
    skipped: list[tuple[Path, str]]  # (file, why it was not used)

    def find(self, key: str) -> SeriesInfo:
        """A series by SeriesInstanceUID, series number, or unique description substring."""
        for s in self.series:
            if key == s.series_uid or (s.series_number is not None and key == str(s.series_number)):
                return s
        hits = [s for s in self.series if key.lower() in s.description.lower()]
        if len(hits) == 1:
            return hits[0]
        names = ", ".join(f"#{s.series_number} '{s.description}'" for s in self.series)
        what = "matches several series" if hits else "matches no series"
        raise SeriesError(f"'{key}' {what}; the study holds: {names}")

    def by_weighting(self, weighting: str, plane: str = "sagittal") -> list[SeriesInfo]:
        return [s for s in self.series if s.weighting == weighting and s.plane == plane]


# ---------------------------------------------------------------------------------------------
# Weighting from headers
# ---------------------------------------------------------------------------------------------
_T1 = re.compile(r"(?<![A-Z0-9])T1(?![0-9])")
_T2 = re.compile(r"(?<![A-Z0-9])T2(?![0-9])")
_STIR = re.compile(r"STIR|TIRM")
_BARE_IR = re.compile(r"(?<![A-Z])IR(?![A-Z])")


def classify_weighting(description: str = "", scanning_sequence: str = "",
                       repetition_time: float | None = None, echo_time: float | None = None,
                       inversion_time: float | None = None, acquisition_contrast: str = "") -> str:
    """'T1', 'T2', 'STIR' or 'unknown' from what scanners write into the header.

    The description wins when it names a weighting (technologists name protocols well);
    otherwise short-TI inversion recovery means STIR and TR/TE decide T1 (short/short) vs T2
    (long/long). FLAIR and PD stay 'unknown': callers can always override.
    """
    text = description.upper().replace("_", " ").replace("-", " ")
    if _STIR.search(text) or (_BARE_IR.search(text) and not re.search(r"T1|FLAIR", text)):
        return "STIR"  # a bare "IR" is STIR unless it says T1 (T1-IR) or FLAIR
    ir = "IR" in (scanning_sequence or "").upper()
    if ir and inversion_time is not None and 80 <= inversion_time <= 300:
        return "STIR"
    t1, t2 = bool(_T1.search(text)), bool(_T2.search(text))
    if t1 != t2:
        return "T1" if t1 else "T2"
    contrast = (acquisition_contrast or "").upper()  # Enhanced MR states it outright
    if contrast in ("T1", "T2"):
        return contrast
    if "FLAIR" in text or re.search(r"(?<![A-Z])PD(?![A-Z])", text):
        return "unknown"
    if repetition_time is not None and echo_time is not None:
        if repetition_time <= 1000 and echo_time <= 30:
            return "T1"
        if repetition_time >= 1500 and echo_time >= 60:
            return "T2"
    return "unknown"


# ---------------------------------------------------------------------------------------------
# Reading headers
# ---------------------------------------------------------------------------------------------
def _read_header(path: Path) -> pydicom.Dataset | None:
    """The dataset without pixels, or None when the file is not DICOM at all."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # no preamble: maybe a raw (pre-Part-10) dataset; checked below
    except Exception as exc:  # truncated / corrupt header of a real DICOM file
        raise DicomReadError(f"unreadable DICOM header ({type(exc).__name__}: {exc})",
                             path) from exc
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return None
    # force=True accepts any bytes; only trust it when the result looks like an image header
    return ds if ("SOPClassUID" in ds or "Rows" in ds) else None


def header_number(value, default=None):
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _floats(value, n: int):
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _orientation(value) -> tuple[float, ...] | None:
    """Six direction cosines, or None when they are not two orthogonal unit-ish vectors (a
    zeroed or garbled tag is as good as a missing one)."""
    ori = _floats(value, 6)
    if ori is None or not np.all(np.isfinite(ori)):
        return None
    row, col = np.array(ori[:3]), np.array(ori[3:])
    if not (0.9 < np.linalg.norm(row) < 1.1 and 0.9 < np.linalg.norm(col) < 1.1
            and abs(float(np.dot(row, col))) < 0.1):
        return None
    return ori


def _spacing(value) -> tuple[float, float] | None:
    """PixelSpacing (row, col) in mm, or None when absent, zero, negative or not finite."""
    sp = _floats(value, 2)
    if sp is None or not all(np.isfinite(v) and v > 0 for v in sp):
        return None
    return (float(sp[0]), float(sp[1]))


def _position(value) -> tuple[float, float, float] | None:
    pos = _floats(value, 3)
    if pos is None or not np.all(np.isfinite(pos)):
        return None
    return (float(pos[0]), float(pos[1]), float(pos[2]))


def _item(seq_owner, keyword: str):
    seq = getattr(seq_owner, keyword, None)
    return seq[0] if seq else None


def _frame_value(ds: pydicom.Dataset, frame: int, group: str, attr: str):
    """An attribute from a per-frame functional group, falling back to the shared group."""
    for owner_kw, index in (("PerFrameFunctionalGroupsSequence", frame),
                            ("SharedFunctionalGroupsSequence", 0)):
        seq = getattr(ds, owner_kw, None)
        if not seq or index >= len(seq):
            continue
        item = _item(seq[index], group)
        if item is not None and attr in item:
            return item[attr].value
    return None


def _records(ds: pydicom.Dataset, path: Path) -> list[SliceRecord]:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = int(header_number(ds.get("NumberOfFrames"), 1) or 1)
    if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        out = []
        for f in range(n_frames):
            pos = _position(_frame_value(ds, f, "PlanePositionSequence", "ImagePositionPatient"))
            ori = _orientation(_frame_value(ds, f, "PlaneOrientationSequence",
                                            "ImageOrientationPatient"))
            sp = _spacing(_frame_value(ds, f, "PixelMeasuresSequence", "PixelSpacing"))
            slope = _frame_value(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _frame_value(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
            # classic multi-frame files keep geometry at the top level
            pos = pos or (_position(ds.get("ImagePositionPatient")) if n_frames == 1 else None)
            ori = ori or _orientation(ds.get("ImageOrientationPatient"))
            sp = sp or _spacing(ds.get("PixelSpacing"))
            slope = header_number(slope, header_number(ds.get("RescaleSlope"), 1.0))
            icpt = header_number(icpt, header_number(ds.get("RescaleIntercept"), 0.0))
            out.append(SliceRecord(path, f, pos, ori, sp, rows, cols, slope, icpt))
        return out
    return [SliceRecord(path, None, _position(ds.get("ImagePositionPatient")),
                        _orientation(ds.get("ImageOrientationPatient")),
                        _spacing(ds.get("PixelSpacing")), rows, cols,
                        header_number(ds.get("RescaleSlope"), 1.0),
                        header_number(ds.get("RescaleIntercept"), 0.0))]


def _mr_value(ds: pydicom.Dataset, keyword: str, group: str, attr: str):
    """TR/TE/TI live at the top level in classic MR and in functional groups in Enhanced MR."""
    if keyword in ds:
        return header_number(ds[keyword].value)
    return header_number(_frame_value(ds, 0, group, attr))


def _series_info(uid: str, headers: list[tuple[Path, pydicom.Dataset]]) -> SeriesInfo:
    first = headers[0][1]
    records = [r for path, ds in headers for r in _records(ds, path)]
    ori = next((r.orientation for r in records if r.orientation), None)
    plane = plane_of(ori[:3], ori[3:]) if ori else "unknown"
    tr = _mr_value(first, "RepetitionTime", "MRTimingAndRelatedParametersSequence",
                   "RepetitionTime")
    te = _mr_value(first, "EchoTime", "MREchoSequence", "EffectiveEchoTime")
    ti = _mr_value(first, "InversionTime", "MRModifierSequence", "InversionTimes")
    description = str(first.get("SeriesDescription", "") or first.get("ProtocolName", "") or "")
    seq = first.get("ScanningSequence", "")
    seq = "\\".join(seq) if isinstance(seq, (list, pydicom.multival.MultiValue)) else str(seq or "")
    spacing = None
    if ori and all(r.position for r in records) and len(records) > 1:
        normal = np.cross(ori[:3], ori[3:])
        coords = np.sort([np.dot(np.asarray(r.position), normal) for r in records])
        diffs = np.diff(coords)
        diffs = diffs[diffs > 1e-3]
        spacing = float(np.median(diffs)) if len(diffs) else None
    series_number = first.get("SeriesNumber")
    return SeriesInfo(
        series_uid=uid, description=description, modality=str(first.get("Modality", "") or ""),
        plane=plane,
        weighting=classify_weighting(description, seq, tr, te, ti,
                                     str(first.get("AcquisitionContrast", "") or "")),
        n_slices=len(records), rows=records[0].rows, columns=records[0].columns,
        pixel_spacing=records[0].pixel_spacing, slice_spacing=spacing,
        slice_thickness=header_number(first.get("SliceThickness")),
        repetition_time=tr, echo_time=te, inversion_time=ti, scanning_sequence=seq,
        series_number=int(series_number) if series_number not in (None, "") else None,
        study_uid=str(first.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or ""),
        records=records,
    )


def _is_dicomdir(ds: pydicom.Dataset, path: Path) -> bool:
    """A DICOMDIR states its SOP class only in the file meta (and may be renamed on export)."""
    meta_sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    return (MEDIA_STORAGE_DIRECTORY in (str(ds.get("SOPClassUID", "")), meta_sop)
            or "DirectoryRecordSequence" in ds or path.name.upper() == "DICOMDIR")


def _iter_files(paths: Iterable[Path]) -> Iterable[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.is_file())
        else:
            yield p


def scan_study(source: str | PathLike | Sequence[str | PathLike]) -> StudyScan:
    """Find every DICOM image series under a folder (or in a list of files/folders).

    Non-DICOM files, DICOMDIR indexes and DICOM objects without pixels are skipped and listed
    in ``StudyScan.skipped`` with the reason. A file that *is* DICOM but cannot be parsed is
    also listed there (scanning a study should not die on one broken file); loading a series
    that needs it raises.
    """
    roots = [Path(source)] if isinstance(source, (str, PathLike)) else [Path(s) for s in source]
    for r in roots:
        if not r.exists():
            raise DicomReadError("no such file or folder", r)
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    skipped: list[tuple[Path, str]] = []
    for path in _iter_files(roots):
        try:
            ds = _read_header(path)
        except DicomReadError as exc:
            skipped.append((path, exc.problem))
            continue
        if ds is None:
            skipped.append((path, "not a DICOM file"))
        elif _is_dicomdir(ds, path):
            skipped.append((path, "DICOMDIR index (not an image)"))
        elif "Rows" not in ds or "Columns" not in ds:
            skipped.append((path, "DICOM object without an image (no Rows/Columns)"))
        else:
            uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{path.parent}")
            groups.setdefault(uid, []).append((path, ds))
    series = [_series_info(uid, hdrs) for uid, hdrs in groups.items()]
    series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30,
                               s.description))
    return StudyScan(series=series, skipped=skipped)
