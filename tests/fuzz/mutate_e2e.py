"""End-to-end mutators: valid-looking volumes that must give a finite model input."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from tests.fuzz.mutate_common import _copy_series, _fresh, _lenient_pydicom
from tests.fuzz.mutate_dicom import HEADER_VALUES, _read, _save, _set_element
from tests.fuzz.mutate_images import _odd_array
from tests.fuzz.runner import SEED_BOX, FuzzInput
from tests.fuzz.seeds import Seeds

# ------------------------------------------------------------------------------ end to end

E2E_FAMILIES = ["e2e_values", "e2e_dicom", "e2e_shapes", "e2e_box", "e2e_center",
                "e2e_huge_box"]
#: boxes far larger than the 32x32 image (what a direct build_six_channel caller may pass)
HUGE_BOXES = [(-4000, -4000, 4000, 4000), (-2000, -2000, 6000, 6000), (0, 0, 12000, 12000),
              (-6000, 10, 6000, 20)]
BOXES = [SEED_BOX, (0, 0, 32, 32), (-10, -10, 5, 5), (30, 30, 40, 40), (0, 0, 1, 1),
         (16, 16, 16.5, 16.5), (1e4, 1e4, 1e4 + 5, 1e4 + 5), (24, 24, 8, 8), (31, 0, 32, 1),
         (-200, -200, 200, 200), (0.2, 0.2, 0.4, 0.4), (-1, -1, 33, 33)]


E2E_EXTRA = {
    "ImageOrientationPatient": ["0\\0.996195\\0.087156\\0\\0.087156\\-0.996195",
                                "1\\0\\0\\0\\0\\-1", "0\\0\\-1\\0\\1\\0"],
    "PixelSpacing": ["0.25\\0.25", "2\\0.5", "0.001\\0.001"],
    "RescaleSlope": ["-1", "1e-30", "3e38"],
}


def _shape_pair(kind: str, vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A T1/T2 array pair of odd but valid-looking shapes (``e2e_shapes``)."""
    a = vol.astype(np.float32)
    b = a[:, ::-1].copy()
    if kind == "tiny":
        a, b = a[:, :2, :2], b[:, :2, :2]
    elif kind == "one_row":
        a, b = a[:, :1, :], b[:, :1, :]
    elif kind == "two_slices":
        a, b = a[:2], b[:2]
    elif kind == "t2_bigger":
        b = np.repeat(np.repeat(b, 2, 1), 2, 2)
    elif kind == "t2_fewer":
        b = b[:4]
    else:
        a = np.repeat(a[:, :, :1], 32, 2)
    return a, b


def gen_e2e(family: str, seeds: Seeds, out: Path, rng: random.Random,
            tag: str) -> list[FuzzInput]:
    d = _fresh(out, f"{family}-{tag}")
    t2 = str(seeds.t2_dir)
    k, box = 2, SEED_BOX
    if family == "e2e_values":
        kind, arr = _odd_array(rng, seeds.volume)
        t1p = d / "t1.npy"
        np.save(t1p, arr)
        # an array carries no geometry: its T2 partner is an array too
        t2p = d / "t2.npy"
        np.save(t2p, seeds.volume.astype(np.float32)[:, ::-1].copy())
        t2 = str(t2p)
        k = rng.choice((0, 1, 2, arr.shape[0] - 1 if arr.ndim else 0))
        desc = f"T1 npy {kind} k={k}"
    elif family == "e2e_dicom":
        which = rng.choice(("T1", "T2"))
        folder, files = _copy_series(getattr(seeds, f"{which.lower()}_dir"), d, which.lower())
        keyword = rng.choice(("RescaleSlope", "RescaleIntercept", "PixelSpacing",
                              "ImagePositionPatient", "ImageOrientationPatient",
                              "PixelRepresentation", "PhotometricInterpretation"))
        value = rng.choice(HEADER_VALUES[keyword] + E2E_EXTRA.get(keyword, []))
        every = rng.random() < 0.6
        for f in (files if every else [rng.choice(files)]):
            ds = _read(f)
            try:
                with _lenient_pydicom():
                    _set_element(ds, keyword, value)
            except Exception:  # noqa: BLE001
                return []
            if not _save(ds, f):
                return []
        t1p = folder if which == "T1" else seeds.t1_dir
        if which == "T2":
            t2 = str(folder)
        desc = f"{which} DICOM {keyword}={value!r}{' (all)' if every else ''}"
    elif family == "e2e_shapes":
        kind = rng.choice(("tiny", "one_row", "two_slices", "t2_bigger", "t2_fewer", "flat"))
        a, b = _shape_pair(kind, seeds.volume)
        t1p, t2p = d / "t1.npy", d / "t2.npy"
        np.save(t1p, a)
        np.save(t2p, b)
        t2 = str(t2p)
        k = rng.choice((0, 1, 2))
        desc = f"shapes {kind} k={k}"
    elif family == "e2e_center":
        folder, files = _copy_series(seeds.t1_dir, d, "t1")
        value = rng.choice(HEADER_VALUES["PixelSpacing"] + ["0.001\\0.001", "100\\100"])
        for f in files:
            ds = _read(f)
            with _lenient_pydicom():
                _set_element(ds, "PixelSpacing", value)
            if not _save(ds, f):
                return []
        t1p = folder
        center = rng.choice(((16, 16), (0, 0), (-100, 50), (31.9, 31.9), (1e4, 1e4)))
        size_mm = rng.choice((None, 5.0, 50.0, 300.0, 12.0))
        names = (Path(t1p).name, Path(t2).name, "box")
        return [FuzzInput("e2e", family, "e2e", (str(t1p), t2), names,
                          f"PixelSpacing={value!r} centre {center} size_mm {size_mm}",
                          {"k": 2, "center": tuple(float(v) for v in center),
                           "size_mm": size_mm})]
    else:
        t1p = seeds.t1_dir
        box = rng.choice(BOXES if family == "e2e_box" else HUGE_BOXES)
        k = rng.choice((0, 1, 2, 5, 6, -1, 100) if family == "e2e_box" else (1, 2, 3))
        desc = f"box {box} k={k}"
    names = (Path(t1p).name, Path(t2).name, "box")
    return [FuzzInput("e2e", family, "e2e", (str(t1p), t2), names, desc,
                      {"k": k, "box": tuple(float(v) for v in box)})]


