"""The vertebral bodies as a DICOM Segmentation (SEG): binary, one segment per level.

Segment ``i + 1`` is the ``i``-th vertebra of the localisation (superior -> inferior), labelled
with its level, coded as the vertebra (SNOMED CT) it is; its frames lie on the T1 series'
frame of reference and reference the T1 images they were derived from (frames with no body
voxel are left out, as highdicom does by default). A T1 series stored as one enhanced
(multi-frame) image gets its frames in that image's frame order. The localiser works on a canonical
orientation (rows superior -> inferior, columns anterior -> posterior); its label map is
flipped back onto the series' own rows and columns first, as vertebrae_mask.nii.gz is.

Built with highdicom (the ``node`` extra), imported only when a SEG is made; patient/study
attributes through :func:`spinefx.runtime.outputs.copy_patient_study` (see
:mod:`spinefx.runtime.dicom_sr`).
"""
from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset

from .dicom_sr import (
    SourceImage,
    level_site,
    require_highdicom,
    set_creation_time,
    source_headers,
    spinefx_version,
    tracking_uid,
)
from .dicom_uids import derived_uid, fix_dimension_uids
from .errors import SpineFXError
from .localise import canonical_flips
from .outputs import quiet_dicom
from .provenance import DISCLAIMER

if TYPE_CHECKING:
    from .study import Study
    from .study_analysis import SpineAnalysis

__all__ = ["SEG_SERIES_NUMBER", "segment_label_map", "source_frames",
           "vertebra_segmentation"]

SEG_SERIES_NUMBER = 9902


def segment_label_map(spine: SpineAnalysis) -> np.ndarray:
    """(slices, rows, cols) uint8 on the series' own grid: 0 background, ``i + 1`` the
    ``i``-th vertebra (SEG segment numbers run 1..N without gaps; mask values need not)."""
    vl = spine.localisation.vertebrae
    flips = canonical_flips(spine.localisation.volume)
    labels = vl.labels
    if flips[0]:
        labels = labels[:, ::-1, :]
    if flips[1]:
        labels = labels[:, :, ::-1]
    if len(vl.vertebrae) > 255:
        raise SpineFXError(f"{len(vl.vertebrae)} vertebrae: more than a SEG label map holds")
    out = np.zeros(labels.shape, dtype=np.uint8)
    for i, vertebra in enumerate(vl.vertebrae):
        out[labels == vertebra.value] = i + 1
    return out


def vertebra_segmentation(spine: SpineAnalysis, study: Study, *, seed: str,
                          created: _dt.datetime | None = None,
                          sources: list[SourceImage] | None = None) -> Dataset:
    """A binary SEG of the vertebral bodies of ``spine`` on the T1 series.

    ``seed``: what the UIDs derive from (same seed, same UIDs); ``created``: its Content and
    Instance Creation date/time (now when None); ``sources``:
    :func:`spinefx.runtime.dicom_sr.source_headers`, when the caller read them already."""
    hd = require_highdicom()
    sources = sources if sources is not None else source_headers(spine, study)
    if not spine.localisation.vertebrae.vertebrae:
        raise SpineFXError("no vertebra was found: there is nothing to segment")
    created = created or _dt.datetime.now()
    # the study's UID is part of every UID: one seed used for two studies gives two sets
    seed = f"{sources[0].header.StudyInstanceUID}|{seed}"
    with quiet_dicom():
        images, frames = source_frames(sources, segment_label_map(spine))
        seg = hd.seg.Segmentation(
            source_images=images, pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(hd, spine, seed),
            series_instance_uid=derived_uid(seed, "seg", "series"),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=derived_uid(seed, "seg", "instance"), instance_number=1,
            manufacturer="spinefx", manufacturer_model_name="spinefx vertebral-body localiser",
            software_versions=spinefx_version(), device_serial_number="none",
            content_label="VERTEBRAE",
            content_description="vertebral bodies (research, not for diagnosis)",
            series_description="spinefx vertebral bodies (research)",
            content_date=created.date(), content_time=created.time())
        fix_dimension_uids(seg, seed, "seg")
        set_creation_time(seg, created)
        seg.ImageComments = DISCLAIMER
    return seg


def source_frames(sources: list[SourceImage], labels: np.ndarray
                  ) -> tuple[list[Dataset], np.ndarray]:
    """highdicom's source images and the label map in their frame order: one frame per
    single-frame file (the volume's slice order), or the frames of one multi-frame file
    (slice ``i`` of the volume is its frame ``sources[i].frame``)."""
    if all(s.frame is None for s in sources):
        return [s.header for s in sources], labels
    headers = {str(s.header.SOPInstanceUID): s.header for s in sources}
    if len(headers) != 1 or any(s.frame is None for s in sources):
        raise SpineFXError("the T1 series mixes files and frames of several multi-frame "
                           "images: the SEG output needs single-frame files or one "
                           "multi-frame image")
    header = next(iter(headers.values()))
    frames = np.zeros((int(header.NumberOfFrames), *labels.shape[1:]), dtype=labels.dtype)
    for i, s in enumerate(sources):
        assert s.frame is not None
        frames[s.frame - 1] = labels[i]
    return [header], frames


def _descriptions(hd: Any, spine: SpineAnalysis, seed: str) -> list[Any]:
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="spinefx vertebral-body localiser", version=spinefx_version(),
        family=codes.cid7162.ArtificialIntelligence,
        source=str(spine.localisation.document.get("probability_source") or "spinefx"))
    out = []
    for i, vertebra in enumerate(spine.localisation.vertebrae.vertebrae):
        level = str(vertebra.level)
        out.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=level,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=level_site(hd, level),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=tracking_uid(seed, i, level),
            tracking_id=level))
    return out
