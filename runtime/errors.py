"""The project's own exception and warning types.

Every failure a user can cause with their input ends in a :class:`SpineFXError` whose message
names the file (or series) and the problem, so the CLI and the demo can show it as one readable
line instead of a traceback.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path


class SpineFXError(Exception):
    """Base class: a problem with the user's input or request, explained in plain words."""

    def __init__(self, message: str, path: str | PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class DicomReadError(SpineFXError):
    """A DICOM file could not be read or decoded (truncated, no pixels, missing decoder...)."""


class SeriesError(SpineFXError):
    """A series is unusable as a volume (mixed orientations, one slice, duplicate positions...)."""


class GeometryError(SpineFXError):
    """Two series cannot be put on one grid (not parallel, not overlapping, too far apart)."""


class ImageError(SpineFXError):
    """A plain image (PNG/JPEG/TIFF) or NIfTI file is unreadable or unsuitable."""


class ManifestError(SpineFXError):
    """A manifest CSV is missing columns or holds values that make no sense."""


class RoiError(SpineFXError):
    """A region of interest is empty, degenerate or lies outside the image."""


class ConfigError(SpineFXError, ValueError):
    """A saved configuration (preprocessing, model) that this version cannot honour."""


class SpineFXWarning(UserWarning):
    """Something was repaired or guessed (edge slice replicated, gap in a series...)."""
