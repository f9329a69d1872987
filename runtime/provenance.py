"""Where data and models come from, and the words every page, file and report uses for it.

One rule decides "is this synthetic?" (:func:`is_synthetic_record`, :func:`folder_provenance`)
and one caption says so; every stage (training, evaluation, export, the model card, the demo,
the CLI) asks here instead of re-deciding.

The rule: a record is synthetic when it carries ``"synthetic": true`` at its top level, or in
its ``training_data`` / ``provenance`` entry. A folder is synthetic when one of its records is:
``cohort.json`` (written by the phantom generator beside its manifest), ``config.json`` /
``metrics.json`` (a training run), ``model.json`` (an exported model).
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from .files import read_json

#: The one disclaimer on results (JSON, overlays, pages, DICOM captures).
DISCLAIMER = "Research and teaching use only; not for diagnosis."
#: The one line under every command's help and every report.
NOT_A_DEVICE = "Research and teaching software, not a medical device."
#: What a user sees next to anything a synthetic-trained model produced.
SYNTHETIC_CAPTION = "model trained on SYNTHETIC phantoms"
SYNTHETIC_DATA_CAPTION = "SYNTHETIC phantom data"

RECORD_NAMES = ("cohort.json", "config.json", "metrics.json", "model.json")


def is_synthetic_record(record: Any) -> bool:
    """True when a parsed JSON record says ``synthetic: true`` (top level, ``training_data``
    or ``provenance``)."""
    if not isinstance(record, Mapping):
        return False
    if record.get("synthetic") is True:
        return True
    return any(isinstance(record.get(key), Mapping) and record[key].get("synthetic") is True
               for key in ("training_data", "provenance"))


@dataclass(frozen=True)
class Provenance:
    """What data something came from: ``synthetic`` and a one-line description."""
    synthetic: bool
    description: str = ""

    @property
    def caption(self) -> str:
        """The label a user sees ("" for real data: only synthetic needs a warning)."""
        return SYNTHETIC_CAPTION if self.synthetic else ""

    def to_dict(self) -> dict:
        return {"synthetic": self.synthetic, "description": self.description}


def folder_provenance(folder: str | PathLike | None) -> Provenance:
    """The provenance of a cohort, run or model folder from the records it holds (an
    unreadable record is an error naming it; a folder with none counts as real data)."""
    if folder is None:
        return Provenance(False, "")
    folder = Path(folder)
    for name in RECORD_NAMES:
        record = read_json(folder / name, required=False) if (folder / name).is_file() else None
        if is_synthetic_record(record):
            desc = record.get("description", "") if isinstance(record, Mapping) else ""
            return Provenance(True, str(desc or SYNTHETIC_DATA_CAPTION))
    return Provenance(False, "")


def manifest_provenance(manifest: str | PathLike | None) -> Provenance:
    """A manifest's data is synthetic when the folder it lies in says so (cohort.json)."""
    return folder_provenance(Path(manifest).parent if manifest is not None else None)
