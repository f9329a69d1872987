"""spinefx.runtime: everything needed to turn MRI files into a model input and a prediction.

Imports numpy, pydicom, Pillow (and onnxruntime for inference) only — never torch — so it runs
on a scanner-side workstation. Preprocessing lives here once; training imports it.
"""
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
from .preprocess import ModelInput, PreprocessConfig, box_from_center, build_six_channel, square_roi
from .volume import Volume

__all__ = [
    "analyse_study", "StudyResult",
    "ConfigError",
    "AlignedPair", "LABELS", "Case", "align_pair", "ModelInput", "PreprocessConfig", "align_to",
    "box_from_center",
    "build_six_channel", "load_image_slices", "load_nifti", "load_volume", "match_slices",
    "prepare_case", "read_image", "read_manifest", "square_roi",
    "DicomReadError", "FEATURES", "FEATURE_KEYS", "GeometryError", "ImageError", "ImagingFeature",
    "ManifestError", "RoiError", "SeriesError", "SeriesInfo", "SpineFXError", "SpineFXWarning",
    "StudyScan", "Volume", "classify_weighting", "load_series", "scan_study",
]


def __getattr__(name: str):
    """``analyse_study`` / ``StudyResult`` (runtime/api.py) on first use: importing the package
    stays cheap (the node starts listening before any model code is imported)."""
    if name in ("analyse_study", "StudyResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
