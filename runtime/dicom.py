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

# What a header may claim before it is believed (a bit flip or a hostile file must not make the
# scan loop over a billion frames or a load allocate tens of GiB).
MAX_FRAMES = 4096                  # frames in one multi-frame file
MAX_MATRIX = 4096                  # Rows, Columns
MAX_SLICE_PIXELS = 16 * 2 ** 20    # Rows x Columns
PIXEL_SPACING_RANGE_MM = (0.01, 50.0)
SLICE_THICKNESS_RANGE_MM = (0.01, 200.0)
MAX_COORDINATE_MM = 1e6            # |ImagePositionPatient| components
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


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
    # Files whose header names this series (its SeriesInstanceUID is readable) but whose other
    # header values cannot be interpreted: (file, why). They hold slices that `records` lacks,
    # so `load_series` refuses the series rather than renumber the slices it can read.
    unreadable: list[tuple[Path, str]] = field(repr=False, default_factory=list)

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
            **({"unreadable_files": len(self.unreadable)} if self.unreadable else {}),
        }


@dataclass
class StudyScan:
    series: list[SeriesInfo]
    skipped: list[tuple[Path, str]]  # (file, why it was not used)
    # the subset of `skipped` that is DICOM (a header was found) but could not be interpreted
    broken: list[tuple[Path, str]] = field(default_factory=list)

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
    except (TypeError, ValueError, OverflowError):
        return default


def _fatal(exc: BaseException) -> bool:
    """Only these may escape a per-file guard; anything else a decoder or pydicom raises
    (pyo3's PanicException is a BaseException) is a broken file."""
    return isinstance(exc, _FATAL)


def _whole(ds: pydicom.Dataset, keyword: str, path: Path, low: int, high: int,
           default: int | None = None) -> int:
    """A header count (Rows, Columns, NumberOfFrames) that must be one whole number in
    low..high; a DicomReadError saying which tag is wrong otherwise."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise DicomReadError(f"{keyword} is missing", path)
        return default
    number = header_number(value)
    if number is None or not np.isfinite(number) or number != int(number):
        raise DicomReadError(f"{keyword} is not one whole number", path)
    if not low <= number <= high:
        raise DicomReadError(f"implausible {keyword} {int(number)} (allowed {low}..{high})", path)
    return int(number)


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
    low, high = PIXEL_SPACING_RANGE_MM
    if sp is None or not all(np.isfinite(v) and low <= v <= high for v in sp):
        return None  # missing or implausible (1e308 mm would overflow resampling)
    return (float(sp[0]), float(sp[1]))


def _position(value) -> tuple[float, float, float] | None:
    """ImagePositionPatient, or None when absent or not finite within MAX_COORDINATE_MM."""
    pos = _floats(value, 3)
    if pos is None or not np.all(np.isfinite(pos)) or np.abs(pos).max() >= MAX_COORDINATE_MM:
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


def _frame_count(ds: pydicom.Dataset, path: Path, rows: int, cols: int) -> int:
    """NumberOfFrames, believed only when plausible: at most MAX_FRAMES and, for native
    (uncompressed) pixel data, no more frames than the file has bytes for; encapsulated data
    needs at least one 8-byte item per frame. Checked from the file size, without decoding."""
    # 0 is read as 1, as pydicom does (older writers put 0 in single-frame files)
    n_frames = max(1, _whole(ds, "NumberOfFrames", path, 0, MAX_FRAMES, default=1))
    if n_frames > 1:
        size = path.stat().st_size
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if ts in _NATIVE_SYNTAXES or not ts:
            bits = _whole(ds, "BitsAllocated", path, 1, 64, default=16)
            samples = _whole(ds, "SamplesPerPixel", path, 1, 4, default=1)
            needed = (rows * cols * n_frames * samples * bits + 7) // 8
        else:
            needed = 8 * n_frames
        if size < needed:
            raise DicomReadError(f"NumberOfFrames {n_frames} does not fit the file ({size} bytes "
                                 f"for {needed} bytes of {rows}x{cols} frames)", path)
    return n_frames


def _records(ds: pydicom.Dataset, path: Path) -> list[SliceRecord]:
    rows = _whole(ds, "Rows", path, 1, MAX_MATRIX)
    cols = _whole(ds, "Columns", path, 1, MAX_MATRIX)
    if rows * cols > MAX_SLICE_PIXELS:
        raise DicomReadError(f"implausible matrix {rows}x{cols} (more than {MAX_SLICE_PIXELS} "
                             "pixels per slice)", path)
    n_frames = _frame_count(ds, path, rows, cols)
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


@dataclass
class _Header:
    """What one file contributes to its series, every lazy pydicom value already converted
    (so a garbled value fails while that file alone is being read)."""
    path: Path
    records: list[SliceRecord]
    fields: dict


def _header_fields(ds: pydicom.Dataset, path: Path) -> dict:
    tr = _mr_value(ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence",
                   "RepetitionTime")
    te = _mr_value(ds, "EchoTime", "MREchoSequence", "EffectiveEchoTime")
    ti = _mr_value(ds, "InversionTime", "MRModifierSequence", "InversionTimes")
    description = str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or "")
    seq = ds.get("ScanningSequence", "")
    seq = "\\".join(seq) if isinstance(seq, (list, pydicom.multival.MultiValue)) else str(seq or "")
    thickness = header_number(ds.get("SliceThickness"))
    low, high = SLICE_THICKNESS_RANGE_MM
    if thickness is not None and not (np.isfinite(thickness) and low <= thickness <= high):
        thickness = None  # implausible: as good as missing
    series_number = ds.get("SeriesNumber")
    number = header_number(series_number)
    if series_number not in (None, "") and (number is None or not np.isfinite(number)
                                            or number != int(number) or abs(number) > 2 ** 31):
        raise DicomReadError("SeriesNumber is not one whole number", path)
    return {
        "tr": tr, "te": te, "ti": ti, "description": description, "seq": seq,
        "modality": str(ds.get("Modality", "") or ""), "thickness": thickness,
        "series_number": None if number is None else int(number),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "") or ""),
        "contrast": str(ds.get("AcquisitionContrast", "") or ""),
    }


def _series_info(uid: str, headers: list[_Header]) -> SeriesInfo:
    first = headers[0].fields
    records = [r for h in headers for r in h.records]
    ori = next((r.orientation for r in records if r.orientation), None)
    plane = plane_of(ori[:3], ori[3:]) if ori else "unknown"
    tr, te, ti, description, seq = (first[k] for k in ("tr", "te", "ti", "description", "seq"))
    spacing = None
    if ori and all(r.position for r in records) and len(records) > 1:
        normal = np.cross(ori[:3], ori[3:])
        coords = np.sort([np.dot(np.asarray(r.position), normal) for r in records])
        diffs = np.diff(coords)
        diffs = diffs[diffs > 1e-3]
        spacing = float(np.median(diffs)) if len(diffs) else None
    return SeriesInfo(
        series_uid=uid, description=description, modality=first["modality"],
        plane=plane,
        weighting=classify_weighting(description, seq, tr, te, ti, first["contrast"]),
        n_slices=len(records), rows=records[0].rows, columns=records[0].columns,
        pixel_spacing=records[0].pixel_spacing, slice_spacing=spacing,
        slice_thickness=first["thickness"],
        repetition_time=tr, echo_time=te, inversion_time=ti, scanning_sequence=seq,
        series_number=first["series_number"],
        study_uid=first["study_uid"],
        frame_of_reference_uid=first["frame_of_reference_uid"],
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


def _series_uid_of(path: Path, ds: pydicom.Dataset | None) -> str:
    """The SeriesInstanceUID of a file whose header is broken, when it can still be read (from
    the parsed dataset, else from the elements before it); '' when not."""
    try:
        if ds is None:
            with open(path, "rb") as fp:
                ds = pydicom.filereader.read_partial(
                    fp, stop_when=lambda tag, vr, length: tag > 0x0020000E)
        return str(ds.get("SeriesInstanceUID", "") or "")
    except BaseException as exc:
        if _fatal(exc):
            raise
        return ""


def _header_entry(path: Path, ds: pydicom.Dataset) -> tuple[str, _Header] | str:
    """(series uid, what the file contributes) for an image, or why the file is not one."""
    if _is_dicomdir(ds, path):
        return "DICOMDIR index (not an image)"
    if "Rows" not in ds or "Columns" not in ds:
        sop = str(ds.get("SOPClassUID", "") or "")
        if "Image Storage" in getattr(pydicom.uid.UID(sop), "name", ""):
            # an image object whose header stops short: a file cut off, not a non-image object
            raise DicomReadError("image header without Rows/Columns (the file is cut short or "
                                 "corrupt)", path)
        return "DICOM object without an image (no Rows/Columns)"
    uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{path.parent}")
    return uid, _Header(path, _records(ds, path), _header_fields(ds, path))


def _broken_reason(exc: BaseException) -> str:
    """Why a header cannot be used, without quoting its values (they may hold PHI)."""
    if isinstance(exc, DicomReadError):
        return exc.problem
    return f"DICOM header cannot be interpreted ({type(exc).__name__}: a garbled or corrupt value)"


def scan_study(source: str | PathLike | Sequence[str | PathLike]) -> StudyScan:
    """Find every DICOM image series under a folder (or in a list of files/folders).

    Non-DICOM files, DICOMDIR indexes and DICOM objects without pixels are skipped and listed
    in ``StudyScan.skipped`` with the reason. A file that *is* DICOM but whose header cannot be
    parsed or interpreted (corrupt values, an implausible matrix or frame count) is also listed
    there and in ``StudyScan.broken`` (scanning a study should not die on one broken file).
    When such a file still names its series (a readable SeriesInstanceUID), it is also listed
    in that series' ``SeriesInfo.unreadable``: the series is incomplete, and `load_series`
    refuses it rather than number its remaining slices differently from the archive.
    """
    roots = [Path(source)] if isinstance(source, (str, PathLike)) else [Path(s) for s in source]
    for r in roots:
        if not r.exists():
            raise DicomReadError("no such file or folder", r)
        if not (r.is_dir() or r.is_file()):  # a pipe would block, /dev/zero never end
            raise DicomReadError("not a regular file or folder (a device, pipe or socket)", r)
    groups: dict[str, list[_Header]] = {}
    skipped: list[tuple[Path, str]] = []
    broken: list[tuple[Path, str]] = []
    broken_uids: dict[str, list[tuple[Path, str]]] = {}
    for path in _iter_files(roots):
        ds = None
        try:
            ds = _read_header(path)
            if ds is None:
                skipped.append((path, "not a DICOM file"))
                continue
            entry = _header_entry(path, ds)
        except BaseException as exc:
            if _fatal(exc):
                raise
            why = _broken_reason(exc)
            skipped.append((path, why))
            broken.append((path, why))
            uid = _series_uid_of(path, ds)
            if uid:
                broken_uids.setdefault(uid, []).append((path, why))
            continue
        if isinstance(entry, str):
            skipped.append((path, entry))
        else:
            groups.setdefault(entry[0], []).append(entry[1])
    series = [_series_info(uid, hdrs) for uid, hdrs in groups.items()]
    for s in series:
        s.unreadable = broken_uids.get(s.series_uid, [])
    series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30,
                               s.description))
    return StudyScan(series=series, skipped=skipped, broken=broken)
