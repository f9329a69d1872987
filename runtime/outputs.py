"""Writing results without losing anything: atomic files, and a DICOM Secondary Capture of the
overlay that PACS files with the source study.

Atomic = written to a temporary file in the same folder, then renamed over the target, so a
crash never leaves half a file and a reader never sees one.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import io
import logging
import warnings
from os import PathLike
from pathlib import Path
from typing import Iterator

import numpy as np
import pydicom
import pydicom.config
import pydicom.valuerep
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from .errors import SpineFXError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_png, atomic_write_text
from .provenance import DISCLAIMER

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "atomic_write_png",
           "check_output_folder", "copy_patient_study", "quiet_dicom", "read_source_header",
           "secondary_capture", "write_secondary_capture"]

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
# Patient/study attributes copied from the source so PACS files the capture with its study.
# They go into the DICOM file only: never into logs, JSON or the screen. SpecificCharacterSet
# comes first: it says how the names are encoded (a UTF-8 "ISO_IR 192" name stays UTF-8).
# No FrameOfReferenceUID: the overlay's pixels are not in the source's patient coordinates
# (and the SC IOD has no Frame of Reference module).
_COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
           "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
           "ReferringPhysicianName", "StudyDescription")


# Type 2 attributes (may be empty): an invalid value in the source (a birth date "19XX0101")
# is written empty, so the capture stays valid DICOM. UIDs and PatientID are copied as they
# are: PACS matches the capture to its study by them.
_EMPTY_IF_INVALID = ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


# BodyPartExamined terms (PS3.16 CID 4031) of unpaired parts: the capture has no Laterality
_UNPAIRED = frozenset({"SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "COCCYX", "SACRUM",
                       "WHOLESPINE", "CTSPINE", "TLSPINE", "LSSPINE", "NECK", "CHEST", "ABDOMEN",
                       "PELVIS", "WHOLEBODY"})


def _valid_value(vr: str, value) -> bool:
    """Whether pydicom accepts ``value`` for ``vr`` (the reason, which quotes the value, is
    never shown)."""
    try:
        pydicom.valuerep.validate_value(vr, value, pydicom.config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _valid(element: pydicom.DataElement) -> bool:
    values = element.value if element.VM > 1 else [element.value]
    return all(_valid_value(element.VR, value) for value in values)


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


#: Loggers that may quote a source value while a DICOM object is built from it.
_QUIET_LOGGERS = ("pydicom", "highdicom")


@contextlib.contextmanager
def quiet_dicom() -> Iterator[None]:
    """No value of the source reaches a log, a warning or the screen while it is copied.

    pydicom reports an invalid value (say PatientBirthDate '19XX0101') with the value in the
    message, as a warning *and* on the "pydicom" logger; highdicom warns about names it
    finds odd, quoting them. Here values are copied as they are, unvalidated, and anything
    pydicom or highdicom says meanwhile is dropped.
    """
    # a logger's filter does not see its children's records ("highdicom.base" logs the
    # patient's name): every logger of the family gets the filter
    family = [name for name in list(logging.Logger.manager.loggerDict)
              if name.split(".")[0] in _QUIET_LOGGERS]
    loggers = [logging.getLogger(name) for name in dict.fromkeys([*_QUIET_LOGGERS, *family])]
    drop = _DropAll()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings(), pydicom.config.disable_value_validation():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def read_source_header(source_file: str | PathLike, what: str = "the capture") -> Dataset:
    """The source image's header (no pixels); an error naming the file, never a value."""
    try:
        return pydicom.dcmread(source_file, stop_before_pixels=True)
    except Exception as exc:
        # the exception's text is pydicom's, about the file's structure: never a value
        raise SpineFXError(f"cannot read the source DICOM for {what} "
                           f"({type(exc).__name__})", Path(source_file)) from exc


# Type 2 attributes of the Patient and General Study modules: present in every output, empty
# when the source lacks them (absent would be invalid DICOM; empty means "unknown")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def copy_patient_study(src: Dataset, into: Dataset) -> Dataset:
    """Copy the patient/study attributes (:data:`_COPIED`) of ``src`` into ``into``, as read
    (names stay in their SpecificCharacterSet); an invalid Type 2 value is written empty,
    a missing Type 2 attribute is added empty. Call inside :func:`quiet_dicom`."""
    for keyword in _COPIED:
        element = src.data_element(keyword) if keyword in src else None
        if element is not None:
            element = copy.deepcopy(element)  # as read: no re-validation, no message
            if keyword in _EMPTY_IF_INVALID and not _valid(element):
                element.value = ""  # Type 2: empty is valid DICOM; the source keeps its value
            into.add(element)
        elif keyword in _TYPE2:
            setattr(into, keyword, "")
    return into


OUTPUT_NAMES = ("result.json", "overlay.png", "overlay_sc.dcm", "predictions.csv")


def check_output_folder(out_dir: str | PathLike, inputs: list[str | PathLike]) -> Path:
    """Refuse an output folder inside an input *folder* (results written into a study would be
    read as part of it next time), and any output file that would replace an input file."""
    out = Path(out_dir).resolve()
    for item in inputs:
        src = Path(item).resolve()
        if src.is_dir() and (out == src or src in out.parents):
            raise SpineFXError(f"output folder {out_dir} lies inside the input {item}; "
                               "choose a folder outside the study so nothing of it is touched")
        if src.is_file() and (out == src or (out == src.parent and src.name in OUTPUT_NAMES)):
            raise SpineFXError(f"writing to {out_dir} would replace the input {item}; "
                               "choose another output folder")
    return Path(out_dir)


def secondary_capture(overlay: Image.Image, source_file: str | PathLike, summary: dict,
                      series_description: str = "spinefx overlay (research, not for diagnosis)",
                      # a short LO value in the header; the full DISCLAIMER is in ImageComments
                      *, series_uid: str | None = None, sop_uid: str | None = None,
                      created: _dt.datetime | None = None) -> Dataset:
    """An RGB Secondary Capture of ``overlay`` in the source image's study, referencing it.

    ``series_uid`` / ``sop_uid``: the UIDs to give it (random when None; the node passes
    deterministic ones, :mod:`spinefx.runtime.dicom_uids`); ``created``: its Content Date and
    Time (now when None; the same time gives the same bytes)."""
    source_file = Path(source_file)
    with quiet_dicom():
        return _secondary_capture(overlay, source_file, summary, series_description,
                                  series_uid or generate_uid(), sop_uid or generate_uid(),
                                  created or _dt.datetime.now())


def _secondary_capture(overlay: Image.Image, source_file: Path, summary: dict,
                       series_description: str, series_uid: str, sop_uid: str,
                       now: _dt.datetime) -> Dataset:
    src = read_source_header(source_file)
    rgb = np.asarray(overlay.convert("RGB"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    copy_patient_study(src, ds)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 9900
    ds.InstanceNumber = 1
    ds.Modality = "OT"
    # Laterality (Type 2C) is for paired body parts: absent for the spine, empty (= unknown)
    # where the source names some other part or none we know
    body_part = str(src.get("BodyPartExamined", "") or "SPINE").strip().upper()
    ds.BodyPartExamined = body_part if _valid_value("CS", body_part) else "SPINE"
    if ds.BodyPartExamined not in _UNPAIRED:
        ds.Laterality = ""
    ds.PatientOrientation = ""  # Type 2C (General Image): the panels have no single orientation
    ds.ConversionType = "WSD"  # workstation
    ds.SeriesDescription = series_description
    ds.ImageComments = (f"P(malignant)={summary['probability']:.3f} threshold="
                        f"{summary['threshold']:.3f} label={summary['label']} model="
                        f"{summary['model']}. {DISCLAIMER}")
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer = "spinefx"
    ds.BurnedInAnnotation = "YES"  # the legend is drawn into the pixels
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.get("SOPClassUID", "")
    ref.ReferencedSOPInstanceUID = src.get("SOPInstanceUID", "")
    ds.SourceImageSequence = [ref]
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = src.get("SeriesInstanceUID", "")
    series_ref.ReferencedInstanceSequence = [ref]
    ds.ReferencedSeriesSequence = [series_ref]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    return ds


def write_secondary_capture(path: str | PathLike, overlay: Image.Image,
                            source_file: str | PathLike, summary: dict) -> Path:
    ds = secondary_capture(overlay, source_file, summary)
    buf = io.BytesIO()
    with quiet_dicom():  # encoding the names must not print them either
        ds.save_as(buf, enforce_file_format=True)
    return atomic_write_bytes(path, buf.getvalue())
