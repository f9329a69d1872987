"""Manifest (CSV) mutators: cell values, structure, paths, end to end."""
from __future__ import annotations

import os
import random
from pathlib import Path

from tests.fuzz.mutate_common import _fresh, flip_bytes, truncate
from tests.fuzz.runner import FuzzInput
from tests.fuzz.seeds import MANIFEST_COLUMNS, Seeds, _seed_rows, manifest_text

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


def _structure_bytes(kind: str, text: str, rows: list[dict], cols: list[str],
                     rng: random.Random) -> bytes:
    """The bytes of one ``manifest_structure`` mutation of the manifest ``text``."""
    if kind == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    elif kind == "nul":
        return text.replace("benign", "ben\x00ign").encode()
    elif kind == "dup_header":
        return text.replace("box_y1", "box_x0", 1).encode()
    elif kind == "missing":
        return manifest_text(rows, [c for c in cols if c != rng.choice(cols)]).encode()
    elif kind == "unbalanced":
        return text.replace("c2", '"c2', 1).encode()
    elif kind == "cr_only":
        return text.replace("\n", "\r").encode()
    elif kind == "huge_field":
        return text.replace("L1", "L" * 200000).encode()
    elif kind == "latin1":
        return text.replace("L1", "L\u00e9").encode("latin1") + b"\xff\xfe"
    elif kind == "utf16":
        return text.encode("utf-16")
    elif kind == "empty":
        return b""
    elif kind == "header_only":
        return text.splitlines()[0].encode()
    elif kind == "many_cols":
        return text.replace("\n", "," * 3000 + "\n").encode()
    elif kind == "blank_lines":
        return text.replace("\n", "\n\n\n").encode()
    elif kind == "bitflip":
        return flip_bytes(text.encode(), rng)
    elif kind == "truncate":
        return truncate(text.encode(), rng)
    elif kind == "short_row":
        return (text + "c3,benign,t1\n").encode()
    else:
        return (text + "c4,benign,t1,t2,2,8,8,24,24,,,,,,x,y,z\n").encode()


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
        data = _structure_bytes(kind, text, rows, cols, rng)
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


