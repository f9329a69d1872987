"""Plain image slices (PNG/JPEG/TIFF) and NIfTI volumes as :class:`Volume` objects.

Plain images carry no geometry: the caller says which are T1 and which T2, lists the slices in
anatomical order, and may give the pixel spacing (otherwise 1 mm is assumed and the volume is
marked ``spacing_known=False`` so a box in millimetres is known to be a guess).
"""
from __future__ import annotations

import warnings
import zipfile
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import ImageError, SpineFXWarning
from .volume import Volume

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ARRAY_SUFFIXES = (".npy", ".npz")
MAX_PIXELS = 4096 * 4096  # bigger than any MR slice: refuse rather than exhaust memory
MAX_VOXELS = 512 * 1024 * 1024  # a whole volume (NIfTI, .npy/.npz), checked from its header


_GREY_MODES = ("1", "L", "LA", "La", "I", "F", "RGB", "RGBA", "RGBX", "RGBa")


def _open_checked(path: Path) -> np.ndarray:
    """One decoded frame; Pillow's own warnings (corrupt EXIF, truncated tags...) come back
    as :class:`SpineFXWarning` naming the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = _decode(path)
    for w in caught:
        if issubclass(w.category, SpineFXWarning):
            warnings.warn(w.message, w.category, stacklevel=3)
        else:
            warnings.warn(f"{path}: the image reader warned: {w.message}", SpineFXWarning,
                          stacklevel=3)
    return arr


def _decode(path: Path) -> np.ndarray:
    """Open, check the claimed size before decoding, then decode one frame to an array."""
    with warnings.catch_warnings():
        # Pillow warns (and past twice its limit raises) on huge claimed sizes: refuse both
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"image claims a size too large for an MR slice ({exc})",
                             path) from exc
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"image is {im.width}x{im.height}: too large for an MR slice",
                                 path)
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                warnings.warn(f"{path}: {n_frames} frames, only the first is used",
                              SpineFXWarning)
            mode = im.mode
            if mode == "CMYK":
                raise ImageError("CMYK colour JPEG: MR slices are grey; export the slice as a "
                                 "greyscale image", path)
            im.load()
            if mode in ("P", "PA"):
                warnings.warn(f"{path}: palette image converted through its palette to grey "
                              "(MR slices should be plain greyscale)", SpineFXWarning)
                return np.asarray(im.convert("RGBA" if mode == "PA" else "RGB"))
            if not (mode in _GREY_MODES or mode.startswith("I;16")):
                raise ImageError(f"image mode {mode!r} is not a grey or RGB image", path)
            return np.asarray(im)


def read_image(path: str | PathLike) -> np.ndarray:
    """One greyscale slice as float32 (rows, cols); 8- or 16-bit; RGB(A) that is grey is fine."""
    path = Path(path)
    try:
        arr = _open_checked(path)
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError("no such file", path) from exc
    except Exception as exc:  # truncated or mutated files fail in many ways: one readable line
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
    _check_finite(arr, path)
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
    vol = _volume(Path(paths[0]), np.stack(images), pixel_spacing=pixel_spacing or (1.0, 1.0),
                  slice_spacing=slice_spacing or 4.0, weighting=weighting,
                  source=str(Path(paths[0]).parent), spacing_known=pixel_spacing is not None)
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
        shape = tuple(int(n) for n in img.shape)
        if 0 in shape:
            raise ImageError(f"NIfTI volume of shape {shape} is empty: no slices or no pixels",
                             path)
        if int(np.prod(shape, dtype=object)) > MAX_VOXELS:
            raise ImageError(f"NIfTI volume claims shape {shape}: more than the {MAX_VOXELS} "
                             "voxels allowed for an MR volume", path)
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 1):
            raise ImageError(f"NIfTI data has shape {shape}; a 3-D volume is needed", path)
        # the slice axis comes from the affine later: bound the largest plane it could give
        plane = int(np.prod(sorted(shape[:3])[1:], dtype=object))
        if plane > MAX_PIXELS:
            raise ImageError(f"NIfTI volume claims shape {shape}: slices of {plane} pixels, more "
                             f"than the {MAX_PIXELS} allowed for an MR slice", path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"not a readable NIfTI file ({exc})", path) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageError(f"NIfTI data has shape {data.shape}; a 3-D volume is needed", path)
    _check_finite(data, path)
    # voxel (i, j, k) -> RAS mm via the affine; DICOM patient space is LPS
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if not (np.isfinite(axes).all() and (spacing > 0).all()):
        raise ImageError(f"NIfTI affine {axes.tolist()} is degenerate (zero or non-finite "
                         "voxel size)", path)
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
    try:
        return Volume(data=np.ascontiguousarray(vol[order]),
                      pixel_spacing=(float(spacing[row_axis]), float(spacing[col_axis])),
                      positions=origins[order], row_direction=row_dir, column_direction=col_dir,
                      weighting=weighting, source=str(path))
    except ValueError as exc:
        raise ImageError(str(exc), path) from exc


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
    Arrays carry no geometry: spacing defaults to 1 mm and is marked as a guess.

    The claimed shape and dtype are checked from the array header before any data is read
    (bool/integer/float only, at most :data:`MAX_VOXELS` voxels and :data:`MAX_PIXELS` per
    slice); nothing is ever unpickled."""
    path = Path(path)
    try:
        array = _read_array_file(path, key, slice_axis)
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError("no such file", path) from exc
    except Exception as exc:  # BadZipFile, zlib.error, EOF, MemoryError...: one readable line
        raise ImageError(f"not a readable numpy array file ({type(exc).__name__}: {exc})",
                         path) from exc
    axis = int(np.argmin(array.shape)) if slice_axis is None else slice_axis
    volume = np.moveaxis(array, axis, 0)
    _check_finite(volume, path)
    if float(volume.max()) == float(volume.min()):
        raise ImageError("volume is blank (constant value)", path)
    return _volume(path, volume, pixel_spacing=pixel_spacing or (1.0, 1.0),
                   slice_spacing=slice_spacing or 1.0, weighting=weighting,
                   source=str(path), spacing_known=pixel_spacing is not None)


def _volume(path: Path, data: np.ndarray, **kwargs) -> Volume:
    """``Volume.from_array`` with its refusals (empty, not 3-D) as :class:`ImageError`."""
    try:
        return Volume.from_array(data, **kwargs)
    except ValueError as exc:
        raise ImageError(str(exc), path) from exc


def _check_finite(data: np.ndarray, path: Path) -> None:
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise ImageError(f"non-finite pixel values ({bad} NaN or infinite voxels, or values "
                         "beyond the float32 range): a broken export?", path)


def _check_header(shape: tuple, dtype: np.dtype, slice_axis: int | None, path: Path,
                  what: str = "array") -> None:
    """Refuse an array from its header alone: wrong rank, empty, too large, odd dtype."""
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.shape:
        raise ImageError(f"{what} has dtype {dtype!s}: only bool, integer or float pixel "
                         "arrays are read (no structured, object, complex or text arrays)", path)
    if len(shape) != 3:
        raise ImageError(f"{what} of shape {shape} is not a 3-D volume", path)
    if any(n < 0 for n in shape):
        raise ImageError(f"{what} claims the impossible shape {shape}", path)
    if 0 in shape:
        raise ImageError(f"{what} of shape {shape} is empty: no slices or no pixels", path)
    n_voxels = int(np.prod(shape, dtype=object))
    if n_voxels > MAX_VOXELS:
        raise ImageError(f"{what} claims shape {shape} ({n_voxels} voxels): more than the "
                         f"{MAX_VOXELS} allowed for an MR volume", path)
    if slice_axis is not None and not -3 <= slice_axis < 3:
        raise ImageError(f"slice_axis {slice_axis} does not exist in a 3-D array", path)
    axis = int(np.argmin(shape)) if slice_axis is None else slice_axis % 3
    rows, cols = (shape[a] for a in range(3) if a != axis)
    if rows * cols > MAX_PIXELS:
        raise ImageError(f"{what} has slices of {rows}x{cols} pixels: too large for an MR "
                         "slice", path)


def _read_header(fp, path: Path, what: str) -> tuple[tuple, bool, np.dtype]:
    """Shape, Fortran order and dtype from a ``.npy`` stream, reading only the header."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ImageError(f"{what}: .npy format version {version} is not supported", path)
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype)


def _read_npy_stream(fp, path: Path, slice_axis: int | None, what: str,
                     available: int | None) -> np.ndarray:
    """Header check, then the data; ``available``: bytes after the header, where known."""
    shape, fortran, dtype = _read_header(fp, path, what)
    _check_header(shape, dtype, slice_axis, path, what)
    needed = int(np.prod(shape)) * dtype.itemsize
    offset = fp.tell()
    if available is not None and available - offset < needed:
        raise ImageError(f"{what} is truncated: shape {shape} of {dtype!s} needs {needed} "
                         f"bytes, the file holds {max(available - offset, 0)}", path)
    raw = bytearray(needed)  # writeable, so the Volume owns ordinary memory
    view, got = memoryview(raw), 0
    while got < needed:
        n = fp.readinto(view[got:])
        if not n:
            break
        got += n
    if got != needed:
        raise ImageError(f"{what} is truncated: shape {shape} of {dtype!s} needs {needed} "
                         f"bytes, got {got}", path)
    flat = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)))
    array = flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, refused by the caller
        return np.asarray(array, dtype=np.float32)


def _read_array_file(path: Path, key: str | None, slice_axis: int | None) -> np.ndarray:
    if path.suffix.lower() != ".npz" and not zipfile.is_zipfile(path):
        with open(path, "rb") as fp:
            return _read_npy_stream(fp, path, slice_axis, "array",
                                    available=path.stat().st_size)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename[:-4]: info for info in archive.infolist()
                   if info.filename.endswith(".npy")}
        name = key or ("image" if "image" in members else None)
        if name is None:
            three_d = []
            for member, info in members.items():
                try:
                    with archive.open(info) as fp:
                        if len(_read_header(fp, path, member)[0]) == 3:
                            three_d.append(member)
                except Exception:  # an unreadable member is no candidate; never guess past it
                    continue
            name = three_d[0] if len(three_d) == 1 else None
        if name is None or name not in members:
            raise ImageError(f"holds {sorted(members)}; say which array is the image", path)
        with archive.open(members[name]) as fp:
            return _read_npy_stream(fp, path, slice_axis, f"array {name!r}", available=None)


def is_array(path: str | PathLike) -> bool:
    return Path(path).suffix.lower() in ARRAY_SUFFIXES
