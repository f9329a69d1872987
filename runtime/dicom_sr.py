"""The whole-spine findings as a DICOM Comprehensive SR (TID 1500 Measurement Report).

One measurement group (TID 1501) per vertebra found, tracking identifier = its level:
height loss (%) and Genant grade from the localiser, and for classified levels the malignancy
probability, the decision threshold, the label at that threshold and the out-of-distribution
flag, with the classifier's name, version and sha256 as the measurement's algorithm. Each
group references the T1 image its vertebra was measured on. The disclaimer and, for a model
trained on phantoms, the SYNTHETIC caveat are comments at the root of the report.

Built with highdicom (the ``node`` extra), imported only when a report is made. The
patient/study attributes come from the T1 source file through the one copy of
:func:`spinefx.runtime.outputs.copy_patient_study` (character set kept, invalid Type 2
values empty) and nothing of them reaches a log or a warning (:func:`quiet_dicom`).

Codes: SNOMED CT and DCM where pydicom's code dictionary has a fitting concept (vertebrae
C1-L5, Benign/Malignant, Yes/No, Comment, UCUM units); a private scheme ``99SPINEFX`` where it
has none (declared in the Coding Scheme Identification Sequence):

- the Genant grade is an ordinal category, not a quantity: a CODE value ("Genant grade 2")
  lets a PACS query match it exactly, and a number with a unit would invite arithmetic on a
  class. Neither DCM nor SNOMED CT has Genant codes, so they are private; a body that was
  not graded (cut by the field of view, sacral) says so with its own code.
- the probability is of the model's *malignant* class among compression fractures, not DCM
  111047 "Probability of cancer" (a CAD concept for a finding being cancer): private.
- the procedure "MRI of spine" has an SNOMED CT code, but none in pydicom's dictionary and
  none this offline build can verify: private rather than a guessed number.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from .dicom_uids import derived_uid
from .errors import SpineFXError
from .model_files import ModelSpec
from .outputs import copy_patient_study, quiet_dicom, read_source_header
from .provenance import DISCLAIMER, SYNTHETIC_CAPTION

if TYPE_CHECKING:
    from .study import Study
    from .study_analysis import SpineAnalysis

__all__ = ["PRIVATE_SCHEME", "SR_SERIES_NUMBER", "require_highdicom", "set_creation_time",
           "skipped_report", "source_headers", "structured_report", "tracking_uid"]

PRIVATE_SCHEME = "99SPINEFX"
SR_SERIES_NUMBER = 9901          # the capture is 9900, the SEG 9902: after any scanner series
NODE_EXTRA = "pip install 'spinefx[node]'"

# Non-PHI attributes of a source image that highdicom needs to reference it (and, for the
# SEG, its geometry); with copy_patient_study's attributes they make the "clean" source
# every output is built from, so no other patient-module value of the source is copied.
_REFERENCE_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
    "InstanceNumber", "Modality", "FrameOfReferenceUID", "PositionReferenceIndicator",
    "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
    "SliceThickness", "SpacingBetweenSlices", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    # an enhanced (multi-frame) image's geometry lives in its functional groups
    "NumberOfFrames", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def require_highdicom() -> Any:
    """highdicom, or an error saying which extra installs it."""
    try:
        import highdicom
    except ImportError as exc:
        raise SpineFXError(f"DICOM SR/SEG outputs need highdicom: {NODE_EXTRA}") from exc
    return highdicom


def spinefx_version() -> str:
    try:
        return importlib.metadata.version("spinefx")
    except importlib.metadata.PackageNotFoundError:   # a source tree that was never installed
        return "unknown"


# ---------------------------------------------------------------------------------------------
# the source images
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceImage:
    """One T1 slice as the outputs reference it: its clean header and its frame (1-based,
    None for a single-frame file)."""
    header: Dataset
    frame: int | None


def _clean(src: Dataset) -> Dataset:
    out = Dataset()
    copy_patient_study(src, out)
    for keyword in _REFERENCE_KEYWORDS:
        element = src.data_element(keyword) if keyword in src else None
        if element is not None:
            out.add(element)
    return out


def source_headers(spine: SpineAnalysis, study: Study) -> list[SourceImage]:
    """The clean header of every slice of the T1 series, in the volume's slice order.

    The T1 series even when the localiser ran on the T2: that T2 was resliced onto the T1 grid
    (:func:`spinefx.runtime.study_analysis.localise_pair`), so the masks, slices and boxes are
    T1's and the T1 images are the ones whose geometry they share."""
    t1 = study.volume(spine.primary.pair.t1)
    grid = spine.localisation.volume
    if grid.data.shape != t1.data.shape or not _same_positions(grid.positions, t1.positions):
        raise SpineFXError("the vertebrae were found on a grid that is not the T1 series' "
                           "own: DICOM SR/SEG outputs need T1 geometry")
    if "study_uid" not in t1.metadata or len(t1.slice_sources) != t1.n_slices:
        raise SpineFXError("DICOM SR/SEG outputs need DICOM input (they join the source study)")
    headers: dict[str, Dataset] = {}
    out = []
    with quiet_dicom():
        for source in t1.slice_sources:
            path, _, frame = source.partition("#")
            if path not in headers:
                headers[path] = _clean(read_source_header(path, "the DICOM outputs"))
            out.append(SourceImage(headers[path], int(frame) + 1 if frame else None))
    return out


def _same_positions(a: Any, b: Any) -> bool:
    import numpy as np

    return bool(np.allclose(a, b, atol=1e-3))


def tracking_uid(scoped_seed: str, index: int, level: str) -> str:
    """The vertebra's Tracking UID, the same in the SR's measurement group and the SEG's
    segment (so a viewer can pair them). ``scoped_seed`` = "study UID|seed"."""
    return derived_uid(scoped_seed, "tracking", str(index), level)


# ---------------------------------------------------------------------------------------------
# codes
# ---------------------------------------------------------------------------------------------
def private(hd: Any, value: str, meaning: str) -> Any:
    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


GENANT_MEANINGS = {0: "Genant grade 0 (normal, < 20% height loss)",
                   1: "Genant grade 1 (mild, 20-25% height loss)",
                   2: "Genant grade 2 (moderate, 25-40% height loss)",
                   3: "Genant grade 3 (severe, > 40% height loss)"}


def genant_code(hd: Any, grade: int | None) -> Any:
    if grade is None:
        return private(hd, "GENANT-NG", "Not graded (vertebral body cut by the field of view "
                                        "or sacral)")
    return private(hd, f"GENANT{int(grade)}", GENANT_MEANINGS[int(grade)])


def level_site(hd: Any, level: str) -> Any:
    """The vertebra's SNOMED CT code (C1-L5; the sacrum for S1-S5; "vertebra" when the level
    is unknown)."""
    from pydicom.sr.codedict import codes

    name = f"{level}Vertebra"
    if level[:1] in "CTL" and name in codes.SCT.dir():
        return getattr(codes.SCT, name)
    return codes.SCT.Sacrum if level.startswith("S") else codes.SCT.Vertebra


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def structured_report(spine: SpineAnalysis, study: Study, predictor_spec: ModelSpec, *,
                      seed: str, created: _dt.datetime | None = None,
                      sources: list[SourceImage] | None = None) -> Dataset:
    """A Comprehensive SR (TID 1500) of ``spine`` in the source study.

    ``seed``: what the UIDs derive from (:func:`spinefx.runtime.dicom_outputs.result_seed`);
    the same seed gives the same Series/SOP Instance UIDs. ``created``: the Content and
    Instance Creation date/time (now when None; the same time gives the same bytes).
    ``sources``: :func:`source_headers`, when the caller read them already."""
    hd = require_highdicom()
    sources = sources if sources is not None else source_headers(spine, study)
    created = created or _dt.datetime.now()
    with quiet_dicom():
        return _report(hd, spine, predictor_spec, seed, created, sources)


def _report(hd: Any, spine: SpineAnalysis, spec: ModelSpec, seed: str,
            created: _dt.datetime, sources: list[SourceImage]) -> Dataset:

    entries = spine.localisation.document["vertebrae"]
    groups, evidence = [], {}
    primary = sources[spine.primary.roi.slice_index].header
    evidence[primary.SOPInstanceUID] = primary   # the patient/study attributes come from it
    # the study's UID is part of every UID: one seed used for two studies gives two sets
    study_uid = str(primary.StudyInstanceUID)
    for index, entry in enumerate(entries):
        image = sources[int(entry.get("height_slice", entry["slice"]))]
        evidence.setdefault(image.header.SOPInstanceUID, image.header)
        groups.append(_group(hd, spine, spec, f"{study_uid}|{seed}", index, entry, image))
    description = "spinefx findings (SYNTHETIC model; research)" if spec.synthetic \
        else "spinefx findings (research, not for diagnosis)"
    return _measurement_report(hd, spec, groups, _comments(spine, spec), list(evidence.values()),
                               study_uid, seed, "sr", description, created)


def _measurement_report(hd: Any, spec: ModelSpec, groups: list, comments: list[str],
                        evidence: list[Dataset], study_uid: str, seed: str, kind: str,
                        description: str, created: _dt.datetime) -> Dataset:
    """The TID 1500 report of ``groups`` with ``comments`` at its root, as a Comprehensive SR
    whose UIDs derive from the study, the seed and ``kind``."""
    from pydicom.sr.codedict import codes

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("spinefx device", spec.name), name="spinefx",  # one per model
            manufacturer_name="spinefx", model_name=spec.name))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=private(hd, "MRSPINE", "MRI of spine, sagittal T1W and T2W"),
        imaging_measurements=groups)
    root = report[0]
    for text in comments:
        root.ContentSequence.append(hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=text,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    scheme = hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="spinefx private codes",
        responsible_organization="spinefx")
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=report[0],
        series_instance_uid=derived_uid(study_uid, seed, kind, "series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(study_uid, seed, kind, "instance"), instance_number=1,
        manufacturer="spinefx", is_complete=True, series_description=description,
        coding_schemes=[scheme], content_date=created.date(), content_time=created.time(),
        software_versions=spinefx_version())
    set_creation_time(sr, created)
    return sr


def skipped_report(source_file: str | Any, reason: str, spec: ModelSpec, *, seed: str,
                   created: _dt.datetime | None = None) -> Dataset:
    """A short Comprehensive SR in the study of ``source_file`` (one of its MR images) saying
    that spinefx did not analyse it and why: the node's ``--report-skipped``. One measurement
    group, the study's analysis status ("Not analysed", a private code); the reason, the
    disclaimer and the model's caveat are its comments. ``reason`` must carry no patient value
    (the node's reasons are redacted)."""
    hd = require_highdicom()
    created = created or _dt.datetime.now()
    with quiet_dicom():
        source = _clean(read_source_header(source_file, "the not-analysed report"))
        comments = [f"Not analysed by spinefx: {reason}", DISCLAIMER]
        if spec.synthetic:
            comments.append(f"SYNTHETIC: {SYNTHETIC_CAPTION}.")
        study_uid = str(source.StudyInstanceUID)
        # TID 1500 needs one measurement group: the study's analysis status, coded
        status = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derived_uid(study_uid, seed, "sr-skipped", "tracking"),
                identifier="whole study"),
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=private(hd, "STATUS", "spinefx analysis status"),
                value=private(hd, "NOTANALYSED", "Not analysed"))])
        return _measurement_report(hd, spec, [status], comments, [source], study_uid, seed,
                                   "sr-skipped", "spinefx: not analysed (research)", created)


def set_creation_time(ds: Dataset, created: _dt.datetime) -> None:
    """Every date/time highdicom takes from the clock (Instance Creation, the contributing
    equipment's Contribution DateTime) set to ``created``: the same time, the same bytes."""
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = created.strftime("%Y%m%d%H%M%S.%f")


def _comments(spine: SpineAnalysis, spec: ModelSpec) -> list[str]:
    doc = spine.localisation.document
    texts = [DISCLAIMER]
    if spec.synthetic:
        texts.append(f"SYNTHETIC: {SYNTHETIC_CAPTION}; a pipeline demonstration, not a "
                     "clinical model. Its probabilities say nothing about real patients.")
    if doc.get("levels_uncertain"):
        texts.append(f"Vertebral levels uncertain (confidence {doc['level_confidence']}): "
                     "check the count before using a level name.")
    texts.append(f"Grading: {doc['grading']}.")
    return texts


def classifier_id(hd: Any, spec: ModelSpec, model_id: str, sha256: str) -> Any:
    """The classifier as TID 4019 Algorithm Identification: name, version, and the sha256,
    variant and threshold as parameters (a model without a version is named by its file's
    sha256, which identifies it exactly)."""
    version = str(spec.raw.get("version") or f"sha256:{sha256[:16]}")
    parameters = [f"model={model_id}", f"sha256={sha256}", f"threshold={spec.threshold:.6g}"]
    if spec.synthetic:
        parameters.append(SYNTHETIC_CAPTION)
    return hd.sr.AlgorithmIdentification(name=spec.name, version=version,
                                         parameters=parameters, manufacturer="spinefx")


def _group(hd: Any, spine: SpineAnalysis, spec: ModelSpec, seed: str, index: int,
           entry: dict[str, Any], image: SourceImage) -> Any:
    from pydicom.sr.codedict import codes

    level = str(entry["level"])
    localiser = hd.sr.AlgorithmIdentification(
        name="spinefx vertebral-body localiser and Genant grading", version=spinefx_version())
    measurements, evaluations = [], [hd.sr.QualitativeEvaluation(
        name=private(hd, "GENANT", "Genant semi-quantitative fracture grade"),
        value=genant_code(hd, entry.get("grade")))]
    if entry.get("height_loss") is not None:
        measurements.append(hd.sr.Measurement(
            name=private(hd, "VBHL", "Vertebral body height loss"),
            value=round(100.0 * float(entry["height_loss"]), 3), unit=codes.UCUM.Percent,
            algorithm_id=localiser))
    result = spine.results[index]
    if result is not None:
        p = result.prediction
        model = classifier_id(hd, spec, p.model_id, p.model_sha256)
        measurements += [
            hd.sr.Measurement(name=private(hd, "PMALIGN", "Probability of a malignant "
                                                          "(pathological) compression fracture"),
                              value=float(p.probability), unit=codes.UCUM.NoUnits,
                              algorithm_id=model),
            hd.sr.Measurement(name=private(hd, "THRESHOLD", "Model decision threshold"),
                              value=float(p.threshold), unit=codes.UCUM.NoUnits,
                              algorithm_id=model)]
        label = codes.SCT.Malignant if p.label == spec.classes[1] else codes.SCT.Benign
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=private(hd, "LABEL", "Fracture class at the model threshold"), value=label))
        if p.ood is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=private(hd, "OOD", "Input unlike the model's training data"),
                value=codes.SCT.Yes if p.ood_flagged else codes.SCT.No))
    frames = [image.frame] if image.frame is not None else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(seed, index, level), identifier=level),
        finding_type=codes.SCT.Vertebra,
        finding_sites=[hd.sr.FindingSite(level_site(hd, level))],
        measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup(
            image.header.SOPClassUID, image.header.SOPInstanceUID, frames)])
