"""Teaching cases an instructor adds from an uploaded study: a library folder in the teaching
data folder (``<data>/library``).

Each case is stored as what the model and the viewer need and nothing more: the T1 pixels and
the T2 pixels resampled onto the T1 grid (``t1.npz``, ``t2.npz``; no DICOM header, so no
PatientName / PatientID / dates; the grid's spacing is not kept, so 1 mm is assumed), plus a
row of the project's manifest (``manifest.csv``: truth, slice, box, level, the 15 feature
columns) and the instructor's words (``cases.json``: real or synthetic as the instructor
states, notes). Burned-in text in the pixels is not removed: the instructor confirms the
study may be used for teaching.
"""
from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from spinefx.runtime import FEATURES, Case, SpineFXError, Volume, read_manifest
from spinefx.runtime.cases import BOX_COLUMNS, LABELS
from spinefx.runtime.files import atomic_write_bytes, atomic_write_csv, atomic_write_json
from spinefx.runtime.preprocess import Box

PROVENANCES = ("real", "synthetic")
MANIFEST_COLUMNS = ("case_id", "label", "t1", "t2", "slice", *BOX_COLUMNS, "level",
                    "patient_id", *(f.key for f in FEATURES))
_WRITE_LOCK = threading.Lock()   # one writer at a time per process (ids are counted)


@dataclass(frozen=True)
class CaseNote:
    provenance: str          # 'real' | 'synthetic', as the instructor states
    notes: str

    @property
    def caption(self) -> str:
        what = "real MRI" if self.provenance == "real" else "SYNTHETIC"
        return f"Instructor-provided case · {what}, as the instructor states"


def _npz_bytes(data: np.ndarray) -> bytes:
    """``image`` as a compressed .npz with a fixed timestamp: the same pixels, the same bytes."""
    npy = io.BytesIO()
    np.save(npy, np.asarray(data, dtype=np.float32), allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("image.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, npy.getvalue())
    return out.getvalue()


class InstructorLibrary:
    """The cases in ``folder`` (nothing is written until a case is added)."""

    def __init__(self, folder: str | PathLike):
        self.folder = Path(folder)
        self.manifest = self.folder / "manifest.csv"
        self.notes_file = self.folder / "cases.json"

    def cases(self) -> list[Case]:
        if not self.manifest.is_file():
            return []
        return read_manifest(self.manifest)

    def notes(self) -> dict[str, CaseNote]:
        if not self.notes_file.is_file():
            return {}
        raw = json.loads(self.notes_file.read_text())
        return {k: CaseNote(v["provenance"], v.get("notes", "")) for k, v in raw.items()}

    def add(self, t1: Volume, t2: Volume, label: str | None, k: int, box: Box | None,
            features: list[str], notes: str, provenance: str | None, level: str = "") -> Case:
        """Store one case (T2 already on the T1 grid); refuses what would make a bad case."""
        if label not in LABELS:
            raise SpineFXError("say whether the case is benign or malignant (the truth)")
        if provenance not in PROVENANCES:
            raise SpineFXError("say whether the study is real (de-identified) or synthetic")
        if t1.data.shape != t2.data.shape:
            raise SpineFXError("T2 must be on the T1 grid (align the pair first)")
        if not 0 <= k < t1.n_slices:
            raise SpineFXError(f"the lesion slice must be 0..{t1.n_slices - 1}, got {k}")
        rows, cols = t1.data.shape[1:]
        if box is None or not (0 <= box[0] < box[2] <= cols and 0 <= box[1] < box[3] <= rows):
            raise SpineFXError(f"give the lesion's box x0,y0,x1,y1 inside the {cols}x{rows} "
                               "T1 slice")
        unknown = set(features) - {f.key for f in FEATURES}
        if unknown:
            raise SpineFXError(f"unknown feature(s): {', '.join(sorted(unknown))}")
        level = re.sub(r"[^A-Za-z0-9]", "", level or "")[:4].upper()
        with _WRITE_LOCK:
            existing = self.cases()
            case_id = f"instructor_{len(existing) + 1:03d}"
            while (self.folder / case_id).exists():   # a half-written leftover: skip its id
                case_id += "x"
            folder = self.folder / case_id
            folder.mkdir(parents=True, mode=0o700)
            atomic_write_bytes(folder / "t1.npz", _npz_bytes(t1.data))
            atomic_write_bytes(folder / "t2.npz", _npz_bytes(t2.data))
            row = {"case_id": case_id, "label": label, "t1": f"{case_id}/t1.npz",
                   "t2": f"{case_id}/t2.npz", "slice": int(k), "level": level,
                   "patient_id": case_id, **dict(zip(BOX_COLUMNS, (int(v) for v in box))),
                   **{f.key: int(f.key in features) for f in FEATURES}}
            old_rows = [_row(c) for c in existing]
            all_notes = {cid: {"provenance": n.provenance, "notes": n.notes}
                         for cid, n in self.notes().items()}
            all_notes[case_id] = {"provenance": provenance, "notes": (notes or "").strip()[:2000],
                                  "added": time.strftime("%Y-%m-%d")}
            # the notes first: a case listed in the manifest always has its provenance
            atomic_write_json(self.notes_file, all_notes)
            atomic_write_csv(self.manifest, MANIFEST_COLUMNS, old_rows + [row])
        return next(c for c in self.cases() if c.case_id == case_id)


def _row(case: Case) -> dict:
    assert case.box is not None, "instructor cases always have a box"
    return {"case_id": case.case_id, "label": case.label, "t1": f"{case.case_id}/t1.npz",
            "t2": f"{case.case_id}/t2.npz", "slice": case.slice, "level": case.level,
            "patient_id": case.patient_id, **dict(zip(BOX_COLUMNS, (int(v) for v in case.box))),
            **{f.key: int(case.features.get(f.key, 0)) for f in FEATURES}}
