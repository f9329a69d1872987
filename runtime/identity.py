"""Who and which exam a series belongs to — compared, never shown.

Pairing a T1 of one patient with a T2 of another gives a confident, meaningless probability, so
the study service compares where each series comes from before it pairs them. The patient is
represented by a one-way digest of the patient-module values (PatientID, PatientName,
PatientBirthDate): two series match when their digests match. The digest is kept in memory only,
never written to a file, a log or a page; what users see is an anonymous study index ("study 1",
"study 2" in the order the folder lists them), never an identifier.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom

from .dicom import SeriesInfo

_PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate")


@dataclass(frozen=True)
class Origin:
    """Where a series comes from: ``patient`` (a digest, '' when unknown) and ``study_uid``."""
    patient: str = ""
    study_uid: str = ""

    def differs_from(self, other: "Origin") -> str:
        """'' when both may be the same exam, else what differs ('patients' / 'studies')."""
        if self.patient and other.patient and self.patient != other.patient:
            return "patients"
        if self.study_uid and other.study_uid and self.study_uid != other.study_uid:
            return "studies"
        return ""


def patient_digest(ds: pydicom.Dataset) -> str:
    """A one-way digest of the patient-module values ('' when the header has none)."""
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's value warnings would quote the values
        for tag in _PATIENT_TAGS:
            try:
                values.append(str(ds.get(tag, "") or ""))
            except Exception:  # a garbled value: it cannot identify anybody
                values.append("")
    if not any(values):
        return ""
    return hashlib.sha256("\x1f".join(values).encode("utf-8", "replace")).hexdigest()


def series_origin(series: SeriesInfo) -> Origin:
    """The origin of a scanned series, from the header of its first file."""
    if not series.records:
        return Origin(study_uid=series.study_uid)
    path: Path = series.records[0].path
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_PATIENT_TAGS))
    except Exception:  # the scan read this header already; a failure now means no identity
        return Origin(study_uid=series.study_uid)
    return Origin(patient=patient_digest(ds), study_uid=series.study_uid)
