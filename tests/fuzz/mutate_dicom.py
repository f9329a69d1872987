"""DICOM mutators: header values, VRs, transfer syntaxes, codecs, Enhanced MR."""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement

from tests.fuzz.mutate_common import _copy_series, _lenient_pydicom, flip_bytes
from tests.fuzz.runner import FuzzInput
from tests.fuzz.seeds import Seeds

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


