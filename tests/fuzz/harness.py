"""Fuzz harness for spinefx.runtime's readers: seeds, mutators, a sandboxed runner.

The contract (README, "Reading MRI"): every failure on bad input is a ``SpineFXError`` whose
message names the file (or manifest line) and the problem. Nothing else may escape (no other
exception, no ``BaseException`` such as pyo3's ``PanicException``), no input may hang past a
time limit or allocate past a memory bound, and no NaN/inf may reach the model input.

Each input runs in a forked child with ``RLIMIT_AS`` (default 3 GiB) and a wall-clock timeout,
so a hang or a huge allocation is reported as a finding, not a stuck test. An outcome is
``ok``, ``error`` (a ``SpineFXError`` naming the file) or ``finding`` (anything else).

Used by tests/fuzz/test_fuzz.py (bounded, fixed seeds) and benchmarks/fuzz.py (the long run).
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import struct
import time
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from PIL import Image
from pydicom import config as dcm_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement

from spinefx.runtime import (
    align_pair,
    build_six_channel,
    load_series,
    load_volume,
    prepare_case,
    read_manifest,
    scan_study,
)
from spinefx.runtime.errors import SpineFXError
from tests.helpers.dicom import stack_positions, write_enhanced, write_series

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEM_BYTES = 3 * 2**30
N_SLICES, ROWS, COLS = 6, 32, 32
SEED_BOX = (8.0, 8.0, 24.0, 24.0)


# ----------------------------------------------------------------------------------- cases


@dataclass
class FuzzInput:
    """One generated input: what to call (``target``) on which paths, and the names an error
    message must mention (any one of them)."""
    kind: str
    family: str
    target: str
    paths: tuple[str, ...]
    names: tuple[str, ...]
    desc: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Outcome:
    case: FuzzInput
    outcome: str  # ok | error | finding
    detail: str  # exception type + first line (error / finding)
    seconds: float

    @property
    def signature(self) -> str:
        return f"[{self.case.target}] {normalise_detail(self.detail)}"


def normalise_detail(detail: str) -> str:
    """Exception type + first line with paths and numbers generalised (for deduplication)."""
    line = detail.splitlines()[0] if detail else ""
    line = re.sub(r"(/[^\s:'\"),]+)+", "<path>", line)
    line = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", line)
    return line[:200]


# ---------------------------------------------------------------------------------- targets


def _target_scan(case: FuzzInput):
    scan_study(case.extra["list"] if "list" in case.extra else case.paths[0])


def _target_load_series(case: FuzzInput):
    load_series(case.extra["list"] if "list" in case.extra else case.paths[0])


def _target_load_volume(case: FuzzInput):
    vol = load_volume(case.paths[0])
    if not np.isfinite(vol.data).all():
        raise _Finding("non-finite voxels in a loaded Volume")


def _target_manifest(case: FuzzInput):
    read_manifest(case.paths[0])


def _target_e2e(case: FuzzInput):
    t1 = load_volume(case.paths[0], "T1")
    t2 = load_volume(case.paths[1], "T2")
    pair = align_pair(t1, t2)
    if "center" in case.extra:
        mi = build_six_channel(pair, case.extra.get("k", 2), center=case.extra["center"],
                               size_mm=case.extra.get("size_mm"))
    else:
        mi = build_six_channel(pair, case.extra.get("k", 2),
                               box=case.extra.get("box", SEED_BOX))
    arr = np.asarray(mi.array)
    if arr.ndim != 3 or arr.shape[0] != 6 or arr.dtype != np.float32:
        raise _Finding(f"model input has shape {arr.shape} dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise _Finding(f"non-finite model input ({int((~np.isfinite(arr)).sum())} values)")


def _target_manifest_e2e(case: FuzzInput):
    for c in read_manifest(case.paths[0]):
        arr = np.asarray(prepare_case(c).array)
        if not np.isfinite(arr).all():
            raise _Finding(f"non-finite model input for case {c.case_id}")


TARGETS: dict[str, Callable[[FuzzInput], None]] = {
    "manifest_e2e": _target_manifest_e2e,
    "scan": _target_scan,
    "load_series": _target_load_series,
    "load_volume": _target_load_volume,
    "manifest": _target_manifest,
    "e2e": _target_e2e,
}


class _Finding(Exception):
    """A contract breach detected by the harness itself (e.g. NaN in the model input)."""


# ----------------------------------------------------------------------------------- runner


def _child(case: FuzzInput, conn, mem_bytes: int) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    warnings.simplefilter("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)  # decoders' own chatter (Rust panic traces)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        TARGETS[case.target](case)
        result = ("ok", "")
    except SpineFXError as exc:
        msg = str(exc)
        if any(n and n in msg for n in case.names):
            result = ("error", f"{type(exc).__name__}: {msg}")
        else:
            result = ("finding", f"SpineFXError without the file's name: "
                                 f"{type(exc).__name__}: {msg}")
    except _Finding as exc:
        result = ("finding", f"ContractBreach: {exc}")
    except BaseException as exc:  # noqa: BLE001 - the point: anything else is a finding
        result = ("finding", f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
    try:
        conn.send(result)
    except BaseException:  # noqa: BLE001
        conn.send(("finding", "unpicklable result"))
    conn.close()


def run_case(case: FuzzInput, timeout: float = DEFAULT_TIMEOUT_S,
             mem_bytes: int = DEFAULT_MEM_BYTES) -> Outcome:
    """Run one input in a forked child under a memory limit and a wall-clock timeout."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    t0 = time.monotonic()
    proc = ctx.Process(target=_child, args=(case, send, mem_bytes), daemon=True)
    proc.start()
    send.close()
    result = None
    try:
        if recv.poll(timeout):
            try:
                result = recv.recv()
            except EOFError:
                result = None
        else:
            result = ("finding", f"Timeout: no result within {timeout:g} s")
            proc.kill()
    finally:
        recv.close()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if result is None:
        code = proc.exitcode
        result = ("finding", f"ChildDied: exit code {code} (killed by a signal or the "
                             "memory limit)" if code else "ChildDied: no result")
    return Outcome(case, result[0], result[1], time.monotonic() - t0)


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


# --------------------------------------------------------------------------- mutation tools


def flip_bytes(data: bytes, rng: random.Random, n: int | None = None,
               region: int | None = None) -> bytes:
    b = bytearray(data)
    if not b:
        return bytes(b)
    n = n or rng.randint(1, 16)
    hi = min(len(b), region) if region else len(b)
    for _ in range(n):
        i = rng.randrange(hi)
        mode = rng.random()
        if mode < 0.5:
            b[i] ^= 1 << rng.randrange(8)
        elif mode < 0.8:
            b[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(b)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data) + 1)] if data else data


@contextlib.contextmanager
def _lenient_pydicom():
    """Let pydicom write any value (restored afterwards: the code under test keeps defaults)."""
    s = dcm_config.settings
    saved = (s.reading_validation_mode, s.writing_validation_mode)
    s.reading_validation_mode = dcm_config.IGNORE
    s.writing_validation_mode = dcm_config.IGNORE
    try:
        yield
    finally:
        s.reading_validation_mode, s.writing_validation_mode = saved


def _fresh(out: Path, name: str) -> Path:
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def _copy_series(src: Path, out: Path, name: str) -> tuple[Path, list[Path]]:
    dest = _fresh(out, name)
    for f in sorted(src.iterdir()):
        shutil.copy2(f, dest / f.name)
    return dest, sorted(dest.iterdir())


# Header mutations: keyword -> candidate values (strings for text VRs, ints for US).
NUM_STRINGS = ["nan", "inf", "-inf", "0", "-1", "1e38", "1e308", "-1e308", "1e-300", "abc", "",
               "1e400", "   ", "+", "0x10"]
HEADER_VALUES: dict[str, list] = {
    "Rows": [0, 1, 2, 31, 33, 64, 4097, 65535],
    "Columns": [0, 1, 2, 31, 33, 64, 4097, 65535],
    "NumberOfFrames": ["0", "-1", "2", "6", "4097", "1000000000", "abc", "1e3", "", "nan"],
    "BitsAllocated": [0, 1, 7, 8, 12, 24, 32, 64, 65535],
    "BitsStored": [0, 1, 17, 64, 65535],
    "HighBit": [0, 16, 40, 65535],
    "PixelRepresentation": [1, 2, 65535],
    "SamplesPerPixel": [0, 2, 3, 4, 65535],
    "PlanarConfiguration": [0, 1, 7],
    "PhotometricInterpretation": ["MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "XYZ", ""],
    "PixelSpacing": ["0\\0", "nan\\nan", "inf\\1", "-1\\1", "1", "abc\\def", "1e308\\1e308",
                     "1e-300\\1e-300", "", "1\\1\\1", "0.5\\-0.5", "1e400\\1"],
    "RescaleSlope": NUM_STRINGS,
    "RescaleIntercept": NUM_STRINGS,
    "ImagePositionPatient": ["nan\\0\\0", "inf\\inf\\inf", "1\\2", "1e308\\1e308\\1e308",
                             "a\\b\\c", "", "0\\0\\0", "1e7\\0\\0", "-1e300\\1\\1", "1\\2\\3\\4"],
    "ImageOrientationPatient": ["0\\0\\0\\0\\0\\0", "0\\1\\0\\0\\1\\0", "nan\\1\\0\\0\\0\\-1",
                                "1\\0\\0", "1e308\\1\\0\\0\\0\\-1", "0\\1\\0\\0\\0.5\\-1",
                                "1\\0\\0\\0\\1\\0", "inf\\inf\\inf\\inf\\inf\\inf", ""],
    "SliceThickness": ["nan", "0", "-4", "inf"],
    "SpacingBetweenSlices": ["nan", "0", "-4", "inf"],
    "WindowCenter": ["nan", "abc"],
    "SeriesInstanceUID": ["", "1.2", "x" * 64],
    "SOPClassUID": ["", "1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.1.1.4.1"],
    "Modality": ["", "CT", "SR"],
    "RepetitionTime": ["nan", "inf", "-1", "abc"],
    "EchoTime": ["nan", "inf", "-1", "abc"],
    "InversionTime": ["nan", "inf", "150"],
}


def _set_element(ds: pydicom.Dataset, keyword: str, value) -> None:
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    if keyword == "NumberOfFrames" and "PerFrameFunctionalGroupsSequence" not in ds:
        pass  # classic MR with NumberOfFrames: exactly the mutation
    ds[tag] = DataElement(tag, vr, value)


def _save(ds: pydicom.Dataset, path: Path) -> bool:
    with _lenient_pydicom():
        try:
            ds.save_as(path, enforce_file_format=False)
            return True
        except Exception:  # noqa: BLE001 - an unwritable mutation is skipped, not a finding
            return False


def _read(path: Path) -> pydicom.Dataset:
    with _lenient_pydicom():
        return pydicom.dcmread(path, force=True)


TS_SAME_LENGTH = [b"1.2.840.10008.1.2.5\x00", b"1.2.840.10008.1.2.2\x00",
                  b"1.2.840.10008.1.2.9\x00", b"9.9.9.9.9.9.9.9.9.9\x00",
                  b"1.2.840.10008.1.2.1\x00"]
TS_PYDICOM = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
              "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.1.99",
              "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2", "1.2.3.4.5.6"]
VR_TARGETS = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
              "ImageOrientationPatient", "RescaleSlope", "BitsAllocated", "PixelData",
              "SeriesInstanceUID", "NumberOfFrames", "SamplesPerPixel", "RescaleIntercept"]
NEW_VRS = ["UN", "OB", "SS", "FD", "FL", "UL", "LO", "CS", "DS", "US", "AT", "SQ"]


def _value_for_vr(vr: str, rng: random.Random):
    if vr in ("UN", "OB"):
        return bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 2, 3, 4, 8, 13))))
    if vr in ("SS", "US", "UL"):
        lim = {"SS": (-32768, 32767), "US": (0, 65535), "UL": (0, 2**32 - 1)}[vr]
        return rng.choice((lim[0], lim[1], 0, 1, 32))
    if vr in ("FD", "FL"):
        return rng.choice((float("nan"), float("inf"), 0.0, -1.0, 1e30, 0.5))
    if vr == "AT":
        return 0x00280010
    if vr == "SQ":
        return pydicom.Sequence([pydicom.Dataset()])
    return rng.choice(("32", "abc", "", "1\\2\\3", "nan"))


def mutate_dicom_file(path: Path, family: str, rng: random.Random) -> str | None:
    """Mutate one DICOM file in place; returns a description, or None when not writable."""
    data = path.read_bytes()
    if family == "dicom_bitflip":
        region = 1024 if rng.random() < 0.6 else None
        path.write_bytes(flip_bytes(data, rng, region=region))
        return f"bitflip {path.name}"
    if family == "dicom_truncate":
        cut = rng.randrange(len(data) + 1)
        path.write_bytes(data[:cut])
        return f"truncate {path.name} at {cut}/{len(data)}"
    if family == "dicom_random":
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        if rng.random() < 0.6:
            body = b"\x00" * 128 + b"DICM" + body
        path.write_bytes(body)
        return f"random bytes {path.name}"
    if family == "dicom_deep_sq":
        depth = rng.choice((10, 500, 3000, 20000))
        return f"nested SQ depth {depth} in {path.name}" if insert_deep_sequence(
            path, depth, defined=rng.random() < 0.3) else None
    ds = _read(path)
    if family == "dicom_header":
        keyword = rng.choice(sorted(HEADER_VALUES))
        value = rng.choice(HEADER_VALUES[keyword])
        try:
            with _lenient_pydicom():
                _set_element(ds, keyword, value)
        except Exception:  # noqa: BLE001
            return None
        return f"{keyword}={value!r} in {path.name}" if _save(ds, path) else None
    if family == "dicom_vr":
        keyword = rng.choice(VR_TARGETS)
        vr = rng.choice(NEW_VRS)
        tag = tag_for_keyword(keyword)
        try:
            with _lenient_pydicom():
                ds[tag] = DataElement(tag, vr, _value_for_vr(vr, rng))
        except Exception:  # noqa: BLE001
            return None
        return f"{keyword} as VR {vr} in {path.name}" if _save(ds, path) else None
    if family == "dicom_pixeldata":
        choice = rng.choice(("drop", "short", "odd", "long", "empty"))
        px = ds.PixelData
        if choice == "drop":
            del ds.PixelData
        elif choice == "short":
            ds.PixelData = px[:rng.randrange(len(px))]
        elif choice == "odd":
            ds.PixelData = px + b"\x00"
        elif choice == "long":
            ds.PixelData = px * 3
        else:
            ds.PixelData = b""
        return f"PixelData {choice} in {path.name}" if _save(ds, path) else None
    if family == "dicom_ts":
        if rng.random() < 0.5:
            old = b"1.2.840.10008.1.2.1\x00"
            new = rng.choice(TS_SAME_LENGTH)
            if old not in data:
                return None
            path.write_bytes(data.replace(old, new, 1))
            return f"TransferSyntax bytes -> {new!r} in {path.name}"
        uid = rng.choice(TS_PYDICOM)
        ds.file_meta.TransferSyntaxUID = uid
        with _lenient_pydicom():
            try:
                pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=False,
                                 little_endian=True)
            except Exception:  # noqa: BLE001
                return None
        return f"TransferSyntax {uid} in {path.name}"
    raise ValueError(family)


DICOM_FAMILIES = ["dicom_bitflip", "dicom_truncate", "dicom_random", "dicom_header", "dicom_vr",
                  "dicom_pixeldata", "dicom_ts", "dicom_deep_sq"]


def insert_deep_sequence(path: Path, depth: int, defined: bool = False) -> bool:
    """Insert (0008,1115) nested ``depth`` levels deep (explicit VR little endian) right
    after the file meta group: a recursion bomb for a recursive sequence parser."""
    data = path.read_bytes()
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        return False
    start = 132 + 12 + struct.unpack_from("<I", data, 140)[0]
    sq_head = struct.pack("<HH", 0x0008, 0x1115) + b"SQ\x00\x00"
    item = struct.pack("<HH", 0xFFFE, 0xE000)
    if defined:
        body = b""
        for _ in range(depth):
            inner = item + struct.pack("<I", len(body)) + body
            body = sq_head + struct.pack("<I", len(inner)) + inner
        blob = body
    else:
        open_ = sq_head + b"\xff\xff\xff\xff" + item + b"\xff\xff\xff\xff"
        close = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
                 + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        blob = open_ * depth + close * depth
    path.write_bytes(data[:start] + blob + data[start:])
    return True


def gen_dicom(family: str, seeds: Seeds, out: Path, rng: random.Random,
              tag: str) -> list[FuzzInput]:
    folder, files = _copy_series(seeds.t1_dir, out, f"{family}-{tag}")
    every = family == "dicom_header" and rng.random() < 0.3
    targets = files if every else [rng.choice(files)]
    descs = []
    for f in targets:
        d = mutate_dicom_file(f, family, rng)
        if d is None:
            return []
        descs.append(d)
    desc = descs[0] + (" (all files)" if every else "")
    names = (folder.name,) + tuple(f.name for f in targets)
    return [FuzzInput("dicom", family, t, (str(folder),), names, desc)
            for t in ("scan", "load_series")]


CODEC_HEADER = {"Rows": [16, 33, 64, 1], "Columns": [16, 33, 64, 1], "BitsStored": [8, 12, 1],
                "BitsAllocated": [8, 32], "SamplesPerPixel": [3], "PixelRepresentation": [1],
                "PhotometricInterpretation": ["RGB", "YBR_FULL"], "NumberOfFrames": ["2", "0"]}


def gen_codec(family: str, seeds: Seeds, out: Path, rng: random.Random,
              tag: str) -> list[FuzzInput]:
    if not seeds.codec_dirs:
        return []
    uid = rng.choice(sorted(seeds.codec_dirs))
    folder, files = _copy_series(seeds.codec_dirs[uid], out, f"{family}-{tag}")
    f = rng.choice(files)
    ds = _read(f)
    px = bytearray(ds.PixelData)
    mode = rng.choice(("flip", "flip", "truncate", "header", "zero_tail", "fragments"))
    if mode == "flip":
        # past the Basic Offset Table item and the first fragment's tag (16 bytes)
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(16, len(px)) if len(px) > 16 else 0
            px[i] = rng.randrange(256)
        ds.PixelData = bytes(px)
        desc = "flip in fragment"
    elif mode == "truncate":
        cut = rng.randrange(16, len(px))
        px = px[:cut]
        if rng.random() < 0.5:  # keep the item length consistent: a short, valid fragment
            struct.pack_into("<I", px, 12, max(0, cut - 16 - (cut % 2)))
            px = px[:16 + max(0, cut - 16 - (cut % 2))]
        ds.PixelData = bytes(px) + (b"\x00" if len(px) % 2 else b"")
        desc = f"fragment truncated at {cut}"
    elif mode == "zero_tail":
        n = rng.randrange(1, len(px) - 16)
        px[-n:] = b"\x00" * n
        ds.PixelData = bytes(px)
        desc = f"last {n} bytes zeroed"
    elif mode == "fragments":
        ds.PixelData = bytes(px) + bytes(px[8:])  # a second copy of the fragments
        desc = "fragments doubled"
    else:
        keyword = rng.choice(sorted(CODEC_HEADER))
        value = rng.choice(CODEC_HEADER[keyword])
        with _lenient_pydicom():
            _set_element(ds, keyword, value)
        desc = f"{keyword}={value!r}"
    if not _save(ds, f):
        return []
    return [FuzzInput("dicom", family, t, (str(folder),), (folder.name, f.name),
                      f"{uid} {f.name}: {desc}") for t in ("scan", "load_series")]


ENH_MUTATIONS = ["frames", "drop_per_frame", "frame_position", "shared_spacing", "shared_slope",
                 "drop_shared", "pixels_short", "orientation", "per_frame_extra"]


def gen_enhanced(family: str, seeds: Seeds, out: Path, rng: random.Random,
                 tag: str) -> list[FuzzInput]:
    if seeds.enhanced_dir is None:
        return []
    folder, files = _copy_series(seeds.enhanced_dir, out, f"{family}-{tag}")
    f = files[0]
    ds = _read(f)
    kind = rng.choice(ENH_MUTATIONS)
    with _lenient_pydicom():
        try:
            if kind == "frames":
                value = rng.choice(HEADER_VALUES["NumberOfFrames"] + ["5", "7", "4096"])
                _set_element(ds, "NumberOfFrames", value)
                kind += f"={value!r}"
            elif kind == "drop_per_frame":
                seq = ds.PerFrameFunctionalGroupsSequence
                del seq[rng.randrange(len(seq))]
            elif kind == "per_frame_extra":
                ds.PerFrameFunctionalGroupsSequence.append(pydicom.Dataset())
            elif kind == "frame_position":
                item = rng.choice(ds.PerFrameFunctionalGroupsSequence)
                value = rng.choice(HEADER_VALUES["ImagePositionPatient"])
                plane = item.PlanePositionSequence[0]
                _set_element(plane, "ImagePositionPatient", value)
                kind += f"={value!r}"
            elif kind == "shared_spacing":
                value = rng.choice(HEADER_VALUES["PixelSpacing"])
                m = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
                _set_element(m, "PixelSpacing", value)
                kind += f"={value!r}"
            elif kind == "shared_slope":
                value = rng.choice(NUM_STRINGS)
                t = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
                _set_element(t, rng.choice(("RescaleSlope", "RescaleIntercept")), value)
                kind += f"={value!r}"
            elif kind == "orientation":
                value = rng.choice(HEADER_VALUES["ImageOrientationPatient"])
                o = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                _set_element(o, "ImageOrientationPatient", value)
                kind += f"={value!r}"
            elif kind == "drop_shared":
                del ds.SharedFunctionalGroupsSequence
            else:
                ds.PixelData = ds.PixelData[:rng.randrange(len(ds.PixelData))]
        except Exception:  # noqa: BLE001
            return []
    if not _save(ds, f):
        return []
    return [FuzzInput("dicom", family, t, (str(folder),), (folder.name, f.name), kind)
            for t in ("scan", "load_series")]


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


# ----------------------------------------------------------------------------- image files


def png_with_ihdr(src: bytes, width: int, height: int, depth: int, colour: int,
                  fix_crc: bool) -> bytes:
    assert src[:8] == b"\x89PNG\r\n\x1a\n" and src[12:16] == b"IHDR"
    ihdr = bytearray(src[16:29])
    struct.pack_into(">IIBB", ihdr, 0, width, height, depth, colour)
    crc = zlib.crc32(b"IHDR" + bytes(ihdr)) if fix_crc else struct.unpack(">I", src[29:33])[0]
    return src[:16] + bytes(ihdr) + struct.pack(">I", crc & 0xFFFFFFFF) + src[33:]


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of width x height zeros (compresses to kilobytes)."""
    raw_row = b"\x00" * (width + 1)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(raw_row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                             0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


IMAGE_FAMILIES = ["image_bitflip", "image_truncate", "png_ihdr", "image_special", "tiff_ifd",
                  "jpeg_sof"]
TIFF_TAGS = {256: [0, 1, 65535, 2**31 - 1, 2**32 - 1, 100000], 257: [0, 1, 65535, 2**32 - 1],
             258: [0, 1, 3, 12, 16, 32, 64, 255], 259: [1, 5, 7, 8, 32773, 34712, 9999],
             262: [0, 1, 2, 3, 5, 32844], 273: [0, 8, 2**32 - 1], 277: [0, 2, 3, 4, 65535],
             278: [0, 1, 2**32 - 1], 279: [0, 1, 2**32 - 1], 284: [0, 2, 9],
             339: [0, 1, 2, 3, 5, 6]}


def tiff_with_tag(src: bytes, tag: int, value: int) -> bytes | None:
    """A little-endian TIFF with IFD entry ``tag`` set to ``value`` (SHORT or LONG kept)."""
    if src[:4] != b"II*\x00":
        return None
    b = bytearray(src)
    ifd = struct.unpack_from("<I", b, 4)[0]
    (n,) = struct.unpack_from("<H", b, ifd)
    for i in range(n):
        off = ifd + 2 + 12 * i
        t, typ, count = struct.unpack_from("<HHI", b, off)
        if t == tag:
            if typ == 3:
                struct.pack_into("<H", b, off + 8, value & 0xFFFF)
            else:
                struct.pack_into("<HI", b, off + 2, 4, value & 0xFFFFFFFF)
            return bytes(b)
    return None


def jpeg_with_sof(src: bytes, height: int, width: int, components: int | None) -> bytes | None:
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        i = src.find(marker)
        if i >= 0:
            b = bytearray(src)
            struct.pack_into(">HH", b, i + 5, height, width)
            if components is not None:
                b[i + 9] = components
            return bytes(b)
    return None


def gen_image(family: str, seeds: Seeds, out: Path, rng: random.Random,
              tag: str) -> list[FuzzInput]:
    d = _fresh(out, f"{family}-{tag}")
    if family == "png_ihdr":
        src = rng.choice((seeds.png8, seeds.png16)).read_bytes()
        w = rng.choice((0, 1, 32, 33, 4097, 65535, 100000, 2**31 - 1, 2**32 - 1))
        h = rng.choice((0, 1, 32, 31, 4097, 65535, 100000, 2**31 - 1, 2**32 - 1))
        depth = rng.choice((8, 16, 8, 16, 0, 1, 3, 255))
        colour = rng.choice((0, 0, 2, 3, 4, 6, 7))
        fix = rng.random() < 0.8
        data = png_with_ihdr(src, w, h, depth, colour, fix)
        desc = f"IHDR {w}x{h} depth {depth} colour {colour} crc {'fixed' if fix else 'stale'}"
        name = "slice.png"
    elif family == "tiff_ifd":
        tag_ = rng.choice(sorted(TIFF_TAGS))
        value = rng.choice(TIFF_TAGS[tag_])
        src = seeds.tiff.read_bytes()
        data = tiff_with_tag(src, tag_, value) or flip_bytes(src, rng, region=256)
        desc, name = f"TIFF tag {tag_}={value}", "slice.tif"
    elif family == "jpeg_sof":
        h = rng.choice((0, 1, 31, 32, 33, 4097, 65535))
        w = rng.choice((0, 1, 32, 33, 4097, 65535))
        comp = rng.choice((None, None, 0, 3, 4, 255))
        src = seeds.jpeg.read_bytes()
        data = jpeg_with_sof(src, h, w, comp) or flip_bytes(src, rng)
        desc, name = f"JPEG SOF {w}x{h} components {comp}", "slice.jpg"
    elif family == "image_special":
        kind = rng.choice(("bomb", "rgb", "blank", "tiny", "float_tiff", "empty", "rgba"))
        name = "slice.png"
        if kind == "bomb":
            data = _bomb_png(rng.choice((5000, 20000)), rng.choice((5000, 20000)))
        elif kind == "empty":
            data = b""
        else:
            buf = io.BytesIO()
            if kind == "rgb":
                arr = np.random.default_rng(rng.randrange(99)).integers(0, 255, (32, 32, 3))
                Image.fromarray(arr.astype(np.uint8)).save(buf, "PNG")
            elif kind == "rgba":
                arr = np.zeros((32, 32, 4), np.uint8)
                arr[..., 3] = 7
                Image.fromarray(arr).save(buf, "PNG")
            elif kind == "blank":
                Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, "PNG")
            elif kind == "tiny":
                Image.fromarray(np.zeros((1, 1), np.uint8) + 9).save(buf, "PNG")
            else:
                name = "slice.tif"
                arr = np.full((16, 16), np.nan, np.float32)
                arr[::2] = np.inf
                Image.fromarray(arr, mode="F").save(buf, "TIFF")
            data = buf.getvalue()
        desc = kind
    else:
        src = rng.choice((seeds.png8, seeds.png16, seeds.tiff, seeds.jpeg))
        name = src.name
        raw = src.read_bytes()
        data = flip_bytes(raw, rng) if family == "image_bitflip" else truncate(raw, rng)
        desc = f"{family} {src.name}"
    path = d / name
    path.write_bytes(data)
    return [FuzzInput("image", family, "load_volume", (str(path),), (path.name,), desc)]


# ----------------------------------------------------------------------------------- NIfTI

NIFTI_FIELDS = {  # name -> (offset, struct format, values)
    "dim0": (40, "<h", [0, 1, 2, 3, 4, 7, 8, -1, 32767]),
    "dim1": (42, "<h", [0, -1, 1, 32767]),
    "dim2": (44, "<h", [0, -1, 1, 32767]),
    "dim3": (46, "<h", [0, -1, 1, 2, 32767]),
    "dim4": (48, "<h", [0, -1, 2, 32767]),
    "datatype": (70, "<h", [0, 1, 2, 4, 16, 32, 64, 128, 256, 1792, 2304, 32767]),
    "bitpix": (72, "<h", [0, 1, 7, 64]),
    "pixdim1": (80, "<f", [0.0, -1.0, float("nan"), float("inf"), 1e-30, 1e30]),
    "pixdim3": (88, "<f", [0.0, -1.0, float("nan"), float("inf")]),
    "vox_offset": (108, "<f", [0.0, 1.0, 351.0, 1e10, float("nan"), -352.0]),
    "scl_slope": (112, "<f", [float("nan"), float("inf"), 1e38, 0.0, -1.0]),
    "scl_inter": (116, "<f", [float("nan"), float("inf"), -1e38]),
    "qform_code": (252, "<h", [0, 1, 5, -1]),
    "sform_code": (254, "<h", [0, 1, 5, -1]),
    "quatern_b": (256, "<f", [float("nan"), 2.0, 1.0]),
    "srow_x0": (280, "<f", [float("nan"), 0.0, 1e38, float("inf")]),
    "srow_y1": (300, "<f", [float("nan"), 0.0, -1e38]),
}
NIFTI_FAMILIES = ["nifti_header", "nifti_bitflip", "nifti_truncate", "nifti_values"]


def gen_nifti(family: str, seeds: Seeds, out: Path, rng: random.Random,
              tag: str) -> list[FuzzInput]:
    d = _fresh(out, f"{family}-{tag}")
    raw = bytearray(seeds.nifti.read_bytes())
    gz = rng.random() < 0.15
    if family == "nifti_header":
        descs = []
        for _ in range(rng.randint(1, 2)):
            name = rng.choice(sorted(NIFTI_FIELDS))
            off, fmt, values = NIFTI_FIELDS[name]
            v = rng.choice(values)
            struct.pack_into(fmt, raw, off, v)
            descs.append(f"{name}={v}")
        data, desc = bytes(raw), " ".join(descs)
    elif family == "nifti_bitflip":
        data, desc = flip_bytes(bytes(raw), rng, region=352 if rng.random() < 0.7 else None), \
            "bitflip"
    elif family == "nifti_truncate":
        data, desc = truncate(bytes(raw), rng), "truncate"
    else:
        import nibabel as nib
        kind = rng.choice(("nan", "inf", "const", "huge", "4d", "2d", "int8", "complex"))
        vol = np.transpose(seeds.volume, (2, 1, 0)).astype(np.float32)
        if kind == "nan":
            vol[3, 3, 3] = np.nan
        elif kind == "inf":
            vol[..., 1] = np.inf
        elif kind == "const":
            vol[:] = 7
        elif kind == "huge":
            vol = np.full(vol.shape, 3.4e38, np.float32)
        elif kind == "4d":
            vol = np.stack([vol, vol], -1)
        elif kind == "2d":
            vol = vol[..., 0]
        elif kind == "int8":
            vol = (vol % 256 - 128).astype(np.int8)
        else:
            vol = vol.astype(np.complex64)
        tmp = d / "tmp.nii"
        try:
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp))
        except Exception:  # noqa: BLE001
            return []
        data, desc = tmp.read_bytes(), f"values {kind}"
        tmp.unlink()
    if gz:
        gdata = gzip.compress(data)
        data = gdata[:rng.randrange(len(gdata))] if rng.random() < 0.3 else gdata
        path, desc = d / "vol.nii.gz", desc + " (gz)"
    else:
        path = d / "vol.nii"
    path.write_bytes(data)
    return [FuzzInput("nifti", family, "load_volume", (str(path),), (path.name,), desc)]


# ------------------------------------------------------------------------------- npy / npz

NPY_DESCR = ["<f4", "<f8", ">f4", "<i2", "|u1", "|b1", "<c8", "|O", "<U4", "|V8", "<M8[s]",
             "<f2", "<m8[s]", "garbage", "<i8", ">u2", "<f16"]
NPY_SHAPES = ["(0, 32, 32)", "(6, 0, 32)", "(6, 32)", "(6, 32, 32, 2)", "(1, 1, 1)",
              "(1000000, 1000000, 1000000)", "(-1, 32, 32)", "(4611686018427387904, 2, 2)",
              "(6, 32, 33)", "(6, 31, 32)", "()", "(6, 32, 32)", "(6, 32, 32)", "(3, 64, 32)",
              "(2, 6, 32, 32)", "[6, 32, 32]", "(6.0, 32, 32)", "(6, 32, 'a')", "(20000, 20000, 3)"]


def npy_with_header(descr: str, fortran: bool, shape: str, payload: bytes) -> bytes:
    header = "{'descr': %r, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    header = header.encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


NPY_FAMILIES = ["npy_header", "npy_bitflip", "npy_values", "npz_struct"]


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def gen_npy(family: str, seeds: Seeds, out: Path, rng: random.Random,
            tag: str) -> list[FuzzInput]:
    d = _fresh(out, f"{family}-{tag}")
    payload = seeds.volume.astype(np.float32).tobytes()
    name = "vol.npy"
    if family == "npy_header":
        descr, shape, fortran = rng.choice(NPY_DESCR), rng.choice(NPY_SHAPES), rng.random() < .2
        if rng.random() < 0.3:
            payload = payload[:rng.randrange(len(payload))]
        data = npy_with_header(descr, fortran, shape, payload)
        desc = f"descr {descr} shape {shape} fortran {fortran} payload {len(payload)}"
    elif family == "npy_bitflip":
        raw = seeds.npy.read_bytes()
        data = flip_bytes(raw, rng, region=128) if rng.random() < 0.7 else truncate(raw, rng)
        desc = "bitflip/truncate"
    elif family == "npy_values":
        kind, arr = _odd_array(rng, seeds.volume)
        data, desc = _npy_bytes(arr), f"values {kind}"
    else:
        name = "vol.npz"
        kind = rng.choice(("empty", "two", "bad_member", "pickled", "truncated", "2d", "image4d",
                           "bomb", "nan", "not_zip"))
        buf = io.BytesIO()
        vol = seeds.volume.astype(np.float32)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            if kind == "two":
                z.writestr("a.npy", _npy_bytes(vol))
                z.writestr("b.npy", _npy_bytes(vol))
            elif kind == "bad_member":
                z.writestr("image.npy", b"not an npy at all")
            elif kind == "pickled":
                z.writestr("image.npy", npy_with_header("|O", False, "(6, 32, 32)",
                                                        b"\x80\x04N."))
            elif kind in ("truncated", "not_zip"):
                z.writestr("image.npy", _npy_bytes(vol))
            elif kind == "2d":
                z.writestr("image.npy", _npy_bytes(vol[0]))
            elif kind == "image4d":
                z.writestr("image.npy", _npy_bytes(vol[None]))
            elif kind == "bomb":
                with z.open("image.npy", "w", force_zip64=True) as fp:
                    fp.write(npy_with_header("|u1", False, "(400, 4096, 4096)", b""))
                    chunk = b"\x00" * 2**20
                    for _ in range(64):
                        fp.write(chunk)
            elif kind == "nan":
                bad = vol.copy()
                bad[1, 2, 3] = np.nan
                z.writestr("image.npy", _npy_bytes(bad))
        data = buf.getvalue()
        if kind == "truncated":
            data = data[:rng.randrange(len(data))]
        elif kind == "not_zip":
            data = b"junk" + data[4:]
        desc = f"npz {kind}"
    path = d / name
    path.write_bytes(data)
    return [FuzzInput("npy", family, "load_volume", (str(path),), (path.name,), desc)]


def _odd_array(rng: random.Random, vol: np.ndarray) -> tuple[str, np.ndarray]:
    kind = rng.choice(("nan", "inf", "const", "zeros", "huge", "huge_mixed", "denormal",
                       "f16max", "bool", "int_extremes", "tiny_shape", "two_slices", "uint64",
                       "neg_zero", "f64_huge"))
    a = vol.astype(np.float32)
    if kind == "nan":
        a[rng.randrange(a.shape[0]), 5, 5] = np.nan
    elif kind == "inf":
        a[2] = -np.inf
    elif kind == "const":
        a[:] = 123.0
    elif kind == "zeros":
        a[:] = 0
    elif kind == "huge":
        a[:] = 3.4e38
    elif kind == "huge_mixed":
        a = np.where(vol % 2 == 0, 3.4e38, -3.4e38).astype(np.float32)
    elif kind == "denormal":
        a = (vol * 1e-45).astype(np.float32)
    elif kind == "f16max":
        a = np.full(vol.shape, 65504, np.float16)
    elif kind == "bool":
        a = vol > 800
    elif kind == "int_extremes":
        a = np.where(vol % 2 == 0, np.iinfo(np.int64).max, np.iinfo(np.int64).min)
    elif kind == "tiny_shape":
        a = np.ones((3, 2, 2), np.float32)
    elif kind == "two_slices":
        a = a[:2]
    elif kind == "uint64":
        a = vol.astype(np.uint64) * np.uint64(2**50)
    elif kind == "neg_zero":
        a[:] = -0.0
    else:
        a = np.full(vol.shape, 1e300, np.float64)
    return kind, a


# ------------------------------------------------------------------------------- manifests

NUMERIC_CELLS = ["", " ", "nan", "NaN", "inf", "-inf", "1e309", "-1e309", "1e400", "0x10", "1_000",
                 "\uff11\uff12", "9" * 5000, "-0", "2.5", "1e5", "-1", "None", "True",
                 "\u0663", "1e-400", "1" * 400, "1e308", "3.0", "+4", " 5 ", "4e3", "1,5"]
PATH_CELLS = ["../t1", "../../etc", "/etc/passwd", "/dev/zero", "/dev/null", "t1/../t1",
              "~/t1", "", "nonexistent", "t1/IM0000.dcm", "manifest.csv", "/", ".", "//",
              "C:\\x", "a" * 5000, "t1\\..\\..", "/proc/self/fd/0", "\u00e9t\u00e9", "t2", "t1"]
TEXT_CELLS = ["", " ", "\u202e", "x" * 10000, "benign", "Malignant", "MALIGNANT ", "b\u00e9nign",
              "c1", "\t", "'", '"']
NUMERIC_COLS = ["slice", "box_x0", "box_y0", "box_x1", "box_y1", "center_x", "center_y",
                "size_mm"]
MANIFEST_FAMILIES = ["manifest_values", "manifest_structure", "manifest_path", "manifest_e2e"]
# values read_manifest accepts, chosen to stress prepare_case (edges, big boxes, odd sizes)
PLAUSIBLE = {"slice": ["0", "1", "5", "6", "2"],
             "box_x0": ["0", "-100", "31", "-4000", "16"], "box_y0": ["0", "-50", "31", "16"],
             "box_x1": ["32", "96", "4000", "17", "0.5"], "box_y1": ["32", "4000", "16.2", "1"],
             "center_x": ["0", "31.9", "-100", "16000", "16"],
             "center_y": ["0", "31.9", "16000", "16"], "size_mm": ["5", "300", "5.01", ""]}


def gen_manifest(family: str, seeds: Seeds, out: Path, rng: random.Random,
                 tag: str) -> list[FuzzInput]:
    d = _fresh(out, f"{family}-{tag}")
    for name in ("t1", "t2"):
        (d / name).symlink_to(getattr(seeds, f"{name}_dir"))
    path = d / "manifest.csv"
    rows = _seed_rows()
    cols = list(MANIFEST_COLUMNS)
    if family == "manifest_values":
        descs = []
        for _ in range(rng.randint(1, 3)):
            row = rng.choice(rows)
            col = rng.choice(cols + ["feature"])
            if col == "feature":
                col = rng.choice(("collapse", "posterior_element", "soft_tissue_mass"))
                if col not in cols:
                    cols.append(col)
                val = rng.choice(NUMERIC_CELLS + ["0", "1", "2"])
            elif col in NUMERIC_COLS:
                val = rng.choice(NUMERIC_CELLS)
            elif col in ("t1", "t2"):
                val = rng.choice(PATH_CELLS)
            else:
                val = rng.choice(TEXT_CELLS)
            row[col] = val
            descs.append(f"{col}={val[:20]!r}")
        path.write_text(manifest_text(rows, cols), encoding="utf-8")
        desc = " ".join(descs)
    elif family == "manifest_e2e":
        descs = []
        for _ in range(rng.randint(1, 4)):
            row = rng.choice(rows)
            col = rng.choice(sorted(PLAUSIBLE))
            row[col] = rng.choice(PLAUSIBLE[col])
            descs.append(f"{row['case_id']}.{col}={row[col]}")
        path.write_text(manifest_text(rows, cols), encoding="utf-8")
        return [FuzzInput("manifest", family, "manifest_e2e", (str(path),),
                          (path.name, "line", "t1", "t2", "box"), " ".join(descs))]
    elif family == "manifest_structure":
        kind = rng.choice(("bom", "nul", "dup_header", "missing", "unbalanced", "cr_only",
                           "huge_field", "latin1", "utf16", "empty", "header_only", "many_cols",
                           "blank_lines", "bitflip", "truncate", "short_row", "long_row"))
        text = manifest_text(rows, cols)
        if kind == "bom":
            data = b"\xef\xbb\xbf" + text.encode()
        elif kind == "nul":
            data = text.replace("benign", "ben\x00ign").encode()
        elif kind == "dup_header":
            data = text.replace("box_y1", "box_x0", 1).encode()
        elif kind == "missing":
            data = manifest_text(rows, [c for c in cols if c != rng.choice(cols)]).encode()
        elif kind == "unbalanced":
            data = text.replace("c2", '"c2', 1).encode()
        elif kind == "cr_only":
            data = text.replace("\n", "\r").encode()
        elif kind == "huge_field":
            data = text.replace("L1", "L" * 200000).encode()
        elif kind == "latin1":
            data = text.replace("L1", "L\u00e9").encode("latin1") + b"\xff\xfe"
        elif kind == "utf16":
            data = text.encode("utf-16")
        elif kind == "empty":
            data = b""
        elif kind == "header_only":
            data = text.splitlines()[0].encode()
        elif kind == "many_cols":
            data = text.replace("\n", "," * 3000 + "\n").encode()
        elif kind == "blank_lines":
            data = text.replace("\n", "\n\n\n").encode()
        elif kind == "bitflip":
            data = flip_bytes(text.encode(), rng)
        elif kind == "truncate":
            data = truncate(text.encode(), rng)
        elif kind == "short_row":
            data = (text + "c3,benign,t1\n").encode()
        else:
            data = (text + "c4,benign,t1,t2,2,8,8,24,24,,,,,,x,y,z\n").encode()
        path.write_bytes(data)
        desc = kind
    else:
        kind = rng.choice(("dir", "devzero", "fifo", "missing", "dangling", "devnull", "big"))
        if kind == "dir":
            path.mkdir()
        elif kind == "devzero":
            path.symlink_to("/dev/zero")
        elif kind == "devnull":
            path.symlink_to("/dev/null")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dangling":
            path.symlink_to(d / "nowhere.csv")
        elif kind == "big":
            with open(path, "wb") as fp:
                fp.write(manifest_text(rows, cols).encode())
                fp.truncate(65 * 2**20)  # sparse: beyond MAX_MANIFEST_BYTES
        desc = kind
    return [FuzzInput("manifest", family, "manifest", (str(path),), (path.name, "line"), desc)]


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
        a = seeds.volume.astype(np.float32)
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


# --------------------------------------------------------------------------------- registry

GENERATORS: dict[str, Callable[..., list[FuzzInput]]] = {}
for _fam in DICOM_FAMILIES:
    GENERATORS[_fam] = gen_dicom
GENERATORS["dicom_codec"] = gen_codec
GENERATORS["dicom_enhanced"] = gen_enhanced
GENERATORS["dicom_folder"] = gen_folder
GENERATORS["special_file"] = gen_special_file
GENERATORS["study_path"] = gen_study_path
GENERATORS["study_path_device"] = gen_study_path
for _fam in IMAGE_FAMILIES:
    GENERATORS[_fam] = gen_image
for _fam in NIFTI_FAMILIES:
    GENERATORS[_fam] = gen_nifti
for _fam in NPY_FAMILIES:
    GENERATORS[_fam] = gen_npy
for _fam in MANIFEST_FAMILIES:
    GENERATORS[_fam] = gen_manifest
for _fam in E2E_FAMILIES:
    GENERATORS[_fam] = gen_e2e
FAMILIES = list(GENERATORS)


def generate(family: str, seeds: Seeds, out: Path, seed: int) -> list[FuzzInput]:
    """The inputs of one (family, seed): deterministic for a given seed."""
    rng = random.Random(f"{family}:{seed}")
    try:
        return GENERATORS[family](family, seeds, Path(out), rng, str(seed))
    except Exception:  # noqa: BLE001 - a mutation pydicom cannot even build is skipped
        return []


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0

    def counts(self) -> dict[str, Counter]:
        by_kind: dict[str, Counter] = {}
        for o in self.outcomes:
            by_kind.setdefault(f"{o.case.kind}/{o.case.target}", Counter())[o.outcome] += 1
        return by_kind

    def findings(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome == "finding"]

    def signatures(self) -> dict[str, list[Outcome]]:
        sigs: dict[str, list[Outcome]] = {}
        for o in self.findings():
            sigs.setdefault(o.signature, []).append(o)
        return sigs


def fuzz(families: list[str], seeds_list, work: Path, seeds: Seeds | None = None,
         deadline: float | None = None, timeout: float = DEFAULT_TIMEOUT_S,
         mem_bytes: int = DEFAULT_MEM_BYTES, report: Report | None = None,
         on_outcome: Callable[[Outcome], None] | None = None) -> Report:
    """Generate and run every (family, seed); stops early at ``deadline`` (time.monotonic)."""
    work = Path(work)
    seeds = seeds or make_seeds(work / "seeds")
    report = report or Report()
    for s in seeds_list:
        for fam in families:
            if deadline is not None and time.monotonic() > deadline:
                return report
            case_dir = work / "cases"
            inputs = generate(fam, seeds, case_dir, s)
            if not inputs:
                report.skipped += 1
            for case in inputs:
                o = run_case(case, timeout=timeout, mem_bytes=mem_bytes)
                report.outcomes.append(o)
                if on_outcome:
                    on_outcome(o)
            shutil.rmtree(case_dir / f"{fam}-{s}", ignore_errors=True)
    return report
