"""Plain image slices (PNG/JPEG/TIFF) and NIfTI volumes as :class:`Volume` objects.

Plain images carry no geometry: the caller says which are T1 and which T2, lists the slices in
anatomical order, and may give the pixel spacing (otherwise 1 mm is assumed and the volume is
marked ``spacing_known=False`` so a box in millimetres is known to be a guess).
"""
from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError, SpineFXWarning
from .volume import Volume

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ARRAY_SUFFIXES = (".npy", ".npz")
MAX_PIXELS = 4096 * 4096  # bigger than any MR slice: refuse rather than exhaust memory


def read_image(path: str | PathLike) -> np.ndarray:
    """One greyscale slice as float32 (rows, cols); 8- or 16-bit; RGB(A) that is grey is fine."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"image is {im.width}x{im.height}: too large for an MR slice",
                                 path)
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                warnings.warn(f"{path}: {n_frames} frames, only the first is used",
                              SpineFXWarning, stacklevel=2)
            im.load()
            arr = np.asarray(im)
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError("no such file", path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"not a readable image ({exc})", path) from exc
    if arr.ndim == 3:
        colour = arr[..., :3].astype(np.float32)
        if arr.shape[-1] >= 3 and not (np.array_equal(colour[..., 0], colour[..., 1])
                                       and np.array_equal(colour[..., 1], colour[..., 2])):
            warnings.warn(f"{path}: colour image converted to grey (MR slices should be grey)",
                          SpineFXWarning, stacklevel=2)
        arr = colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32) \
            if arr.shape[-1] >= 3 else colour[..., 0]
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise ImageError(f"image of shape {arr.shape} is not a usable 2-D slice", path)
    if float(arr.max()) == float(arr.min()):
        raise ImageError(f"image is blank (every pixel is {arr.flat[0]:g}): a broken export?",
                         path)
    return arr


def load_image_slices(paths: Sequence[str | PathLike], weighting: str,
                      pixel_spacing: tuple[float, float] | None = None,
                      slice_spacing: float | None = None) -> Volume:
    """Slices in the order given (anatomical order is the caller's promise) as one Volume."""
    if not paths:
        raise ImageError("no image files given")
    images = [read_image(p) for p in paths]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        odd, odd_shape = next((Path(p), im.shape) for p, im in zip(paths, images)
                              if im.shape != images[0].shape)
        raise ImageError(f"slice size {odd_shape} differs from the first slice "
                         f"{images[0].shape}: not one series", odd)
    vol = Volume.from_array(np.stack(images), pixel_spacing=pixel_spacing or (1.0, 1.0),
                            slice_spacing=slice_spacing or 4.0, weighting=weighting,
                            source=str(Path(paths[0]).parent),
                            spacing_known=pixel_spacing is not None)
    vol.slice_sources = tuple(str(p) for p in paths)
    return vol


def load_nifti(path: str | PathLike, weighting: str = "unknown") -> Volume:
    """A NIfTI volume resliced (by axis permutation only) into sagittal slices in DICOM LPS."""
    path = Path(path)
    try:
        import nibabel as nib
    except ImportError as exc:  # optional: the workstation install need not carry it
        raise ImageError("reading NIfTI needs nibabel: pip install 'spinefx[nifti]'", path) from exc
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.spatialimages.SpatialImage):
            raise TypeError(f"{type(img).__name__} is not a spatial image")
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise ImageError(f"not a readable NIfTI file ({exc})", path) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageError(f"NIfTI data has shape {data.shape}; a 3-D volume is needed", path)
    # voxel (i, j, k) -> RAS mm via the affine; DICOM patient space is LPS
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    dirs = axes / spacing
    # slice axis = the voxel axis most aligned with left-right; the remaining two become
    # columns (most anterior-posterior) and rows (most superior-inferior)
    slice_axis = int(np.argmax(np.abs(dirs[0])))
    rest = [a for a in range(3) if a != slice_axis]
    col_axis = max(rest, key=lambda a: abs(dirs[1, a]))
    row_axis = next(a for a in rest if a != col_axis)
    vol = np.transpose(data, (slice_axis, row_axis, col_axis))
    row_dir, col_dir = dirs[:, col_axis].copy(), dirs[:, row_axis].copy()
    # radiological habit: columns run anterior->posterior (+y), rows superior->inferior (-z)
    flip_cols, flip_rows = row_dir[1] < 0, col_dir[2] > 0
    if flip_cols:
        vol, row_dir = vol[:, :, ::-1], -row_dir
    if flip_rows:
        vol, col_dir = vol[:, ::-1, :], -col_dir
    n_rows, n_cols = vol.shape[1:]
    # patient position of output pixel (0, 0) of each slice: map its original voxel index
    ijk = np.zeros((vol.shape[0], 3))
    ijk[:, slice_axis] = np.arange(vol.shape[0])
    ijk[:, row_axis] = n_rows - 1 if flip_rows else 0
    ijk[:, col_axis] = n_cols - 1 if flip_cols else 0
    origins = ijk @ affine[:3, :3].T + affine[:3, 3]
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(origins @ normal)
    return Volume(data=np.ascontiguousarray(vol[order]),
                  pixel_spacing=(float(spacing[row_axis]), float(spacing[col_axis])),
                  positions=origins[order], row_direction=row_dir, column_direction=col_dir,
                  weighting=weighting, source=str(path))


def is_nifti(path: str | PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def is_image(path: str | PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_array_volume(path: str | PathLike, weighting: str = "unknown", key: str | None = None,
                      slice_axis: int | None = None,
                      pixel_spacing: tuple[float, float] | None = None,
                      slice_spacing: float | None = None) -> Volume:
    """A 3-D numpy array (``.npy``, or ``.npz`` with one 3-D array or an ``image`` entry) as a
    sagittal volume. Slices run along ``slice_axis`` (default: the shortest axis, which is the
    slice axis of a sagittal stack); the other two stay (rows, columns) in their stored order.
    Arrays carry no geometry: spacing defaults to 1 mm and is marked as a guess."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle user files
            if isinstance(data, np.ndarray):
                array = data
            else:
                names = [n for n in data.files if data[n].ndim == 3]
                name = key or ("image" if "image" in data.files else
                               names[0] if len(names) == 1 else None)
                if name is None or name not in data.files:
                    raise ImageError(f"holds {sorted(data.files)}; say which array is the image",
                                     path)
                array = data[name]
    except ImageError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(f"not a readable numpy array file ({exc})", path) from exc
    if not isinstance(array, np.ndarray) or array.ndim != 3:
        raise ImageError(f"array of shape {getattr(array, 'shape', '?')} is not a 3-D volume", path)
    axis = int(np.argmin(array.shape)) if slice_axis is None else slice_axis
    volume = np.moveaxis(np.asarray(array, dtype=np.float32), axis, 0)
    if float(volume.max()) == float(volume.min()):
        raise ImageError("volume is blank (constant value)", path)
    vol = Volume.from_array(volume, pixel_spacing=pixel_spacing or (1.0, 1.0),
                            slice_spacing=slice_spacing or 1.0, weighting=weighting,
                            source=str(path), spacing_known=pixel_spacing is not None)
    return vol


def is_array(path: str | PathLike) -> bool:
    return Path(path).suffix.lower() in ARRAY_SUFFIXES
