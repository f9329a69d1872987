"""Image-file mutators: PNG, TIFF, JPEG, NIfTI, npy / npz."""
from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.fuzz.mutate_common import _fresh, flip_bytes, truncate
from tests.fuzz.runner import FuzzInput
from tests.fuzz.seeds import Seeds

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


