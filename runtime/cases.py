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

    @property
    def target(self) -> int:
        """1 for malignant, 0 for benign (the positive class is malignancy)."""
        if self.label not in LABELS:
            raise ManifestError(f"case {self.case_id} has no label")
        return LABELS.index(self.label)


def _number(row: dict, key: str, where: str, cast=float):
    try:
        return cast(row[key])
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: column '{key}' must be a number, got {row[key]!r}") from None


def read_manifest(path: str | PathLike) -> list[Case]:
    """Parse and validate a manifest; every problem names the file, the row and the column."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise ManifestError("no such manifest file", path) from None
    except (UnicodeDecodeError, csv.Error) as exc:
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
            raise ManifestError(f"{where}: case_id {case_id!r} is empty or repeated")
        seen.add(case_id)
        label = (row["label"] or "").strip().lower() or None
        if label is not None and label not in LABELS:
            raise ManifestError(f"{where}: label must be benign or malignant, got {row['label']!r}")
        box = center = None
        if has_box and all((row.get(c) or "").strip() for c in BOX_COLUMNS):
            box = tuple(_number(row, c, where) for c in BOX_COLUMNS)
        elif has_center and (row.get("center_x") or "").strip():
            center = (_number(row, "center_x", where), _number(row, "center_y", where))
        else:
            raise ManifestError(f"{where}: case {case_id} has neither a box nor a centre")
        features = {k: _number(row, k, where, int) for k in FEATURE_KEYS
                    if k in columns and (row.get(k) or "").strip() != ""}
        bad = [k for k, v in features.items() if v not in (0, 1)]
        if bad:
            raise ManifestError(f"{where}: feature column(s) {bad} must be 0 or 1")
        cases.append(Case(
            case_id=case_id, label=label, t1=root / row["t1"], t2=root / row["t2"],
            slice=_number(row, "slice", where, int), box=box, center=center,
            size_mm=_number(row, "size_mm", where) if (row.get("size_mm") or "").strip() else None,
            level=(row.get("level") or "").strip(),
            patient_id=(row.get("patient_id") or "").strip() or case_id,
            mask=root / row["mask"] if (row.get("mask") or "").strip() else None,
            features=features))
    return cases


def load_volume(path: str | PathLike, weighting: str | None = None) -> Volume:
    """A series from a DICOM folder (one series), a DICOM file, a NIfTI file, a numpy volume
    (``.npy``/``.npz``, slices along the shortest axis, 1 mm assumed) or an image."""
    path = Path(path)
    if not path.exists():
        raise ImageError("no such file or folder", path)
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
