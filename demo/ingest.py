"""Uploads -> a runtime :class:`Study` held in memory: the series found (no PHI); the pair
shown first decoded, the other series kept as bytes until the user picks one.

Files are staged (``uploads.Staging``: neutral names, zip safety, size caps), read, and the
staging folder is removed before the request ends: nothing a user uploads outlives the request
on disk. What stays is pixel data + geometry in a :class:`Study` (session memory), never
PatientName / PatientID / BirthDate.
"""
from __future__ import annotations

import logging
import re
import tempfile
import threading
import warnings
import zipfile
from os import PathLike
from pathlib import Path
from typing import Iterable, Sequence

from spinefx.runtime import (
    SeriesInfo,
    SpineFXError,
    SpineFXWarning,
    Volume,
    load_image_slices,
    load_series,
    scan_study,
)
from spinefx.runtime.images import IMAGE_SUFFIXES, MAX_PIXELS
from spinefx.runtime.study import (
    SeriesEntry,
    SeriesPair,
    Study,
    entry_from_series,
    entry_from_volume,
    series_label,
)

from .uploads import Staging, UploadError, display_name

log = logging.getLogger("spinefx.demo")

MAX_SERIES_VOXELS = 64 * 1024 * 1024  # one series as float32: 256 MiB
MAX_STUDY_VOXELS = 128 * 1024 * 1024  # every series loaded for one session
MAX_IMAGE_SLICES = 256

# warnings.catch_warnings swaps process-wide state: serialise the loads that record warnings
_WARN_LOCK = threading.Lock()


def _with_warnings(fn, *args, **kwargs):
    """Call fn; return (result, [SpineFXWarning messages]). Other warnings (pydicom's notes on
    odd header values can quote those values) are dropped, not shown or logged."""
    with _WARN_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, SpineFXWarning)]


def natural_key(name: str) -> list:
    """'slice_10' after 'slice_9': numbers in file names compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
def load_dicom_upload(paths: Sequence[str | PathLike], temp_root: str | PathLike | None = None,
                      title: str = "uploaded DICOM study") -> Study:
    """DICOM files and/or zips of a study -> :class:`Study` (the staged copies are removed)."""
    paths = [Path(p) for p in paths if p]
    if not paths:
        raise UploadError("no files uploaded")
    with Staging(temp_root) as staging:
        for p in paths:
            staging.add_file(p)
        staged = sorted(staging.folder.iterdir())
        if staged and all(p.suffix.lower() in IMAGE_SUFFIXES for p in staged):
            raise UploadError("these are plain images, not DICOM: put them under 'PNG/JPEG "
                              "slices' and say which are T1 and which T2")
        try:
            scan = scan_study(staging.folder)
            return _study_from_scan(scan, staging, title, temp_root)
        except SpineFXError as exc:
            raise type(exc)(staging.humanise(str(exc))) from None


def _status(s: SeriesInfo, total: int) -> str:
    """Why a series cannot be offered, or 'usable' (headers only: nothing decoded)."""
    if s.modality not in ("MR", ""):
        return f"not MR ({s.modality})"
    if "sagittal" not in s.plane and s.plane != "unknown":
        return f"not sagittal ({s.plane})"
    if s.rows * s.columns > MAX_PIXELS:
        return f"image too large ({s.rows}x{s.columns})"
    if s.n_slices * s.rows * s.columns > MAX_SERIES_VOXELS:
        return f"too many voxels ({s.n_slices} x {s.rows}x{s.columns})"
    if total + s.n_slices * s.rows * s.columns > MAX_STUDY_VOXELS:
        return "not loaded: the study is too large; upload fewer series"
    return "usable"


class HeldSeries:
    """A series' files kept as bytes in session memory, decoded only if the user picks it.

    The staged copies are deleted when the upload request ends (nothing uploaded outlives it on
    disk); choosing this series later re-stages the bytes in a private folder for the one
    decode and removes them again. After the decode the bytes stay in memory as ``sources``
    (with the slice order and study UID the scrubbed volume no longer has): the DICOM results
    (SR, SEG, capture) copy their patient and study modules from these headers."""

    def __init__(self, series: SeriesInfo, key: str, label: str, notes: list[str],
                 names: dict[str, str], temp_root: str | PathLike | None):
        self.weighting, self.key, self.label = series.weighting, key, label
        self.files = {p.name: p.read_bytes() for p in series.files}
        self.notes, self.names, self.temp_root = notes, names, temp_root
        self.sources: dict[str, bytes] = {}
        self.source_order: tuple[str, ...] = ()    # neutral file names (#frame), slice order
        self.source_metadata: dict = {}

    def source_volume(self, vol: Volume, folder: Path) -> Volume:
        """``vol`` (this series, decoded) with its source files written into ``folder`` and
        its slice sources and metadata restored, for the DICOM outputs (``sources`` must be
        set: the series was decoded)."""
        for name, data in self.sources.items():
            (folder / name).write_bytes(data)
        return vol.with_data(vol.data, slice_sources=tuple(f"{folder}/{s}"
                                                           for s in self.source_order),
                             metadata={**self.source_metadata, **vol.metadata})

    def __call__(self) -> Volume:
        with tempfile.TemporaryDirectory(prefix="upload-", dir=self.temp_root) as tmp:
            for name, data in self.files.items():
                (Path(tmp) / name).write_bytes(data)
            try:
                vol, warned = _with_warnings(load_series, sorted(Path(tmp).iterdir()),
                                             weighting=self.weighting)
            except SpineFXError as exc:
                raise type(exc)(self._humanise(str(exc), tmp)) from None
        self.source_order = tuple(s.replace(f"{tmp}/", "") for s in vol.slice_sources)
        self.source_metadata = dict(vol.metadata)
        self.sources, self.files = self.files, {}   # decoded once: kept for DICOM outputs
        self.notes += [f"series {self.label}: {self._humanise(w, tmp)}" for w in warned]
        return _scrub(vol, self.key)

    def _humanise(self, text: str, tmp: str) -> str:
        for neutral, original in self.names.items():
            text = text.replace(f"{tmp}/{neutral}", original)
        return text.replace(tmp, "upload")


def _study_from_scan(scan, staging: Staging, title: str,
                     temp_root: str | PathLike | None = None) -> Study:
    if not scan.series:
        reasons = "; ".join(f"{staging.humanise(str(p))}: {r}" for p, r in scan.skipped[:4])
        more = f" (and {len(scan.skipped) - 4} more)" if len(scan.skipped) > 4 else ""
        raise UploadError(f"no DICOM image series found among {len(scan.skipped)} file(s): "
                          f"{reasons}{more}")
    notes: list[str] = []
    if scan.skipped:
        notes.append(f"{len(scan.skipped)} file(s) skipped, e.g. "
                     f"{staging.humanise(str(scan.skipped[0][0]))}: {scan.skipped[0][1]}")
    if not any(s.modality in ("MR", "") for s in scan.series):
        modalities = sorted({s.modality or "unknown" for s in scan.series})
        raise UploadError(f"the upload holds {', '.join(modalities)} images, not MR: this model "
                          "reads sagittal T1- and T2-weighted spine MRI")
    entries: list[SeriesEntry] = []
    total = 0
    for s in scan.series:
        status = _status(s, total)
        key = f"s{len(entries) + 1}"
        held = None
        if status == "usable":
            total += s.n_slices * s.rows * s.columns
            held = HeldSeries(s, key, series_label(s), notes, staging.names, temp_root)
        entries.append(entry_from_series(s, key, status, loader=held))
    study = Study(entries, title=title, kind="dicom", notes=notes)
    for entry in entries:  # warnings of later decodes land in the study's notes
        if isinstance(entry.loader, HeldSeries):
            entry.loader.notes = study.notes
    if not study.usable:
        raise UploadError("no usable sagittal MR series: " + "; ".join(
            f"{r['description'] or 'series'}: {r['status']}" for r in study.rows))
    _decode_guessed_pair(study, staging)
    return study


def _decode_guessed_pair(study: Study, staging: Staging) -> None:
    """Decode the pair the page will show first, while the staged files exist; a series that
    fails to decode is marked unreadable and the guess is made again without it."""
    failures: list[str] = []
    while True:
        try:
            pair = study.choose_pair(policy="guess")
        except SpineFXError as exc:   # say also what is wrong with the series that are left
            failures += [f for e in study.usable if (f := _decode_failure(study, e.key))]
            raise UploadError("; ".join([str(exc), *failures])) from None
        try:
            for key in (pair.t1, pair.t2):
                study.volume(key)
        except SpineFXError as exc:
            entry = study.entries[key]
            message = str(exc)
            entry.usable, entry.loader = False, None
            entry.row["status"] = f"unreadable: {message}"
            study.notes.append(f"series {entry.label}: {message}")
            failures.append(f"{entry.row.get('description') or 'series'}: unreadable: {message}")
            continue
        study.default_pair = pair
        return


def _decode_failure(study: Study, key: str) -> str:
    """'' when the series decodes, else why not (for the message of a failed upload)."""
    try:
        study.volume(key)
        return ""
    except SpineFXError as exc:
        return f"{study.entries[key].row.get('description') or 'series'}: unreadable: {exc}"


def _scrub(vol: Volume, key: str) -> Volume:
    """Keep pixels + geometry; drop paths (the staged files are gone) and identifiers."""
    keep = {k: vol.metadata.get(k) for k in ("modality", "series_number", "repetition_time",
                                            "echo_time")}
    return vol.with_data(vol.data, source=key, slice_sources=(), metadata=keep)


# ---------------------------------------------------------------------------------------------
# Plain images
# ---------------------------------------------------------------------------------------------
def load_image_upload(t1_paths: Sequence[str | PathLike], t2_paths: Sequence[str | PathLike],
                      pixel_spacing_mm: float | None = None,
                      title: str = "uploaded image slices") -> Study:
    """PNG/JPEG/TIFF slices, T1 and T2 given separately, ordered by the numbers in their names."""
    t1_files = [Path(p) for p in t1_paths or [] if p]
    t2_files = [Path(p) for p in t2_paths or [] if p]
    if not t1_files and not t2_files:
        raise UploadError("no image slices uploaded")
    if not t1_files or not t2_files:
        have, need = ("T1", "T2") if t1_files else ("T2", "T1")
        raise UploadError(f"only {have} slices given: the model needs {have} and {need} slices "
                          "of the same region")
    for paths in (t1_files, t2_files):
        if len(paths) > MAX_IMAGE_SLICES:
            raise UploadError(f"{len(paths)} slices in one sequence (at most {MAX_IMAGE_SLICES})")
        for p in paths:
            if zipfile.is_zipfile(p) or p.suffix.lower() in (".dcm", ".ima"):
                raise UploadError(f"{display_name(p.name)}: DICOM or zip files go in the DICOM "
                                  "box, not among image slices")
    spacing = None
    if pixel_spacing_mm:
        if not 0.05 <= float(pixel_spacing_mm) <= 10:
            raise UploadError(f"pixel spacing {pixel_spacing_mm} mm is implausible for MRI "
                              "(0.05-10 mm)")
        spacing = (float(pixel_spacing_mm), float(pixel_spacing_mm))
    vols, notes = {}, []
    for weighting, paths in (("T1", t1_files), ("T2", t2_files)):
        ordered = sorted(paths, key=lambda p: natural_key(p.name))
        try:
            vol, warned = _with_warnings(load_image_slices, ordered, weighting, spacing)
        except SpineFXError as exc:
            raise type(exc)(_names_only(str(exc), paths)) from None
        vols[weighting] = vol.with_data(vol.data, source=weighting, slice_sources=())
        notes += [_names_only(w, paths) for w in warned]
    t1, t2 = vols["T1"], vols["T2"]
    if t1.n_slices != t2.n_slices:
        notes.append(f"T1 has {t1.n_slices} slices and T2 {t2.n_slices}: slices are paired by "
                     "position in the sorted lists")
    if t1.data.shape[1:] != t2.data.shape[1:]:
        notes.append("T1 and T2 slices differ in size: T2 is resampled onto the T1 grid")
    if spacing is None:
        notes.append("plain images carry no pixel spacing: 1 mm is assumed, so a box size in "
                     "mm is approximate (enter the spacing if you know it)")
    notes.append("plain images carry no geometry: T1 and T2 are paired slice by slice, "
                 "without registration")
    rows = [{"series_number": None, "description": f"{w} image slices", "modality": "",
             "plane": "assumed sagittal", "weighting": w, "slices": v.n_slices,
             "matrix": f"{v.data.shape[1]}x{v.data.shape[2]}",
             "pixel_spacing_mm": list(v.pixel_spacing) if spacing else None,
             "slice_spacing_mm": None, "tr_ms": None, "te_ms": None, "ti_ms": None,
             "status": "usable"} for w, v in vols.items()]
    entries = [entry_from_volume(w, f"{w} image slices ({v.n_slices})", v, row)
               for (w, v), row in zip(vols.items(), rows)]
    study = Study(entries, title=title, kind="images", notes=notes)
    study.default_pair = SeriesPair("T1", "T2")
    return study


def _names_only(text: str, paths: Iterable[Path]) -> str:
    """Replace gradio's cache paths by the uploaded base names in a message."""
    for p in sorted(paths, key=lambda p: -len(str(p))):
        text = text.replace(str(p.parent) + "/", "").replace(str(p), p.name)
    return text
