"""Folder and path mutators: FIFOs, device links, symlink loops, odd study paths."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np

from tests.fuzz.mutate_common import _copy_series, _fresh
from tests.fuzz.mutate_dicom import _read, _save
from tests.fuzz.mutate_images import npy_with_header
from tests.fuzz.runner import FuzzInput
from tests.fuzz.seeds import Seeds

FOLDER_KINDS = ["fifo", "devzero_link", "symlink_loop", "dangling_link", "empty_file",
                "dir_named_dcm", "duplicate_file", "dicomdir", "nested_deep", "sparse_big",
                "mixed_matrix", "single", "only_junk", "link_to_parent", "empty_folder",
                "devzero_dcm_name"]


def gen_folder(family: str, seeds: Seeds, out: Path, rng: random.Random,
               tag: str) -> list[FuzzInput]:
    """Study folders that are odd as folders: devices, FIFOs, link loops, sparse giants."""
    folder, files = _copy_series(seeds.t1_dir, out, f"{family}-{tag}")
    kind = rng.choice(FOLDER_KINDS)
    if kind == "fifo":
        os.mkfifo(folder / "pipe.dcm")
    elif kind in ("devzero_link", "devzero_dcm_name"):
        (folder / ("zero.dcm" if kind == "devzero_dcm_name" else "zero")).symlink_to("/dev/zero")
    elif kind == "symlink_loop":
        (folder / "loop").symlink_to(folder)
    elif kind == "link_to_parent":
        (folder / "up").symlink_to("..")
    elif kind == "dangling_link":
        (folder / "gone.dcm").symlink_to(folder / "nowhere.dcm")
    elif kind == "empty_file":
        (folder / "empty.dcm").write_bytes(b"")
    elif kind == "dir_named_dcm":
        (folder / "sub.dcm").mkdir()
    elif kind == "duplicate_file":
        shutil.copy2(files[1], folder / "copy.dcm")
    elif kind == "dicomdir":
        (folder / "DICOMDIR").write_bytes(files[0].read_bytes()[:rng.randrange(400, 3000)])
    elif kind == "nested_deep":
        deep = folder.joinpath(*["d"] * 60)
        deep.mkdir(parents=True)
        shutil.move(str(files[0]), deep / files[0].name)
    elif kind == "sparse_big":
        with open(folder / "big.dcm", "wb") as fp:
            fp.write(files[0].read_bytes())
            fp.truncate(5 * 2**30)
    elif kind == "mixed_matrix":
        ds = _read(files[3])
        ds.Rows, ds.Columns = 16, 16
        ds.PixelData = np.zeros((16, 16), "<u2").tobytes()
        _save(ds, files[3])
    elif kind == "single":
        for f in files[1:]:
            f.unlink()
    elif kind == "only_junk":
        for f in files:
            f.write_bytes(bytes(rng.randrange(256) for _ in range(200)))
    else:
        for f in files:
            f.unlink()
    return [FuzzInput("dicom", family, t, (str(folder),), (folder.name,), kind)
            for t in ("scan", "load_series")]


SPECIAL_KINDS = ["npy_devzero", "nii_devzero", "png_devzero", "nii_fifo", "npy_fifo",
                 "npy_sparse", "missing", "empty_dir", "dcm_devzero"]


def gen_special_file(family: str, seeds: Seeds, out: Path, rng: random.Random,
                     tag: str) -> list[FuzzInput]:
    d = _fresh(out, f"{family}-{tag}")
    kind = rng.choice(SPECIAL_KINDS)
    ext = {"npy": "vol.npy", "nii": "vol.nii", "png": "slice.png", "dcm": "x.dcm"}
    path = d / ext.get(kind.split("_")[0], "thing")
    if kind.endswith("devzero"):
        path.symlink_to("/dev/zero")
    elif kind.endswith("fifo"):
        os.mkfifo(path)
    elif kind == "npy_sparse":
        with open(path, "wb") as fp:
            fp.write(npy_with_header("|u1", False, "(400, 4000, 3000)", b""))
            fp.truncate(400 * 4000 * 3000 + 128)
    elif kind == "empty_dir":
        path = d / "series"
        path.mkdir()
    return [FuzzInput("special", family, "load_volume", (str(path),), (path.name,), kind)]


def gen_study_path(family: str, seeds: Seeds, out: Path, rng: random.Random,
                   tag: str) -> list[FuzzInput]:
    """What scan_study / load_series are pointed at: nothing, a file, a device, a FIFO."""
    d = _fresh(out, f"{family}-{tag}")
    kind = rng.choice(("fifo", "devzero")) if family == "study_path_device" else rng.choice((
        "missing", "one_file", "empty_dir", "junk_file", "file_list", "dup_list"))
    path = d / "study"
    if kind == "one_file":
        shutil.copy2(next(iter(sorted(seeds.t1_dir.iterdir()))), path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "empty_dir":
        path.mkdir()
    elif kind == "junk_file":
        path.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    elif kind in ("file_list", "dup_list"):
        folder, files = _copy_series(seeds.t1_dir, d, "study")
        chosen = files[:3] if kind == "file_list" else [files[0]] * 3 + [d / "nowhere.dcm"]
        return [FuzzInput("dicom", family, t, (), (folder.name, "nowhere.dcm"), kind,
                          {"list": [str(f) for f in chosen]}) for t in ("scan", "load_series")]
    return [FuzzInput("dicom", family, t, (str(path),), (path.name,), kind)
            for t in ("scan", "load_series")]


