"""The data contract every dataset follows: a *case* and a *manifest* of cases.

A case = one patient, one labelled vertebral segment. A manifest is a CSV with one row per
case; series paths are relative to the manifest's folder. Required columns:
``case_id, label, t1, t2, slice`` and either ``box_x0, box_y0, box_x1, box_y1`` (T1 pixels) or
``center_x, center_y`` (+ optional ``size_mm``). Optional: ``level``, ``patient_id`` (defaults
to ``case_id``; cross-validation groups by it), ``mask``, and one 0/1 column per imaging
feature (see :mod:`spinefx.runtime.features`).
"""
from __future__ import annotations

import csv
import io
import math
import os
import stat
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from .dicom_series import load_series
from .errors import ImageError, ManifestError
from .features import FEATURE_KEYS
from .images import is_array, is_image, is_nifti, load_array_volume, load_image_slices, load_nifti
from .matching import align_pair
from .preprocess import Box, ModelInput, PreprocessConfig, build_six_channel
from .volume import Volume

LABELS = ("benign", "malignant")
REQUIRED_COLUMNS = ("case_id", "label", "t1", "t2", "slice")
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")

#: A manifest larger than this is refused before it is read (a CSV of cases is kilobytes).
MAX_MANIFEST_BYTES = 64 * 2**20
#: A box side (T1 pixels) no MRI matrix reaches; coordinates stay within +-MAX_COORDINATE.
MAX_BOX_SIDE = 4096
MAX_COORDINATE = 4 * MAX_BOX_SIDE
#: The centre + size ROI: a box side in mm within this range (a vertebral body is ~20-60 mm).
SIZE_MM_RANGE = (5.0, 300.0)
#: The largest lesion slice index a manifest may give (series hold at most a few hundred).
MAX_SLICE = 100_000


@dataclass
class Case:
    case_id: str
    label: str | None            # 'benign' | 'malignant' | None (unlabelled, e.g. for predict)
    t1: Path
    t2: Path
    slice: int
    box: Box | None = None
    center: tuple[float, float] | None = None
    size_mm: float | None = None
    level: str = ""
    patient_id: str = ""
    mask: Path | None = None
    features: dict[str, int] = field(default_factory=dict)
    line: int | None = None      # the manifest line it came from (error messages name it)

    @property
    def target(self) -> int:
        """1 for malignant, 0 for benign (the positive class is malignancy)."""
        if self.label not in LABELS:
            raise ManifestError(f"case {self.case_id} has no label")
        return LABELS.index(self.label)


def _number(row: dict, key: str, where: str, cast=float):
    """A finite number (``cast`` = int: a whole number) from a manifest cell, else an error
    naming the line and column."""
    text = (row.get(key) or "").strip()
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or (cast is int and not value.is_integer()):
        kind = "a whole number" if cast is int else "a finite number"
        raise ManifestError(f"{where}: column '{key}' must be {kind}, got {str(row[key])[:40]!r}")
    return int(value) if cast is int else value


def _check_box(box: tuple[float, ...], where: str) -> None:
    x0, y0, x1, y1 = box
    if not all(abs(v) <= MAX_COORDINATE for v in box):
        raise ManifestError(f"{where}: box {box} has coordinates beyond +-{MAX_COORDINATE} px")
    if not (x1 > x0 and y1 > y0):
        raise ManifestError(f"{where}: box {box} is empty: need box_x0 < box_x1 and "
                            "box_y0 < box_y1")
    if max(x1 - x0, y1 - y0) > MAX_BOX_SIDE:
        raise ManifestError(f"{where}: box {box} is larger than {MAX_BOX_SIDE} px on a side")


def _read_text(path: Path) -> str:
    """The manifest's text: a regular file of at most :data:`MAX_MANIFEST_BYTES`, read in
    bounded form (never a folder, a device or a FIFO)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ManifestError("no such manifest file", path) from None
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest ({exc.strerror or exc})", path) from None
    if stat.S_ISDIR(info.st_mode):
        raise ManifestError("is a folder, not a manifest CSV file", path)
    if not stat.S_ISREG(info.st_mode):
        raise ManifestError("is not a regular file (a device, FIFO or socket?)", path)
    if info.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {info.st_size / 2**20:.0f} MiB, more than the "
                            f"{MAX_MANIFEST_BYTES // 2**20} MiB a manifest may be", path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest ({exc.strerror or exc})", path) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is more than {MAX_MANIFEST_BYTES // 2**20} MiB", path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not a readable CSV file ({exc})", path) from None


def _is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` names something under ``root`` as written (absolute paths and ``..``
    that climb out are outside; a link the archive itself holds is followed as its owner
    meant)."""
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.abspath(path))
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep)


def _series_path(row: dict, key: str, root: Path, where: str, allow_outside: bool,
                 required: bool = True) -> Path | None:
    """A series/mask path of a manifest row: relative to the manifest's folder, inside it
    unless ``allow_outside``, and (when it exists) a regular file or a folder."""
    text = (row.get(key) or "").strip()
    if not text:
        if required:
            raise ManifestError(f"{where}: column '{key}' is empty")
        return None
    if "\0" in text:
        raise ManifestError(f"{where}: column '{key}' holds a NUL character")
    path = root / text
    if not allow_outside and not _is_inside(path, root):
        raise ManifestError(f"{where}: column '{key}' = {text[:80]!r} points outside the "
                            f"manifest's folder {root}; series must lie inside it (allow it "
                            "with allow_outside=True / --allow-outside)")
    check_regular(path, f"{where}: column '{key}' = {text[:80]!r}")
    return path


def check_regular(path: Path, where: str) -> None:
    """Refuse a path that exists but is neither a regular file nor a folder (a device such as
    /dev/zero, a FIFO, a socket): reading one never ends or fills memory."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return  # absent (or unreadable): the loader says so when the series is used
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ManifestError(f"{where}: not a regular file or folder (a device, FIFO or socket?)")


def read_manifest(path: str | PathLike, allow_outside: bool = False) -> list[Case]:
    """Parse and validate a manifest; every problem names the file, the row and the column.

    Series (and mask) paths must lie inside the manifest's folder unless ``allow_outside``;
    the manifest must be a regular file of at most :data:`MAX_MANIFEST_BYTES`; numbers must be
    finite and boxes, sizes and slices plausible."""
    path = Path(path)
    text = _read_text(path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as exc:
        raise ManifestError(f"not a readable CSV file ({exc})", path) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    has_box = all(c in columns for c in BOX_COLUMNS)
    has_center = "center_x" in columns and "center_y" in columns
    if missing or not (has_box or has_center):
        what = missing + ([] if has_box or has_center else ["box_x0..box_y1 or center_x/center_y"])
        raise ManifestError(f"line 1 (header): missing column(s): {', '.join(what)}", path)
    if not rows:
        raise ManifestError("the manifest has no cases", path)
    root = path.parent
    cases, seen = [], set()
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path} line {n}"
        case_id = (row["case_id"] or "").strip()
        if not case_id or case_id in seen:
            raise ManifestError(f"{where}: case_id {case_id[:80]!r} is empty or repeated")
        seen.add(case_id)
        label = (row["label"] or "").strip().lower() or None
        if label is not None and label not in LABELS:
            raise ManifestError(f"{where}: label must be benign or malignant, "
                                f"got {str(row['label'])[:40]!r}")
        box = center = None
        if has_box and all((row.get(c) or "").strip() for c in BOX_COLUMNS):
            box = tuple(_number(row, c, where) for c in BOX_COLUMNS)
            _check_box(box, where)
        elif has_center and (row.get("center_x") or "").strip():
            center = (_number(row, "center_x", where), _number(row, "center_y", where))
            if not all(abs(v) <= MAX_COORDINATE for v in center):
                raise ManifestError(f"{where}: centre {center} lies beyond +-{MAX_COORDINATE} px")
        else:
            raise ManifestError(f"{where}: case {case_id} has neither a box nor a centre")
        size_mm = None
        if (row.get("size_mm") or "").strip():
            size_mm = _number(row, "size_mm", where)
            lo, hi = SIZE_MM_RANGE
            if not lo <= size_mm <= hi:
                raise ManifestError(f"{where}: column 'size_mm' must be within {lo:g}..{hi:g} mm, "
                                    f"got {size_mm:g}")
        k = _number(row, "slice", where, int)
        if not 0 <= k <= MAX_SLICE:
            raise ManifestError(f"{where}: column 'slice' must be a slice index >= 0, got {k}")
        features = {k: _number(row, k, where, int) for k in FEATURE_KEYS
                    if k in columns and (row.get(k) or "").strip() != ""}
        bad = [k for k, v in features.items() if v not in (0, 1)]
        if bad:
            raise ManifestError(f"{where}: feature column(s) {bad} must be 0 or 1")
        t1 = _series_path(row, "t1", root, where, allow_outside)
        t2 = _series_path(row, "t2", root, where, allow_outside)
        assert t1 is not None and t2 is not None
        cases.append(Case(
            case_id=case_id, label=label, t1=t1, t2=t2,
            slice=k, box=box, center=center, size_mm=size_mm,
            level=(row.get("level") or "").strip(),
            patient_id=(row.get("patient_id") or "").strip() or case_id,
            mask=_series_path(row, "mask", root, where, allow_outside, required=False),
            features=features, line=n))
    return cases


def load_volume(path: str | PathLike, weighting: str | None = None) -> Volume:
    """A series from a DICOM folder (one series), a DICOM file, a NIfTI file, a numpy volume
    (``.npy``/``.npz``, slices along the shortest axis, 1 mm assumed) or an image."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError("no such file or folder", path) from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot open ({getattr(exc, 'strerror', None) or exc})", path) from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ImageError("not a regular file or folder (a device, FIFO or socket?)", path)
    if is_nifti(path):
        return load_nifti(path, weighting or "unknown")
    if path.is_file() and is_array(path):
        return load_array_volume(path, weighting or "unknown")
    if path.is_file() and is_image(path):
        return load_image_slices([path], weighting or "unknown")
    return load_series(path, weighting=weighting)


def prepare_case(case: Case, config: PreprocessConfig = PreprocessConfig()) -> ModelInput:
    """Load a case's T1 and T2 and build its model input (what training and `predict` use)."""
    t1 = load_volume(case.t1, "T1")
    t2 = load_volume(case.t2, "T2")
    return build_six_channel(align_pair(t1, t2), case.slice, box=case.box, center=case.center,
                             size_mm=case.size_mm, config=config)
