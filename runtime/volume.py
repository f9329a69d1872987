"""`Volume`: a stack of parallel 2-D slices with its patient-space geometry.

Every loader (DICOM, plain images, NIfTI, numpy arrays) returns one, so matching and
preprocessing never care where pixels came from. Conventions follow DICOM (LPS, millimetres):

- ``data[i, r, c]``: slice ``i``, row ``r``, column ``c``; slices sorted *ascending* along the
  slice normal ``cross(row_direction, column_direction)``.
- ``row_direction`` is the direction of increasing column index (ImageOrientationPatient[:3]);
  ``column_direction`` that of increasing row index (ImageOrientationPatient[3:]).
- ``pixel_spacing`` is (between rows, between columns), the order of DICOM PixelSpacing.
- ``positions[i]`` is the patient-space centre of pixel (0, 0) of slice ``i``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

WEIGHTINGS = ("T1", "T2", "STIR", "unknown")


@dataclass
class Volume:
    data: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    weighting: str = "unknown"
    description: str = ""
    series_uid: str = ""
    source: str = ""
    slice_sources: tuple[str, ...] = ()
    spacing_known: bool = True  # False for plain images with no calibration: mm sizes are guesses
    metadata: dict = field(default_factory=dict)  # non-PHI extras (TR/TE, study UID, modality...)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3-D (slices, rows, cols), got {self.data.shape}")
        if 0 in self.data.shape:
            raise ValueError(f"Volume data is empty (shape {self.data.shape}): a volume needs at "
                             "least one slice of at least one pixel")
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if len(self.positions) != self.data.shape[0]:
            raise ValueError("one position per slice is required")
        self.row_direction = _unit(self.row_direction)
        self.column_direction = _unit(self.column_direction)
        self.pixel_spacing = (float(self.pixel_spacing[0]), float(self.pixel_spacing[1]))

    # -- geometry ---------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        rows_cols = self.data.shape
        return (int(rows_cols[0]), int(rows_cols[1]), int(rows_cols[2]))

    @property
    def normal(self) -> np.ndarray:
        return _unit(np.cross(self.row_direction, self.column_direction))

    @property
    def slice_coordinates(self) -> np.ndarray:
        """Position of each slice along the normal (mm), ascending."""
        return self.positions @ self.normal

    @property
    def slice_spacing(self) -> float:
        """Median centre-to-centre distance between slices (mm); 0 for a single slice."""
        if self.n_slices < 2:
            return 0.0
        return float(np.median(np.diff(self.slice_coordinates)))

    @property
    def plane(self) -> str:
        return plane_of(self.row_direction, self.column_direction)

    def pixel_to_patient(self, index: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Patient coordinates (..., 3) of pixel centres (rows, cols) on slice ``index``."""
        rows = np.asarray(rows, dtype=np.float64)[..., None]
        cols = np.asarray(cols, dtype=np.float64)[..., None]
        return (self.positions[index]
                + cols * self.pixel_spacing[1] * self.row_direction
                + rows * self.pixel_spacing[0] * self.column_direction)

    def with_data(self, data: np.ndarray, **changes) -> "Volume":
        return replace(self, data=data, **changes)

    @classmethod
    def from_array(cls, data: np.ndarray, pixel_spacing: tuple[float, float] = (1.0, 1.0),
                   slice_spacing: float = 1.0, weighting: str = "unknown", source: str = "",
                   spacing_known: bool = True) -> "Volume":
        """A sagittal volume on a synthetic grid (for plain images and arrays with no header)."""
        data = np.asarray(data, dtype=np.float32)
        n = data.shape[0]
        row_dir = np.array([0.0, 1.0, 0.0])
        col_dir = np.array([0.0, 0.0, -1.0])
        normal = np.cross(row_dir, col_dir)
        positions = np.arange(n, dtype=np.float64)[:, None] * slice_spacing * normal[None, :]
        return cls(data=data, pixel_spacing=pixel_spacing, positions=positions,
                   row_direction=row_dir, column_direction=col_dir, weighting=weighting,
                   source=source, spacing_known=spacing_known)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(3)
    n = np.linalg.norm(v)
    if n == 0:
        raise ValueError("zero-length direction vector")
    return v / n


def plane_of(row_direction, column_direction) -> str:
    """'sagittal' / 'coronal' / 'axial' from the slice normal; 'oblique' if no axis dominates."""
    normal = np.abs(_unit(np.cross(_unit(row_direction), _unit(column_direction))))
    axis = int(np.argmax(normal))
    name = ("sagittal", "coronal", "axial")[axis]
    # cos(35 deg) ~ 0.82: steeper than that and radiologists would call it oblique
    return name if normal[axis] >= 0.82 else f"oblique ({name})"
