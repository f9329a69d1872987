"""Bad files from a real archive: every failure an ImageError/RoiError naming the file and the
problem, every repair a SpineFXWarning, never a silently wrong result (issue "Safe on a real
archive", items 6, 7, 8, 10, 11)."""
from __future__ import annotations

import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from spinefx.runtime import ImageError, RoiError, SpineFXWarning, images, read_image
from spinefx.runtime.images import load_array_volume, load_nifti
from spinefx.runtime.matching import align_pair
from spinefx.runtime.preprocess import build_six_channel
from spinefx.runtime.volume import Volume


def _volume_data(shape=(5, 40, 32), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 100


def _textured(n=5, rows=64, cols=64, seed=0):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    base = 300 + 200 * np.sin(r / 7.0) * np.cos(c / 9.0)
    data = np.stack([base + 40 * i + rng.normal(0, 15, (rows, cols)) for i in range(n)])
    return Volume.from_array(data.astype(np.float32), pixel_spacing=(0.5, 0.5),
                             slice_spacing=4.0)


def _npy_header(shape, descr="<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


# --- item 6: .npy / .npz ----------------------------------------------------------------------
def test_npy_volume_loads(tmp_path):
    data = _volume_data()
    np.save(tmp_path / "v.npy", data)
    vol = load_array_volume(tmp_path / "v.npy", "T1")
    assert vol.shape == (5, 40, 32) and vol.weighting == "T1"
    np.testing.assert_array_equal(vol.data, data)
    vol.data[0, 0, 0] = 1.0  # ordinary writeable memory
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    np.testing.assert_array_equal(load_array_volume(tmp_path / "f.npy").data, data)


def test_truncated_and_corrupt_npz_are_image_errors(tmp_path):
    np.savez_compressed(tmp_path / "ok.npz", image=_volume_data())
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="cut.npz"):
        load_array_volume(tmp_path / "cut.npz")
    flipped = bytearray(raw)
    for i in range(200, 400):
        flipped[i] ^= 0x5A
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(ImageError, match="flip.npz"):
        load_array_volume(tmp_path / "flip.npz")
    np.save(tmp_path / "v.npy", _volume_data())
    raw = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-100])
    with pytest.raises(ImageError, match=r"cut.npy.*truncated"):
        load_array_volume(tmp_path / "cut.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ImageError, match="junk.npy"):
        load_array_volume(tmp_path / "junk.npy")


def test_odd_dtypes_and_empty_arrays_are_refused(tmp_path):
    structured = np.zeros((4, 20, 20), dtype=[("a", "<f4"), ("b", "<i2")])
    np.savez(tmp_path / "rec.npz", image=structured)
    with pytest.raises(ImageError, match=r"rec.npz.*dtype"):
        load_array_volume(tmp_path / "rec.npz")
    np.save(tmp_path / "cplx.npy", _volume_data().astype(np.complex64))
    with pytest.raises(ImageError, match=r"cplx.npy.*dtype"):
        load_array_volume(tmp_path / "cplx.npy")
    (tmp_path / "neg.npy").write_bytes(_npy_header((-4, 20, 20)) + b"\0" * 64)
    with pytest.raises(ImageError, match=r"neg.npy.*impossible shape"):
        load_array_volume(tmp_path / "neg.npy")
    np.savez(tmp_path / "empty.npz", image=np.zeros((0, 20, 20), np.float32))
    with pytest.raises(ImageError, match=r"empty.npz.*empty"):
        load_array_volume(tmp_path / "empty.npz")


def test_huge_claimed_shape_is_refused_from_the_header(tmp_path):
    shape = (100_000, 100_000, 100_000)
    assert np.prod(shape, dtype=object) > getattr(images, "MAX_VOXELS", 512 * 2**20)
    (tmp_path / "huge.npy").write_bytes(_npy_header(shape) + b"\0" * 64)
    with pytest.raises(ImageError, match=r"huge.npy.*voxels"):
        load_array_volume(tmp_path / "huge.npy")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("image.npy", _npy_header(shape) + b"\0" * 64)
    with pytest.raises(ImageError, match=r"huge.npz.*voxels"):
        load_array_volume(tmp_path / "huge.npz")
    (tmp_path / "wide.npy").write_bytes(_npy_header((2, 8192, 8192), "|u1"))
    with pytest.raises(ImageError, match=r"wide.npy.*too large"):
        load_array_volume(tmp_path / "wide.npy")


@pytest.mark.parametrize("name", ["v.npz", "v.npy", "v.png", "v.tif"])
def test_mutated_files_fail_only_as_image_errors(tmp_path, name):
    data = _volume_data((3, 40, 32))
    src = tmp_path / name
    if name == "v.npz":
        np.savez_compressed(src, image=data)
    elif name == "v.npy":
        np.save(src, data)
    else:
        Image.fromarray(data[0].astype(np.uint16 if name == "v.png" else np.float32)).save(src)
    load = load_array_volume if name.startswith("v.np") else read_image
    raw, rng = src.read_bytes(), np.random.default_rng(7)
    for trial in range(40):
        mutated = bytearray(raw[: int(rng.integers(0, len(raw)))] if trial % 2 else raw)
        for _ in range(int(rng.integers(1, 6))):
            mutated[int(rng.integers(0, min(len(mutated), 300)))] = int(rng.integers(0, 256))
        bad = tmp_path / f"m{trial}_{name}"
        bad.write_bytes(bytes(mutated))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                load(bad)
            except ImageError as exc:
                assert bad.name in str(exc)
        assert all(issubclass(w.category, SpineFXWarning) for w in caught), \
            [str(w.message) for w in caught]


# --- item 7: empty volumes ----------------------------------------------------------------------
def test_empty_nifti_and_volume_are_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((0, 32, 32), np.float32), np.eye(4)),
             str(tmp_path / "none.nii.gz"))
    with pytest.raises(ImageError, match=r"none.nii.gz.*empty"):
        load_nifti(tmp_path / "none.nii.gz")
    with pytest.raises(ValueError, match="empty"):
        Volume.from_array(np.zeros((0, 16, 16)))


def test_nifti_claiming_huge_slices_is_refused_before_reading_its_data(tmp_path):
    """Under the whole-volume bound (2 x 8192^2 voxels) but each slice far above MAX_PIXELS:
    refused from the header, before nibabel is asked for the (absent) data."""
    nib = pytest.importorskip("nibabel")
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((2, 8192, 8192))
    path = tmp_path / "wide.nii"
    with open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + b"\1" * 64)  # vox_offset 352, no data
    with pytest.raises(ImageError, match=r"wide.nii.*slices of 67108864 pixels"):
        load_nifti(path)


# --- item 8: decompression bombs ----------------------------------------------------------------
def _png_claiming(path, width, height):
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(path)
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"IHDR"
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("size", [30000, 10000, 5000])
def test_png_claiming_a_huge_size_is_an_image_error(tmp_path, size):
    path = tmp_path / f"bomb{size}.png"
    _png_claiming(path, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither Pillow's warning nor its error escapes
        with pytest.raises(ImageError, match=f"bomb{size}.png.*too large"):
            read_image(path)


# --- item 10: silent wrong results ----------------------------------------------------------------
def test_palette_png_is_converted_through_its_palette(tmp_path):
    index = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    im = Image.fromarray(index, mode="P")
    im.putpalette([v for i in range(256) for v in (255 - i,) * 3])  # index i -> grey 255 - i
    im.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    with pytest.warns(SpineFXWarning, match="palette"):
        img = read_image(tmp_path / "pal.png")
    np.testing.assert_allclose(img, 255.0 - index, atol=0.01)


def test_non_finite_pixels_are_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    data = _volume_data()
    data[2, 10, 10] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(ImageError, match=r"nan.npy.*non-finite"):
        load_array_volume(tmp_path / "nan.npy")
    np.save(tmp_path / "big.npy", _volume_data().astype(np.float64) * 1e300)  # inf as float32
    with pytest.raises(ImageError, match=r"big.npy.*non-finite"):
        load_array_volume(tmp_path / "big.npy")
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(ImageError, match=r"nan.nii.gz.*non-finite"):
        load_nifti(tmp_path / "nan.nii.gz")
    plane = _volume_data((1, 40, 32))[0]
    plane[5, 5] = np.inf
    Image.fromarray(plane, mode="F").save(tmp_path / "inf.tif")
    with pytest.raises(ImageError, match=r"inf.tif.*non-finite"):
        read_image(tmp_path / "inf.tif")


def test_nan_inside_the_roi_never_reaches_the_model():
    t1, t2 = _textured(seed=1), _textured(seed=2)
    bad = t1.data.copy()
    bad[2, 30, 30] = np.nan
    with pytest.raises(RoiError, match=r"T1 slice 2 has 1 non-finite"):
        build_six_channel(align_pair(t1.with_data(bad), t2), 2, box=(20, 20, 40, 40))
    bad = t2.data.copy()
    bad[3, 30, 30] = np.inf  # a neighbour's T2: refused, not replaced by the lesion slice
    with pytest.raises(RoiError, match=r"T2 slice matched to T1 slice 3.*present"):
        build_six_channel(align_pair(t1, t2.with_data(bad)), 2, box=(20, 20, 40, 40))
    # NaN outside the ROI is not fed to the model and is no reason to refuse
    bad = t1.data.copy()
    bad[2, 0, 0] = np.nan
    out = build_six_channel(align_pair(t1.with_data(bad), t2), 2, box=(20, 20, 40, 40))
    assert np.isfinite(out.array).all()


# --- item 11: messages that say what is wrong --------------------------------------------------
def test_nan_t2_slice_is_not_reported_as_missing():
    t1, t2 = _textured(seed=3), _textured(seed=4)
    bad = t2.data.copy()
    bad[2] = np.nan
    t2 = t2.with_data(bad, description="T2 SAG TSE")
    with pytest.raises(RoiError) as info:
        build_six_channel(align_pair(t1, t2), 2, box=(20, 20, 40, 40))
    message = str(info.value)
    assert "no T2 slice at the same position" not in message
    assert "no finite pixels" in message and "T2 SAG TSE" in message


def test_all_nan_t1_slice_is_not_reported_as_outside():
    t1, t2 = _textured(seed=5), _textured(seed=6)
    bad = t1.data.copy()
    bad[2] = np.nan
    t1 = t1.with_data(bad, description="T1 SAG", source="/archive/t1")
    with pytest.raises(RoiError) as info:
        build_six_channel(align_pair(t1, t2), 2, box=(20, 20, 40, 40))
    message = str(info.value)
    assert "outside" not in message
    assert "T1 slice 2 has no finite pixels" in message
    assert "T1 SAG" in message and "/archive/t1" in message


def test_preprocess_errors_name_the_series():
    flat = Volume.from_array(np.full((5, 40, 40), 7.0)).with_data(
        np.full((5, 40, 40), 7.0, np.float32), description="T1 FLAT", source="/archive/flat")
    with pytest.raises(RoiError, match=r"/archive/flat.*T1 FLAT.*contrast"):
        build_six_channel(align_pair(flat, _textured(n=5, rows=40, cols=40)), 2,
                          box=(5, 5, 20, 20))


def test_cmyk_jpeg_is_not_called_blank(tmp_path):
    grey = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    cmyk = np.stack([np.zeros_like(grey)] * 3 + [255 - grey], axis=-1)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    with pytest.raises(ImageError, match=r"cmyk.jpg.*CMYK colour JPEG") as info:
        read_image(tmp_path / "cmyk.jpg")
    assert "blank" not in str(info.value)
