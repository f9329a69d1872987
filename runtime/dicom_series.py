"""Decoding one DICOM series into a :class:`Volume` (numpy + pydicom only; no torch).

`load_series` orders slices along the slice normal from ImagePositionPatient /
ImageOrientationPatient — never by file name or InstanceNumber, which scanners and PACS exports
do not keep reliable — applies RescaleSlope/Intercept, inverts MONOCHROME1 per series and reads
classic and Enhanced multi-frame files with any transfer syntax a decoder is installed for.

Nothing here reads, logs or returns PatientName, PatientID or PatientBirthDate.
"""
from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom

from .dicom import (
    MAX_MATRIX,
    MAX_SLICE_PIXELS,
    ORIENTATION_TOLERANCE,
    SeriesInfo,
    SliceRecord,
    header_number,
    scan_study,
)
from .errors import DicomReadError, SeriesError, SpineFXWarning
from .volume import Volume, plane_of

# At most this many voxels in one series (a float32 volume of 1 GiB; decoding holds one file's
# float64 copy beside it): a header claiming more is refused before anything is allocated.
MAX_SERIES_VOXELS = 256 * 2 ** 20

_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)
_F32_MAX = float(np.finfo(np.float32).max)

# Transfer syntax -> the package that lets pydicom decode it (named in error messages).
DECODERS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or pillow)",   # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (or pillow)",   # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",               # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",               # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg-libjpeg)", # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg-libjpeg)", # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",              # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",              # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",             # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",             # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",             # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (numpy fallback built in)",  # RLE Lossless
}


def _decode(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    try:
        ds = pydicom.dcmread(path)
    except BaseException as exc:
        if isinstance(exc, _FATAL):
            raise
        raise DicomReadError(f"unreadable DICOM file ({type(exc).__name__}: {exc})", path) from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomReadError("the file has no pixel data (truncated, or not an image object)", path)
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    try:
        arr = ds.pixel_array
    except BaseException as exc:
        # a decoder written in Rust (pylibjpeg-rle) panics on a damaged segment: pyo3's
        # PanicException derives from BaseException, so `except Exception` would let it pass
        if isinstance(exc, _FATAL):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if ts in DECODERS and ("plugin" in msg.lower() or "decod" in msg.lower()
                               or isinstance(exc, (NotImplementedError, RuntimeError))):
            name = pydicom.uid.UID(ts).name
            raise DicomReadError(
                f"cannot decode transfer syntax {name} ({ts}): {msg}. "
                f"Install {DECODERS[ts]} to read it.", path) from exc
        if isinstance(exc, NotImplementedError) and ts:  # a syntax no decoder handles at all
            raise DicomReadError(f"transfer syntax {pydicom.uid.UID(ts).name} ({ts}) is not "
                                 f"supported: {msg}", path) from exc
        raise DicomReadError(f"pixel data cannot be decoded ({type(exc).__name__}: {msg}); "
                             "the file may be truncated or corrupt", path) from exc
    return ds, arr


def _to_grey(ds: pydicom.Dataset, arr: np.ndarray, path: Path, n_frames: int) -> np.ndarray:
    """(frames, rows, cols) float64 greyscale, colour averaged (MONOCHROME1 is inverted per
    series by the caller, so all slices flip around the same values)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    arr = np.asarray(arr)
    if samples > 1:
        warnings.warn(f"{path}: colour image ({photometric}) converted to grey", SpineFXWarning,
                      stacklevel=3)
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    arr = arr.astype(np.float64)
    if n_frames == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DicomReadError(f"unexpected pixel array shape {arr.shape}", path)
    return arr


def load_series(source: SeriesInfo | str | PathLike | Sequence[str | PathLike],
                weighting: str | None = None, min_slices: int = 2) -> Volume:
    """Load one series as a float32 :class:`Volume` sorted along the slice normal.

    ``source`` is a :class:`SeriesInfo` from :func:`scan_study`, a folder holding exactly one
    image series, or a list of files of one series. ``weighting`` overrides what the headers
    say. Raises :class:`SeriesError` for mixed orientations, mixed matrix sizes, duplicate
    positions, missing geometry, or fewer than ``min_slices`` slices.

    Slice indices are stable: slice ``i`` of the volume is slice ``i`` of what `scan_study` /
    `spinefx inspect` listed for the series. So a file of the series that cannot be read is an
    error naming that file (:class:`DicomReadError`), never a slice silently dropped (which
    would shift every later index by one): a header-level failure recorded by the scan
    (``SeriesInfo.unreadable``, or a broken DICOM file in the folder loaded) is refused here,
    and a file whose pixels fail to decode raises while loading. Header sizes are checked
    before anything is allocated (``MAX_MATRIX``, ``MAX_SLICE_PIXELS``,
    ``MAX_SERIES_VOXELS``), and pixels that are not finite after rescale are refused.
    """
    info, where = _one_series(source)
    label = f"series '{info.description or info.series_uid}'"
    if info.unreadable:
        path, why = info.unreadable[0]
        raise DicomReadError(
            f"{len(info.unreadable)} file(s) of {label} cannot be read ({why}); the series is "
            "incomplete, so its slice numbering would not match the archive", path)
    _check_stack(info.records, label, where, min_slices)
    _check_size(info.records, label, where)
    records, positions, row_dir, col_dir = _slice_geometry(info, label, where)
    spacing = records[0].pixel_spacing
    spacing_known = spacing is not None
    if spacing is None:
        warnings.warn(f"{where}: {label} has no PixelSpacing (missing or implausible); "
                      "assuming 1 mm", SpineFXWarning, stacklevel=2)
        spacing = (1.0, 1.0)
    metadata = {
        "modality": info.modality, "study_uid": info.study_uid, "series_number": info.series_number,
        "frame_of_reference_uid": info.frame_of_reference_uid,
        "repetition_time": info.repetition_time, "echo_time": info.echo_time,
    }
    return Volume(
        data=_read_pixels(records), pixel_spacing=spacing, positions=positions,
        row_direction=row_dir, column_direction=col_dir, weighting=weighting or info.weighting,
        description=info.description, series_uid=info.series_uid, source=str(where),
        slice_sources=tuple(str(r.path) + (f"#{r.frame}" if r.frame is not None else "")
                            for r in records),
        spacing_known=spacing_known, metadata=metadata)


def _one_series(source: SeriesInfo | str | PathLike | Sequence[str | PathLike]
                ) -> tuple[SeriesInfo, Path]:
    """The series to load and the folder/file errors name."""
    if isinstance(source, SeriesInfo):
        return source, Path(source.records[0].path).parent if source.records else Path(".")
    scan = scan_study(source)
    where = (Path(source) if isinstance(source, (str, PathLike))
             else Path(source[0]) if len(source) == 1 else Path(source[0]).parent)
    if not scan.series:
        why = "; ".join(f"{p.name}: {r}" for p, r in scan.skipped[:3])
        raise DicomReadError(f"no DICOM image series found{' (' + why + ')' if why else ''}",
                             where)
    if len(scan.series) > 1:
        names = ", ".join(f"#{s.series_number} '{s.description}' ({s.n_slices} slices)"
                          for s in scan.series)
        raise SeriesError(f"holds {len(scan.series)} series ({names}); choose one", where)
    # a DICOM file whose header is broken may hold a slice of this series (its name need not
    # end in .dcm); a .dcm/.ima file that is no DICOM at all is suspicious too
    bad = list(scan.broken) + [(p, r) for p, r in scan.skipped if (p, r) not in scan.broken
                               and p.suffix.lower() in (".dcm", ".ima")]
    if bad:
        raise DicomReadError(f"{len(bad)} file(s) of the series are unreadable: "
                             f"{bad[0][0].name}: {bad[0][1]}", where)
    return scan.series[0], where


def _check_stack(records: list[SliceRecord], label: str, where: Path, min_slices: int) -> None:
    if len(records) < min_slices:
        raise SeriesError(f"{label} has {len(records)} slice(s); at least {min_slices} are needed "
                          "(the model reads the lesion slice and its two neighbours)", where)
    shapes = {(r.rows, r.columns) for r in records}
    if len(shapes) > 1:
        raise SeriesError(f"{label} mixes matrix sizes {sorted(shapes)}", where)


def _check_size(records: list[SliceRecord], label: str, where: Path) -> None:
    """Refuse what the headers claim before allocating it (a garbled Rows of 65535 would ask
    for tens of GiB)."""
    for r in records:
        if not (1 <= r.rows <= MAX_MATRIX and 1 <= r.columns <= MAX_MATRIX
                and r.rows * r.columns <= MAX_SLICE_PIXELS):
            raise DicomReadError(f"implausible matrix {r.rows}x{r.columns} (at most "
                                 f"{MAX_MATRIX} per side and {MAX_SLICE_PIXELS} pixels)", r.path)
    voxels = sum(r.rows * r.columns for r in records)
    if voxels > MAX_SERIES_VOXELS:
        raise SeriesError(f"{label} claims {voxels} voxels ({len(records)} slices); at most "
                          f"{MAX_SERIES_VOXELS} are loaded", where)


def _slice_geometry(info: SeriesInfo, label: str, where: Path
                    ) -> tuple[list[SliceRecord], np.ndarray, np.ndarray, np.ndarray]:
    """(records sorted along the normal, positions, row and column directions)."""
    records = info.records
    if all(r.position and r.orientation for r in records):
        ori = np.array([r.orientation for r in records])
        if np.abs(ori - ori[0]).max() > ORIENTATION_TOLERANCE:
            plane_names = sorted({plane_of(o[:3], o[3:]) for o in ori})
            raise SeriesError(f"{label} mixes slice orientations ({', '.join(plane_names)}): "
                              "it is not one stack; split it or choose another series", where)
        row_dir, col_dir = np.array(ori[0][:3]), np.array(ori[0][3:])
        normal = np.cross(row_dir, col_dir)
        coords = np.array([np.dot(np.asarray(r.position), normal) for r in records])
        order = np.argsort(coords, kind="stable")
        records = [records[i] for i in order]
        _check_spacing(records, coords[order], label, where)
        return records, np.array([r.position for r in records]), row_dir, col_dir
    if len({r.path for r in records}) == 1:
        # One object (a single image or a multi-frame file stripped of its functional groups):
        # its stored frame order is the only order there is, so keep it and say so.
        warnings.warn(f"{records[0].path}: no ImagePositionPatient/ImageOrientationPatient; "
                      "assuming sagittal frames in stored order", SpineFXWarning, stacklevel=3)
        row_dir, col_dir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
        step = info.slice_spacing or info.slice_thickness or 1.0
        positions = np.arange(len(records))[:, None] * step * np.cross(row_dir, col_dir)[None]
        return records, positions, row_dir, col_dir
    missing = next(r for r in records if not (r.position and r.orientation))
    raise SeriesError(f"{label}: {missing.path.name} has no ImagePositionPatient / "
                      "ImageOrientationPatient (missing, or values not plausible), so the slices "
                      "cannot be ordered in space", where)


def _check_spacing(records: list[SliceRecord], coords: np.ndarray, label: str,
                   where: Path) -> None:
    """Two slices at one position are an error; a gap in the stack is a warning."""
    diffs = np.diff(coords)
    if len(diffs) and diffs.min() < 1e-3:
        i = int(np.argmin(diffs))
        raise SeriesError(
            f"{label}: {records[i].path.name} and {records[i + 1].path.name} lie at the same "
            "position (several echoes, phases or repeats in one series?)", where)
    if len(diffs) > 1 and diffs.max() > 1.5 * np.median(diffs):
        gaps = np.flatnonzero(diffs > 1.5 * np.median(diffs))
        warnings.warn(f"{where}: {label} has a gap after slice(s) {gaps.tolist()} "
                      f"({diffs.max():.1f} mm vs {np.median(diffs):.1f} mm): missing slices?",
                      SpineFXWarning, stacklevel=4)


def _read_pixels(records: list[SliceRecord]) -> np.ndarray:
    """(slices, rows, cols) float32 with rescale applied; MONOCHROME1 inverted per series."""
    planes = np.empty((len(records), records[0].rows, records[0].columns), dtype=np.float32)
    decoded: dict[Path, tuple[pydicom.Dataset, np.ndarray]] = {}
    inverted = False
    for i, r in enumerate(records):
        try:
            if r.path not in decoded:
                ds, arr = _decode(r.path)
                n_frames = int(header_number(ds.get("NumberOfFrames"), 1) or 1)
                decoded = {r.path: (ds, _to_grey(ds, arr, r.path, n_frames))}  # keep one file
            ds, grey = decoded[r.path]
            inverted |= str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        except DicomReadError:
            raise
        except BaseException as exc:  # a lazily converted header value that is garbage
            if isinstance(exc, _FATAL):
                raise
            raise DicomReadError(f"header cannot be interpreted while decoding "
                                 f"({type(exc).__name__})", r.path) from exc
        index = r.frame or 0
        if not 0 <= index < len(grey):
            raise DicomReadError(f"frame {index} is missing ({len(grey)} decoded)", r.path)
        frame = grey[index]
        if frame.shape != (r.rows, r.columns):
            raise DicomReadError(f"pixel array {frame.shape} does not match Rows x Columns "
                                 f"{(r.rows, r.columns)}", r.path)
        with np.errstate(all="ignore"):
            values = frame * r.slope + r.intercept
        if not (np.isfinite(values).all() and np.abs(values).max(initial=0.0) <= _F32_MAX):
            raise DicomReadError(
                "non-finite pixel values after rescale (NaN/inf pixels, or a RescaleSlope/"
                "RescaleIntercept that is not finite or overflows float32)", r.path)
        planes[i] = values
    if inverted:  # MONOCHROME1: low values display bright; flip the whole series at once
        with np.errstate(all="ignore"):
            planes = planes.max() + planes.min() - planes
        if not np.isfinite(planes).all():
            raise DicomReadError("non-finite pixel values after MONOCHROME1 inversion (values "
                                 "near the float32 limit)", records[0].path)
    return planes
