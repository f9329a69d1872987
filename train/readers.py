"""Reader calls: simulate readers at chosen accuracies, and read/write the readers CSV.

Readers CSV format (one row per case per reader)::

    case_id,reader,call,simulated
    case_0001,senior,malignant,yes
    case_0001,resident_1st_year,benign,yes

``call`` is ``benign`` or ``malignant`` (case-insensitive). The optional ``simulated`` column
(``yes``/``no``, also ``true``/``false``/``1``/``0``) marks calls produced by
:func:`simulate_readers`; files written here always carry it, set to ``yes``. A real reader
study is the plain three columns ``case_id,reader,call`` (``simulated`` absent or ``no``).
Lines starting with ``#`` are comments; a comment containing the word "simulated" also marks
the whole file as simulated. Extra columns are ignored.

Simulation hits each reader's target rates **exactly** where the counts allow: with m
malignant and n benign cases a reader with (sensitivity s, specificity t) calls
``round(s * m)`` malignant cases and ``round(t * n)`` benign cases correctly (round half up);
*which* cases is drawn at random from a generator seeded by ``(seed, reader name)``, so adding
or removing one reader never changes another's calls. Readers err independently of each other
and of the model (real readers share hard cases; that is not modelled).
"""
from __future__ import annotations

import csv
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from spinefx.runtime import read_manifest
from spinefx.runtime.errors import ManifestError
from spinefx.runtime.files import atomic_write_csv
from spinefx.runtime.stats import confusion_counts

CALLS = ("benign", "malignant")
READERS_COLUMNS = ("case_id", "reader", "call", "simulated")
# The paper's readers (Yeh et al. 2022): accuracy 98% / 96% / 66%; the 1st-year resident's
# sensitivity 78% and specificity 61%. The senior's and the 4th-year resident's sensitivity
# and specificity are set equal to their accuracy.
DEFAULT_READERS: dict[str, tuple[float, float]] = {
    "senior": (0.98, 0.98),
    "resident_4th_year": (0.96, 0.96),
    "resident_1st_year": (0.78, 0.61),
}
_TRUE = {"yes", "true", "1", "y", "simulated"}
_FALSE = {"no", "false", "0", "n", ""}


@dataclass(frozen=True)
class ReaderCall:
    case_id: str
    reader: str
    call: str            # 'benign' | 'malignant'
    simulated: bool = False


@dataclass
class ReadersTable:
    """Parsed readers CSV: its calls, whether it is simulated, and where it came from."""
    calls: list[ReaderCall]
    simulated: bool
    path: Path | None = None

    @property
    def readers(self) -> list[str]:
        """Reader names in order of first appearance."""
        return list(dict.fromkeys(c.reader for c in self.calls))

    def calls_of(self, reader: str) -> dict[str, str]:
        """``{case_id: call}`` of one reader."""
        return {c.case_id: c.call for c in self.calls if c.reader == reader}


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def _labelled_cases(cases: Any) -> list[tuple[str, str]]:
    """(case_id, label) pairs from a manifest path, Case objects, a mapping or pairs."""
    if isinstance(cases, (str, PathLike)):
        cases = read_manifest(cases)
    if isinstance(cases, Mapping):
        items = list(cases.items())
    else:
        items = [(c.case_id, c.label) if hasattr(c, "case_id") else tuple(c) for c in cases]
    out = []
    for case_id, label in items:
        lab = str(label).strip().lower() if label is not None else ""
        if lab in ("1", "0"):
            lab = CALLS[int(lab)]
        if lab not in CALLS:
            raise ValueError(f"case {case_id}: label must be benign or malignant to simulate "
                             f"reader calls, got {label!r}")
        out.append((str(case_id), lab))
    if len({c for c, _ in out}) != len(out):
        raise ValueError("case ids must be unique")
    return out


def _reader_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def simulate_readers(cases: Any, readers: Mapping[str, tuple[float, float]] | None = None,
                     seed: int = 0) -> list[ReaderCall]:
    """Simulated reader calls hitting each reader's (sensitivity, specificity) exactly.

    ``cases``: a manifest path, :class:`spinefx.runtime.Case` objects, ``{case_id: label}``
    or ``(case_id, label)`` pairs. ``readers``: ``{name: (sensitivity, specificity)}``,
    default :data:`DEFAULT_READERS` (the paper's three readers). Rows come case by case in
    input order, readers in the given order, all with ``simulated=True``.
    """
    pairs = _labelled_cases(cases)
    readers = DEFAULT_READERS if readers is None else readers
    calls: dict[str, dict[str, str]] = {}
    for name, (sens, spec) in readers.items():
        if not name or not name.strip():
            raise ValueError("reader names must not be empty")
        for what, v in (("sensitivity", sens), ("specificity", spec)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"reader {name}: {what} must be within [0, 1], got {v}")
        rng = _reader_rng(seed, name)
        calls[name] = {}
        for label, rate in (("malignant", sens), ("benign", spec)):
            ids = [c for c, lab in pairs if lab == label]
            n_right = _round_half_up(float(rate) * len(ids))
            right = set(rng.permutation(len(ids))[:n_right].tolist())
            wrong = "benign" if label == "malignant" else "malignant"
            for i, case_id in enumerate(ids):
                calls[name][case_id] = label if i in right else wrong
    return [ReaderCall(case_id, name, calls[name][case_id], True)
            for case_id, _ in pairs for name in readers]


def write_readers_csv(calls: Iterable[ReaderCall], path: str | PathLike) -> Path:
    """Write ``case_id,reader,call,simulated`` (simulated = yes/no per row), atomically."""
    rows = ({"case_id": c.case_id, "reader": c.reader, "call": c.call,
             "simulated": "yes" if c.simulated else "no"} for c in calls)
    return atomic_write_csv(path, READERS_COLUMNS, rows)


def read_readers_csv(path: str | PathLike,
                     known_cases: Iterable[str] | None = None) -> ReadersTable:
    """Parse and validate a readers CSV; every problem is a ManifestError naming file and line.

    ``known_cases``: when given, every ``case_id`` must be one of them (a call on a case the
    model never scored is an error, not something to drop silently).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise ManifestError("no such readers file", path) from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise ManifestError(f"not a readable CSV file ({exc})", path) from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    comment_simulated = any("simulated" in line.lower() for line in lines
                            if line.lstrip().startswith("#"))
    if not numbered:
        raise ManifestError("the readers file is empty", path)
    try:
        rows = list(csv.reader([line for _, line in numbered]))
    except csv.Error as exc:
        raise ManifestError(f"not a readable CSV file ({exc})", path) from None
    header_line = numbered[0][0]
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("case_id", "reader", "call") if c not in header]
    if missing:
        raise ManifestError(f"line {header_line}: missing column(s) {', '.join(missing)} "
                            f"(need case_id,reader,call[,simulated]); found {rows[0]}", path)
    col = {name: header.index(name) for name in header}
    known = None if known_cases is None else set(known_cases)
    calls: list[ReaderCall] = []
    seen: dict[tuple[str, str], int] = {}  # (case_id, reader) -> the line of its first call
    for (n, _), row in zip(numbered[1:], rows[1:]):
        where = f"line {n}"
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        case_id = row[col["case_id"]].strip()
        reader = row[col["reader"]].strip()
        call = row[col["call"]].strip().lower()
        if not case_id:
            raise ManifestError(f"{where}: empty case_id", path)
        if not reader:
            raise ManifestError(f"{where}: empty reader name", path)
        if call not in CALLS:
            raise ManifestError(f"{where}: call must be benign or malignant, got "
                                f"{row[col['call']]!r}", path)
        simulated = comment_simulated
        if "simulated" in col:
            flag = row[col["simulated"]].strip().lower()
            if flag in _TRUE:
                simulated = True
            elif flag not in _FALSE:
                raise ManifestError(f"{where}: simulated must be yes or no, got "
                                    f"{row[col['simulated']]!r}", path)
        if known is not None and case_id not in known:
            raise ManifestError(f"{where}: unknown case_id {case_id!r} (not among the "
                                f"{len(known)} cases with model predictions)", path)
        key = (case_id, reader)
        if key in seen:
            raise ManifestError(f"{where}: reader {reader!r} already called case {case_id!r} "
                                f"on line {seen[key]}", path)
        seen[key] = n
        calls.append(ReaderCall(case_id, reader, call, simulated))
    if not calls:
        raise ManifestError("the readers file has a header but no calls", path)
    return ReadersTable(calls=calls, simulated=any(c.simulated for c in calls), path=path)


def achieved_rates(calls: Iterable[ReaderCall], labels: Mapping[str, str]) -> dict[str, dict]:
    """Per reader: its confusion counts, n, accuracy, sensitivity, specificity against
    ``labels`` (``{case_id: "benign" | "malignant"}``)."""
    by_reader: dict[str, list[ReaderCall]] = {}
    for c in calls:
        by_reader.setdefault(c.reader, []).append(c)
    out: dict[str, dict] = {}
    for reader, own in by_reader.items():
        counts = confusion_counts([labels[c.case_id] for c in own], [c.call for c in own])
        tp, fn, tn, fp = counts["tp"], counts["fn"], counts["tn"], counts["fp"]
        n = tp + fn + tn + fp
        out[reader] = {"tp": tp, "fn": fn, "tn": tn, "fp": fp, "n": n,
                       "accuracy": (tp + tn) / n if n else None,
                       "sensitivity": tp / (tp + fn) if tp + fn else None,
                       "specificity": tn / (tn + fp) if tn + fp else None}
    return out
