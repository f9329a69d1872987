"""spinefx.runtime: everything needed to turn MRI files into a model input and a prediction.

Imports numpy, pydicom, Pillow (and onnxruntime for inference) only — never torch — so it runs
on a scanner-side workstation. Preprocessing lives here once; training imports it.

The names below load on first use (PEP 562): importing ``spinefx.runtime.errors`` — which every
command does — costs no pydicom or numpy, so ``spinefx node`` listens within a second.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module of this package that defines it
_EXPORTS = {
    "analyse_study": "api", "StudyResult": "api",
    "LABELS": "cases", "Case": "cases", "load_volume": "cases", "prepare_case": "cases",
    "read_manifest": "cases",
    "SeriesInfo": "dicom", "StudyScan": "dicom", "classify_weighting": "dicom",
    "scan_study": "dicom", "load_series": "dicom_series",
    "ConfigError": "errors", "DicomReadError": "errors", "GeometryError": "errors",
    "ImageError": "errors", "ManifestError": "errors", "RoiError": "errors",
    "SeriesError": "errors", "SpineFXError": "errors", "SpineFXWarning": "errors",
    "FEATURE_KEYS": "features", "FEATURES": "features", "ImagingFeature": "features",
    "load_image_slices": "images", "load_nifti": "images", "read_image": "images",
    "AlignedPair": "matching", "align_pair": "matching", "align_to": "matching",
    "match_slices": "matching",
    "ModelInput": "preprocess", "PreprocessConfig": "preprocess",
    "box_from_center": "preprocess", "build_six_channel": "preprocess",
    "square_roi": "preprocess",
    "Volume": "volume",
}

__all__ = [  # literal, for the linters; equal to sorted(_EXPORTS) (tested)
    "AlignedPair", "Case", "ConfigError", "DicomReadError", "FEATURES", "FEATURE_KEYS",
    "GeometryError", "ImageError", "ImagingFeature", "LABELS", "ManifestError", "ModelInput",
    "PreprocessConfig", "RoiError", "SeriesError", "SeriesInfo", "SpineFXError", "SpineFXWarning",
    "StudyResult", "StudyScan", "Volume", "align_pair", "align_to", "analyse_study",
    "box_from_center", "build_six_channel", "classify_weighting", "load_image_slices",
    "load_nifti", "load_series", "load_volume", "match_slices", "prepare_case", "read_image",
    "read_manifest", "scan_study", "square_roi",
]

if TYPE_CHECKING:  # the type checker sees the names as if imported eagerly
    from .api import StudyResult, analyse_study
    from .cases import LABELS, Case, load_volume, prepare_case, read_manifest
    from .dicom import SeriesInfo, StudyScan, classify_weighting, scan_study
    from .dicom_series import load_series
    from .errors import (
        ConfigError,
        DicomReadError,
        GeometryError,
        ImageError,
        ManifestError,
        RoiError,
        SeriesError,
        SpineFXError,
        SpineFXWarning,
    )
    from .features import FEATURE_KEYS, FEATURES, ImagingFeature
    from .images import load_image_slices, load_nifti, read_image
    from .matching import AlignedPair, align_pair, align_to, match_slices
    from .preprocess import (
        ModelInput,
        PreprocessConfig,
        box_from_center,
        build_six_channel,
        square_roi,
    )
    from .volume import Volume


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value      # next time without this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
