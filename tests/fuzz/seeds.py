"""Small valid seed inputs of every kind (DICOM series, images, NIfTI, npy, manifest)."""
from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from tests.fuzz.runner import COLS, N_SLICES, ROWS
from tests.helpers.dicom import stack_positions, write_enhanced, write_series

# ------------------------------------------------------------------------------------ seeds


@dataclass
class Seeds:
    root: Path
    t1_dir: Path
    t2_dir: Path
    png16: Path
    png8: Path
    tiff: Path
    jpeg: Path
    nifti: Path
    npy: Path
    npz: Path
    manifest: Path
    volume: np.ndarray
    enhanced_dir: Path | None = None
    codec_dirs: dict = field(default_factory=dict)


def _volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:N_SLICES, 0:ROWS, 0:COLS]
    blob = 1500 * np.exp(-((y - 16) ** 2 + (x - 16) ** 2) / 60.0) + 40 * z
    return (blob + rng.integers(0, 200, blob.shape)).astype(np.uint16)


def make_seeds(root: str | os.PathLike) -> Seeds:
    """Small valid inputs of every kind (milliseconds): the fuzzers mutate copies of these."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vol = _volume()
    study_uid, for_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    pos = stack_positions(N_SLICES, 4.0)
    write_series(root / "t1", vol, positions=pos, study_uid=study_uid, for_uid=for_uid,
                 description="SAG T1 TSE", tr=500.0, te=10.0, series_number=1)
    write_series(root / "t2", (vol[:, ::-1] // 2).copy(), positions=pos, study_uid=study_uid,
                 for_uid=for_uid, description="SAG T2 TSE", tr=3000.0, te=100.0,
                 series_number=2)
    img16 = vol[2]
    Image.fromarray(img16.astype(np.uint16)).save(root / "slice16.png")
    img8 = (img16 / img16.max() * 255).astype(np.uint8)
    Image.fromarray(img8).save(root / "slice8.png")
    Image.fromarray(img8).save(root / "slice.tif")
    Image.fromarray(img8).save(root / "slice.jpg", quality=90)
    import nibabel as nib
    nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)).astype(np.float32), np.eye(4)),
             str(root / "vol.nii"))
    np.save(root / "vol.npy", vol.astype(np.float32))
    np.savez(root / "vol.npz", image=vol.astype(np.float32))
    (root / "manifest.csv").write_text(manifest_text(_seed_rows()))
    write_enhanced(root / "enh" / "enh.dcm", vol, pos)
    codec_dirs = {}
    for uid in CODEC_UIDS:  # RLE, JPEG-LS, JPEG 2000: the decoders are native code
        d = root / f"codec-{uid}"
        d.mkdir()
        try:
            for f in sorted((root / "t1").iterdir()):
                ds = pydicom.dcmread(f)
                ds.compress(uid)
                ds.save_as(d / f.name)
        except Exception:  # noqa: BLE001 - an encoder that is not installed: no such seed
            shutil.rmtree(d)
            continue
        codec_dirs[uid] = d
    return Seeds(root, root / "t1", root / "t2", root / "slice16.png", root / "slice8.png",
                 root / "slice.tif", root / "slice.jpg", root / "vol.nii", root / "vol.npy",
                 root / "vol.npz", root / "manifest.csv", vol, root / "enh", codec_dirs)


CODEC_UIDS = ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90")


MANIFEST_COLUMNS = ["case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1",
                    "box_y1", "center_x", "center_y", "size_mm", "level", "patient_id"]


def _seed_rows() -> list[dict]:
    return [
        {"case_id": "c1", "label": "benign", "t1": "t1", "t2": "t2", "slice": "2",
         "box_x0": "8", "box_y0": "8", "box_x1": "24", "box_y1": "24", "center_x": "",
         "center_y": "", "size_mm": "", "level": "L1", "patient_id": "p1"},
        {"case_id": "c2", "label": "malignant", "t1": "t1", "t2": "t2", "slice": "3",
         "box_x0": "", "box_y0": "", "box_x1": "", "box_y1": "", "center_x": "16",
         "center_y": "16", "size_mm": "12", "level": "L2", "patient_id": "p2"},
    ]


def manifest_text(rows: list[dict], columns: list[str] = MANIFEST_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


