"""Real human spine MRI from ../shared/data/real-spine (skipped cleanly when absent).

No file there carries a benign/malignant label: these tests exercise I/O, ROI tooling and
input assembly on real anatomy, never the classifier."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinefx.runtime import (
    ImageError,
    SpineFXWarning,
    Volume,
    align_pair,
    build_six_channel,
    load_image_slices,
    load_nifti,
    read_image,
)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def slices_dir(real_spine) -> Path:
    return real_spine / "spinesource" / "slices"


def _exam(slices_dir: Path, exam: str) -> list[Path]:
    files = [p for p in slices_dir.glob(f"{exam}_*.png") if re.fullmatch(rf"{exam}_\d+", p.stem)]
    return sorted(files, key=lambda p: int(p.stem.rsplit("_", 1)[1]))


# ---------------------------------------------------------------------------------------------
# PNG slices
# ---------------------------------------------------------------------------------------------
def test_f02_8bit_grey_png(slices_dir):
    path = slices_dir / "F02_8.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpineFXWarning)
        img = read_image(path)
    ref = np.asarray(Image.open(path))
    assert ref.ndim == 2 and ref.dtype == np.uint8
    assert img.shape == (768, 768) and img.dtype == np.float32
    np.testing.assert_array_equal(img, ref.astype(np.float32))
    vol = load_image_slices(_exam(slices_dir, "F02")[:5], "T2")
    assert vol.shape == (5, 768, 768) and vol.weighting == "T2"
    assert not vol.spacing_known and vol.plane == "sagittal"


def test_aka3_rgba_grey_png_loads_without_colour_warning(slices_dir):
    path = slices_dir / "AKa3_7.png"
    raw = np.asarray(Image.open(path))
    assert raw.shape == (512, 512, 4)
    assert np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpineFXWarning)
        img = read_image(path)
    assert img.shape == (512, 512)
    np.testing.assert_allclose(img, raw[..., 0].astype(np.float32), atol=1e-3)


def test_broken_strip_aks3_is_named(slices_dir):
    strip = slices_dir / "AKS3_0.png"
    raw = np.asarray(Image.open(strip))
    assert raw.shape == (512, 142, 4)  # a 142 x 512 strip, and (it turns out) all black
    with pytest.raises(ImageError) as info:
        read_image(strip)
    assert "AKS3_0.png" in str(info.value) and "blank" in str(info.value)
    with pytest.raises(ImageError, match="AKS3_0.png"):  # inside a series too
        load_image_slices([slices_dir / "AKS7_1.png", str(strip), slices_dir / "AKS7_2.png"],
                          "STIR")


def _info_boxes(real_spine: Path, exam: str) -> list[tuple[int, tuple[int, int, int, int]]]:
    rows = []
    for line in (real_spine / "spinesource" / "info.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        m = re.fullmatch(rf"Slices/{exam}_(\d+)\.png", parts[0])
        if m:
            x, y, w, h = (int(v) for v in parts[2:])
            rows.append((int(m.group(1)), (x, y, x + w, y + h)))
    return rows


def test_info_box_input_from_three_png_slices(real_spine, slices_dir):
    rows = _info_boxes(real_spine, "AKa3")
    assert len(rows) > 50
    k, box = next((k, b) for k, b in rows if k == 7)
    t1 = load_image_slices([slices_dir / f"AKa3_{i}.png" for i in (k - 1, k, k + 1)], "T1")
    t2 = load_image_slices([slices_dir / f"AKs5_{i}.png" for i in (k - 1, k, k + 1)], "T2")
    assert t1.shape == t2.shape == (3, 512, 512)
    mi = build_six_channel(align_pair(t1, t2), 1, box=box)
    assert mi.array.shape == (6, 224, 224) and mi.array.dtype == np.float32
    assert np.isfinite(mi.array).all() and 0 <= mi.array.min() and mi.array.max() <= 1
    x0, y0, x1, y1 = mi.roi
    assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]
    assert x1 - x0 == y1 - y0
    # the six channels are really different images (three slices, two sequences)
    assert not np.array_equal(mi.array[0], mi.array[1])
    assert not np.array_equal(mi.array[1], mi.array[4])
    assert np.corrcoef(mi.array[1].ravel(), mi.array[0].ravel())[0, 1] > 0.5  # neighbours


def test_every_info_box_on_aka3(real_spine, slices_dir):
    t1 = load_image_slices(_exam(slices_dir, "AKa3"), "T1")
    t2 = load_image_slices(_exam(slices_dir, "AKs5"), "T2")
    assert t1.shape == t2.shape == (15, 512, 512)
    built = 0
    for k, box in _info_boxes(real_spine, "AKa3"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpineFXWarning)  # k = 0 / 14 replicate an edge
            mi = build_six_channel(align_pair(t1, t2), k, box=box, config=_small())
        assert mi.array.shape == (6, 64, 64)
        assert np.isfinite(mi.array).all() and mi.array.max() <= 1 and mi.array.min() >= 0
        x0, y0, x1, y1 = mi.roi
        assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]
        built += 1
    assert built == len(_info_boxes(real_spine, "AKa3"))


def _small():
    from spinefx.runtime import PreprocessConfig
    return PreprocessConfig(image_size=64)


# ---------------------------------------------------------------------------------------------
# DzZ T1/T2 pair with vertebral-body labels
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dzz(real_spine):
    out = {}
    for name in ("t1", "t2"):
        with np.load(real_spine / f"dzz_{name}.npz", allow_pickle=False) as z:
            out[name] = (z["image"], z["vertebral_bodies"])
    return out


def test_dzz_arrays_as_documented(dzz):
    for image, labels in dzz.values():
        assert image.shape == labels.shape == (351, 351, 50)
        assert image.dtype == np.uint8 and labels.dtype == np.uint8
        assert set(np.unique(labels)) == set(range(10))


@pytest.mark.parametrize("label", range(1, 10))
def test_dzz_six_channel_input_for_every_vertebral_body(dzz, label):
    t1_img, t1_lab = dzz["t1"]
    t2_img, _ = dzz["t2"]
    # axis 2 is the sagittal slice axis -> (slices, rows, cols)
    t1 = Volume.from_array(np.moveaxis(t1_img, 2, 0), pixel_spacing=(1.0, 1.0), slice_spacing=1.0,
                           weighting="T1")
    t2 = Volume.from_array(np.moveaxis(t2_img, 2, 0), pixel_spacing=(1.0, 1.0), slice_spacing=1.0,
                           weighting="T2")
    mask = np.moveaxis(t1_lab == label, 2, 0)
    present = np.flatnonzero(mask.any(axis=(1, 2)))
    k = int(present[len(present) // 2])  # the body's centre slice
    assert 0 < k < t1.n_slices - 1
    ys, xs = np.nonzero(mask[k])
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpineFXWarning)  # an inner slice: nothing to repair
        mi = build_six_channel(align_pair(t1, t2), k, box=box)
    assert mi.array.shape == (6, 224, 224) and mi.array.dtype == np.float32
    assert np.isfinite(mi.array).all() and mi.array.min() >= 0 and mi.array.max() <= 1
    assert mi.slices == (k - 1, k, k + 1)
    x0, y0, x1, y1 = mi.roi
    assert x1 - x0 == y1 - y0
    # the ROI contains the whole mask of the body on its centre slice...
    assert x0 <= xs.min() and y0 <= ys.min() and x1 >= xs.max() + 1 and y1 >= ys.max() + 1
    # ...and is tight around it (smallest square + 15 % margin): the body fills a good part
    side = x1 - x0
    assert side <= 1.3 * max(np.ptp(xs) + 1, np.ptp(ys) + 1) + 2
    assert mask[k].sum() / side ** 2 > 0.2


def test_dzz_t1_t2_share_one_grid(dzz):
    """T1 and T2 label maps number the bodies differently but outline the same vertebrae."""
    _, t1_lab = dzz["t1"]
    _, t2_lab = dzz["t2"]
    for label in range(1, 10):
        a = t1_lab == label
        overlaps = np.bincount(t2_lab[a], minlength=10)
        best = int(np.argmax(overlaps[1:]) + 1)
        b = t2_lab == best
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.7, f"T1 label {label}: best T2 label {best}, Dice {dice:.2f}"


# ---------------------------------------------------------------------------------------------
# NIfTI (spinalcordtoolbox test data)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["t1w.nii.gz", "t2.nii.gz", "t2_seg-manual_labeled.nii.gz"])
def test_nifti_loads_sagittal_consistent_with_affine(real_spine, name):
    nib = pytest.importorskip("nibabel")
    path = real_spine / "sct" / name
    img = nib.load(str(path))
    ref = np.asarray(img.dataobj, dtype=np.float64)
    vol = load_nifti(path, "T2")
    assert vol.plane == "sagittal" and vol.weighting == "T2"
    assert sorted(vol.shape) == sorted(ref.shape)
    assert vol.pixel_spacing == pytest.approx((1.0, 1.0))
    assert vol.slice_spacing == pytest.approx(1.0)
    # convention: columns run anterior->posterior (+y in LPS), rows superior->inferior (-z)
    assert vol.row_direction[1] > 0.9 and vol.column_direction[2] < -0.9
    assert np.all(np.diff(vol.slice_coordinates) > 0)
    inv = np.linalg.inv(img.affine)
    rng = np.random.default_rng(42)
    s = rng.integers(0, vol.shape[0], 200)
    r = rng.integers(0, vol.shape[1], 200)
    c = rng.integers(0, vol.shape[2], 200)
    for si, ri, ci in zip(s, r, c):
        lps = vol.pixel_to_patient(int(si), ri, ci)
        ras = lps * np.array([-1.0, -1.0, 1.0])
        ijk = inv[:3, :3] @ ras + inv[:3, 3]
        assert np.allclose(ijk, np.round(ijk), atol=1e-3), "pixel centre is not a voxel centre"
        i, j, k = np.round(ijk).astype(int)
        assert vol.data[si, ri, ci] == pytest.approx(ref[i, j, k])
    if "seg" not in name:
        assert vol.data.std() > 0
