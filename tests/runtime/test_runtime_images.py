"""Plain image slices (PNG/JPEG/TIFF) and NIfTI volumes."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from PIL import Image

from spinefx.runtime import (
    ImageError,
    SpineFXWarning,
    load_image_slices,
    load_nifti,
    load_volume,
    read_image,
)


def _pattern(rows=40, cols=32, hi=255, seed=0):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    img = (hi * (0.5 + 0.4 * np.sin(r / 5.0) * np.cos(c / 4.0))) + rng.normal(0, hi * 0.02,
                                                                             (rows, cols))
    return np.clip(np.round(img), 0, hi)


def test_16bit_png_keeps_full_range(tmp_path):
    arr = _pattern(hi=4000).astype(np.uint16)
    arr[0, 0] = 4095
    path = tmp_path / "t1_16bit.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == arr.shape
    np.testing.assert_array_equal(img, arr.astype(np.float32))
    assert img.max() == 4095  # not squeezed to 8 bits


def test_8bit_jpeg(tmp_path):
    arr = _pattern().astype(np.uint8)
    path = tmp_path / "slice.jpg"
    Image.fromarray(arr).save(path, quality=95)
    img = read_image(path)
    assert img.shape == arr.shape
    assert np.abs(img - arr).mean() < 3.0  # JPEG is lossy


@pytest.mark.parametrize("dtype,mode", [(np.uint16, "I;16"), (np.float32, "F"), (np.uint8, "L")])
def test_tiff(tmp_path, dtype, mode):
    arr = (_pattern(hi=3000) if dtype != np.uint8 else _pattern()).astype(dtype)
    path = tmp_path / "slice.tif"
    Image.fromarray(arr).save(path)
    img = read_image(path)
    np.testing.assert_array_equal(img, arr.astype(np.float32))


def test_multipage_tiff_warns_and_uses_first(tmp_path):
    pages = [Image.fromarray(_pattern(seed=s).astype(np.uint8)) for s in range(3)]
    path = tmp_path / "stack.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.warns(SpineFXWarning, match="3 frames"):
        img = read_image(path)
    np.testing.assert_array_equal(img, np.asarray(pages[0], dtype=np.float32))


def test_grey_rgb_silent_colour_warns(tmp_path):
    grey = _pattern().astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpineFXWarning)
        np.testing.assert_allclose(read_image(tmp_path / "grey_rgb.png"), grey, atol=1e-3)
    colour = np.stack([grey, grey // 2, 255 - grey], axis=-1).astype(np.uint8)
    Image.fromarray(colour).save(tmp_path / "overlay.png")
    with pytest.warns(SpineFXWarning, match="colour") as rec:
        img = read_image(tmp_path / "overlay.png")
    assert "overlay.png" in str(rec[0].message)
    expected = colour.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(img, expected, atol=1e-3)


def test_blank_image_errors(tmp_path):
    Image.fromarray(np.full((40, 40), 17, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(ImageError) as info:
        read_image(tmp_path / "blank.png")
    assert "blank.png" in str(info.value) and "blank" in info.value.problem


def test_text_file_renamed_png(tmp_path):
    path = tmp_path / "report.png"
    path.write_text("Findings: L1 compression fracture.\n")
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert "report.png" in str(info.value) and "not a readable image" in str(info.value)
    assert info.value.path == path


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_pattern(200, 200).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(path)


def test_huge_image_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (5000, 4000)).save(path)  # 20 MP of zeros: tiny on disk
    t = time.perf_counter()
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert time.perf_counter() - t < 1.0
    assert "huge.png" in str(info.value) and "5000x4000" in str(info.value)


def test_tiny_image_and_missing_file(tmp_path):
    Image.fromarray(_pattern(8, 8).astype(np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="tiny.png"):
        read_image(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "absent.png")


def _write_slices(folder, shapes, seed=0):
    paths = []
    for i, shape in enumerate(shapes):
        p = folder / f"s{i}.png"
        Image.fromarray(_pattern(*shape, seed=seed + i).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("as_str", [False, True])
def test_mismatched_sizes_name_the_odd_slice(tmp_path, as_str):
    paths = _write_slices(tmp_path, [(40, 32), (40, 32), (48, 32), (40, 32)])
    if as_str:
        paths = [str(p) for p in paths]
    with pytest.raises(ImageError) as info:
        load_image_slices(paths, "T1")
    msg = str(info.value)
    assert "s2.png" in msg
    assert "(48, 32)" in msg and "(40, 32)" in msg


def test_load_image_slices_volume(tmp_path):
    paths = _write_slices(tmp_path, [(40, 32)] * 3)
    vol = load_image_slices(paths, "T2", pixel_spacing=(0.7, 0.7), slice_spacing=3.5)
    assert vol.shape == (3, 40, 32) and vol.weighting == "T2"
    assert vol.spacing_known and vol.pixel_spacing == (0.7, 0.7)
    assert vol.slice_spacing == pytest.approx(3.5)
    assert vol.slice_sources == tuple(str(p) for p in paths)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(vol.data[i], read_image(p))
    guess = load_image_slices(paths, "T2")
    assert not guess.spacing_known and guess.pixel_spacing == (1.0, 1.0)
    with pytest.raises(ImageError, match="no image files"):
        load_image_slices([], "T1")
    single = load_volume(paths[0], "T1")
    assert single.shape == (1, 40, 32) and single.weighting == "T1"
    with pytest.raises(ImageError, match="no such file"):
        load_volume(tmp_path / "nothing_here")


# ---------------------------------------------------------------------------------------------
# NIfTI written here, in an awkward orientation
# ---------------------------------------------------------------------------------------------
def _awkward_nifti(path, shape=(30, 20, 25)):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(5)
    data = rng.integers(0, 1000, shape).astype(np.int16)
    # voxel i -> inferior (-z) 1.5 mm, j -> right (+x) 0.8 mm, k -> posterior (-y in RAS) 1.2 mm
    affine = np.array([[0.0, 0.8, 0.0, -10.0],
                       [0.0, 0.0, -1.2, 40.0],
                       [-1.5, 0.0, 0.0, 60.0],
                       [0.0, 0.0, 0.0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return data, affine


def test_nifti_awkward_orientation_resliced_sagittal(tmp_path):
    path = tmp_path / "odd.nii.gz"
    data, affine = _awkward_nifti(path)
    vol = load_nifti(path, "T1")
    assert vol.plane == "sagittal"
    assert vol.shape == (20, 30, 25)  # slices along j (x), rows along i (z), columns along k (y)
    assert vol.pixel_spacing == pytest.approx((1.5, 1.2))
    assert vol.slice_spacing == pytest.approx(0.8)
    assert vol.row_direction[1] > 0.99 and vol.column_direction[2] < -0.99
    inv = np.linalg.inv(affine)
    rng = np.random.default_rng(0)
    for _ in range(300):
        s, r, c = (int(rng.integers(0, n)) for n in vol.shape)
        ras = vol.pixel_to_patient(s, r, c) * np.array([-1.0, -1.0, 1.0])
        ijk = np.round(inv[:3, :3] @ ras + inv[:3, 3]).astype(int)
        assert vol.data[s, r, c] == data[tuple(ijk)]
    assert load_volume(path, "T1").shape == vol.shape  # dispatch by suffix


def test_nifti_4d_and_garbage(tmp_path):
    nib = pytest.importorskip("nibabel")
    one = np.random.default_rng(1).random((10, 12, 14, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(one, np.eye(4)), str(tmp_path / "one.nii"))
    assert load_nifti(tmp_path / "one.nii").n_slices == 10
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 14, 3), np.float32), np.eye(4)),
             str(tmp_path / "four.nii"))
    with pytest.raises(ImageError, match="four.nii"):
        load_nifti(tmp_path / "four.nii")
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all" * 20)
    with pytest.raises(ImageError, match="junk.nii.gz"):
        load_nifti(tmp_path / "junk.nii.gz")


# --- numpy volumes (.npy / .npz) ---------------------------------------------------------------
def test_npz_volume_slices_along_the_shortest_axis(tmp_path):
    from spinefx.runtime import load_volume

    data = np.random.default_rng(0).random((40, 30, 5)).astype(np.float32)
    np.savez(tmp_path / "v.npz", image=data, labels=np.zeros((40, 30, 5), np.uint8))
    vol = load_volume(tmp_path / "v.npz", "T1")
    assert vol.shape == (5, 40, 30) and not vol.spacing_known
    np.testing.assert_array_equal(vol.data[2], data[:, :, 2])


def test_pickled_npz_is_refused_not_unpickled(tmp_path):
    from spinefx.runtime.images import load_array_volume

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError, match="obj.npy"):
        load_array_volume(tmp_path / "obj.npy")
    np.savez(tmp_path / "two.npz", a=np.ones((4, 4, 4)), b=np.ones((4, 4, 4)))
    with pytest.raises(ImageError, match="say which array"):
        load_array_volume(tmp_path / "two.npz")
