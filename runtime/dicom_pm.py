"""The classifier's map (Grad-CAM, or occlusion) as a DICOM Parametric Map on the T1 series.

One frame per T1 slice that holds a classified vertebra's map: the map each vertebra's
prediction placed on its lesion slice (``Prediction.cam_slice``: 0 outside its ROI, scaled
to its own peak), several on one slice combined by their maximum (their ROIs rarely overlap;
the maximum keeps each body's own map). The values are *relative* evidence for the malignant
class, 0-1, not a probability and not comparable between vertebrae: the frame says so in its
Real World Value Mapping and the map's method (``cam`` or ``occlusion``) is named in the
content description.

Stored as 16-bit integers with a Real World Value Mapping (slope 1/1000): a tenth of a
percent is finer than the map's own resolution (a 4x4 or 7x7 grid, bilinearly upsampled),
and integer frames are a quarter of float ones' size and shown by more viewers. The frames
lie on the T1 series' frame of reference with each slice's own plane position, so a viewer
fuses them with the T1 image; the UIDs derive from the seed like the SR's and SEG's.

Built with highdicom (the ``node`` extra), imported only when a map is made; the patient and
study attributes through the clean source headers of :func:`.dicom_sr.source_headers`.
"""
from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset

from .dicom_sr import (
    SourceImage,
    private,
    require_highdicom,
    set_creation_time,
    source_headers,
    spinefx_version,
)
from .dicom_uids import derived_uid, fix_dimension_uids
from .errors import SpineFXError
from .outputs import quiet_dicom
from .provenance import DISCLAIMER

if TYPE_CHECKING:
    from .study import Study
    from .study_analysis import SpineAnalysis

__all__ = ["PM_SERIES_NUMBER", "PM_SCALE", "map_frames", "parametric_map"]

PM_SERIES_NUMBER = 9903          # after the capture (9900), the SR (9901) and the SEG (9902)
PM_SCALE = 1000                  # stored value = round(map * PM_SCALE)

_METHODS = {"cam": "Grad-CAM (class activation map of the malignant class)",
            "occlusion": "occlusion map (drop of the malignant probability when a patch is "
                         "hidden)"}


def map_frames(spine: SpineAnalysis) -> dict[int, np.ndarray]:
    """{T1 slice index: (rows, cols) float32 map in [0, 1]} of every classified vertebra,
    slices in order, maps on one slice combined by their maximum."""
    frames: dict[int, np.ndarray] = {}
    for result in spine.results:
        if result is None:
            continue
        index = int(result.roi.slice_index)
        cam = np.asarray(result.prediction.cam_slice, dtype=np.float32)
        frames[index] = np.maximum(frames[index], cam) if index in frames else cam
    return dict(sorted(frames.items()))


def parametric_map(spine: SpineAnalysis, study: Study, *, seed: str,
                   created: _dt.datetime | None = None,
                   sources: list[SourceImage] | None = None) -> Dataset:
    """A Parametric Map of the classified vertebrae's maps on the T1 series; the keywords
    are :func:`spinefx.runtime.dicom_seg.vertebra_segmentation`'s (the same seed gives the
    same UIDs, and with the same ``created`` the same bytes)."""
    frames = map_frames(spine)
    if not frames:
        raise SpineFXError("no vertebra was classified: there is no map to store")
    hd = require_highdicom()
    sources = sources if sources is not None else source_headers(spine, study)
    created = created or _dt.datetime.now()
    seed = f"{sources[0].header.StudyInstanceUID}|{seed}"
    volume = spine.localisation.volume
    stored = np.stack([np.rint(np.clip(m, 0.0, 1.0) * PM_SCALE).astype(np.uint16)
                       for m in frames.values()])
    positions = [hd.PlanePositionSequence(
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        image_position=[float(v) for v in volume.positions[i]]) for i in frames]
    method = str(getattr(spine.primary.prediction, "map_method", "cam"))
    with quiet_dicom():
        headers = list({str(s.header.SOPInstanceUID): s.header for s in
                        (sources[i] for i in frames)}.values())
        pm = hd.pm.ParametricMap(
            source_images=headers, pixel_array=stored,
            series_instance_uid=derived_uid(seed, "pm", "series"),
            series_number=PM_SERIES_NUMBER,
            sop_instance_uid=derived_uid(seed, "pm", "instance"), instance_number=1,
            manufacturer="spinefx", manufacturer_model_name="spinefx fracture classifier",
            software_versions=spinefx_version(), device_serial_number="none",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[_value_mapping(hd, method)],
            window_center=PM_SCALE / 2, window_width=PM_SCALE,
            content_label="CAM" if method == "cam" else "OCCLUSION",
            content_description=f"{method} map (research, not for diagnosis)",
            plane_positions=positions,
            pixel_measures=hd.PixelMeasuresSequence(
                pixel_spacing=[float(v) for v in volume.pixel_spacing],
                slice_thickness=_thickness(sources, volume.slice_spacing)),
            plane_orientation=hd.PlaneOrientationSequence(
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                image_orientation=[*map(float, volume.row_direction),
                                   *map(float, volume.column_direction)]),
            content_date=created.date(), content_time=created.time())
        fix_dimension_uids(pm, seed, "pm")
        set_creation_time(pm, created)
        _add_frame_anatomy(pm)
        pm.SeriesDescription = "spinefx map of the malignant class (research)"
        pm.ImageComments = DISCLAIMER
    return pm


def _value_mapping(hd: Any, method: str) -> Any:
    from pydicom.sr.codedict import codes

    return hd.pm.RealWorldValueMapping(
        lut_label=method.upper()[:16], lut_explanation=_METHODS.get(method, method)[:64],
        unit=codes.UCUM.NoUnits, value_range=(0, PM_SCALE), slope=1.0 / PM_SCALE,
        intercept=0.0,
        quantity_definition=private(hd, "RELEVIDENCE", "Relative evidence for the malignant "
                                                       "class (not a probability)"))


def _add_frame_anatomy(pm: Dataset) -> None:
    """The Frame Anatomy functional group highdicom leaves out: the spine, unpaired (so no
    Laterality is owed; dciodvfy reports its absence otherwise)."""
    from pydicom.sr.codedict import codes

    spine = codes.SCT.Spine
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator = spine.value, spine.scheme_designator
    region.CodeMeaning = spine.meaning
    anatomy = Dataset()
    anatomy.FrameLaterality = "U"
    anatomy.AnatomicRegionSequence = [region]
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]


def _thickness(sources: list[SourceImage], spacing: float) -> float:
    """The T1 slices' thickness (a single-frame header's SliceThickness), else their spacing
    (a multi-frame image keeps it in its functional groups)."""
    value = sources[0].header.get("SliceThickness")
    return float(value) if value else float(spacing)
