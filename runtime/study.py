"""A study, scanned once: its series (PHI-free), one way to name a series, one pairing policy,
and volumes decoded only when they are used.

The CLI, the demo and the workstation node all go through :class:`Study`:

- :meth:`Study.open` scans a DICOM folder once (``scan_study``) and decodes nothing;
  :meth:`Study.from_volumes` wraps volumes already in memory (plain images, examples).
- :meth:`Study.find` is the one series-name matcher (key, SeriesInstanceUID, series number,
  a unique description substring).
- :meth:`Study.choose_pair` is the one T1/T2 policy: ``strict`` (the CLI, the node) takes the
  named series or the only sagittal series of each weighting and refuses otherwise; ``guess``
  (the demo, which shows its choice and lets the user change it) ranks the candidates and says
  in its notes what it guessed.
- :meth:`Study.aligned` decodes the two chosen series (cached) and aligns T2 to T1 once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Callable, Literal

from .dicom import SeriesInfo, scan_study
from .dicom_series import load_series
from .errors import SeriesError
from .identity import Origin, series_origin
from .matching import AlignedPair, align_pair
from .volume import Volume

PairPolicy = Literal["strict", "guess"]
Box = tuple[float, float, float, float]


@dataclass
class SeriesEntry:
    """One series of a study: what it is (from headers) and how to decode it."""
    key: str
    label: str                      # what a person reads: '#3 T1 SAG - sagittal, T1, 15 slices'
    weighting: str
    plane: str
    n_slices: int
    row: dict                       # the PHI-free table row (``spinefx inspect``, the demo)
    usable: bool = True             # False: listed with its reason in row['status'], never loaded
    series_uid: str = ""
    series_number: int | None = None
    description: str = ""
    loader: Callable[[], Volume] | None = field(default=None, repr=False)
    volume: Volume | None = field(default=None, repr=False)
    origin: Origin = field(default_factory=Origin, repr=False)   # compared, never shown


def series_label(s: SeriesInfo) -> str:
    number = f"#{s.series_number} " if s.series_number is not None else ""
    desc = s.description or "(no description)"
    return f"{number}{desc} - {s.plane}, {s.weighting}, {s.n_slices} slices, {s.rows}x{s.columns}"


def entry_from_series(s: SeriesInfo, key: str, status: str = "usable",
                      loader: Callable[[], Volume] | None = None) -> SeriesEntry:
    """A DICOM series as an entry; decoding waits for :meth:`Study.volume`."""
    row = {k: v for k, v in s.summary().items() if k != "series_uid"}
    return SeriesEntry(key=key, label=series_label(s), weighting=s.weighting, plane=s.plane,
                       n_slices=s.n_slices, row={**row, "status": status},
                       usable=status == "usable", series_uid=s.series_uid,
                       series_number=s.series_number, description=s.description,
                       loader=loader or (lambda: load_series(s, weighting=s.weighting)),
                       origin=series_origin(s))


def entry_from_volume(key: str, label: str, volume: Volume, row: dict | None = None
                      ) -> SeriesEntry:
    """A volume already in memory as an entry."""
    row = row or {"series_number": volume.metadata.get("series_number"),
                  "description": volume.description, "weighting": volume.weighting,
                  "slices": volume.n_slices, "status": "usable"}
    return SeriesEntry(key=key, label=label, weighting=volume.weighting, plane="sagittal",
                       n_slices=volume.n_slices, row=row, series_uid=volume.series_uid,
                       series_number=volume.metadata.get("series_number"),
                       description=volume.description, volume=volume)


@dataclass(frozen=True)
class SeriesPair:
    """The chosen T1 and T2 entries and what the choice rests on."""
    t1: str
    t2: str
    notes: tuple[str, ...] = ()
    guessed: bool = False


class Study:
    """The series of one study; see the module docstring."""

    def __init__(self, entries: list[SeriesEntry], title: str = "study", kind: str = "dicom",
                 notes: list[str] | None = None, source: Path | None = None,
                 truth: dict | None = None, default_slice: int | None = None,
                 default_box: Box | None = None):
        self.entries = {e.key: e for e in entries}
        studies: dict[tuple[str, str], int] = {}
        for e in entries:   # an anonymous index per exam, in folder order (never an identifier)
            index = studies.setdefault((e.origin.patient, e.origin.study_uid), len(studies) + 1)
            e.row["study"] = index
        self.n_studies = len(studies)
        self.n_patients = len({p for p, _ in studies if p}) or (1 if studies else 0)
        self.title, self.kind, self.source = title, kind, source
        self.notes = list(notes or [])
        self.truth, self.default_slice, self.default_box = truth, default_slice, default_box
        self.default_pair: SeriesPair | None = None   # the choice a front end shows first
        self.skipped: list[tuple[Path, str]] = []       # files the scan could not use, and why
        self._aligned: dict[tuple[str, str], AlignedPair] = {}
        self._lock = threading.Lock()       # the demo serves sessions from a thread pool
        self.decoded: list[str] = []        # keys in the order they were decoded

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def open(cls, source: str | PathLike, title: str | None = None) -> "Study":
        """Scan a DICOM folder (or file) once; nothing is decoded until it is used."""
        scan = scan_study(source)
        entries = [entry_from_series(s, s.series_uid) for s in scan.series]
        notes = [f"{len(scan.skipped)} file(s) skipped"] if scan.skipped else []
        study = cls(entries, title=title or "study", kind="dicom", notes=notes,
                    source=Path(source))
        study.skipped = list(scan.skipped)
        return study

    @classmethod
    def from_volumes(cls, volumes: dict[str, tuple[str, Volume]], title: str, kind: str,
                     **kwargs) -> "Study":
        """Volumes already in memory: ``{key: (label, volume)}``."""
        entries = [entry_from_volume(k, label, v) for k, (label, v) in volumes.items()]
        return cls(entries, title=title, kind=kind, **kwargs)

    # -- series -----------------------------------------------------------------------------
    @property
    def usable(self) -> list[SeriesEntry]:
        return [e for e in self.entries.values() if e.usable]

    @property
    def rows(self) -> list[dict]:
        return [e.row for e in self.entries.values()]

    @property
    def labels(self) -> dict[str, str]:
        return {e.key: e.label for e in self.usable}

    @property
    def choices(self) -> list[tuple[str, str]]:
        return [(e.label, e.key) for e in self.usable]

    def holds(self, entries: list[SeriesEntry] | None = None, limit: int = 8) -> str:
        """A brief list of series (with their study index when the folder holds several)."""
        shown = list(self.entries.values()) if entries is None else entries
        if not shown:
            return "no image series"

        def name(e: SeriesEntry) -> str:
            number = f"#{e.series_number} " if e.series_number is not None else ""
            where = f" (study {e.row['study']})" if self.n_studies > 1 else ""
            return f"{number}'{e.description or e.key}' {e.weighting} {e.plane}{where}"
        text = "; ".join(name(e) for e in shown[:limit])
        return text + (f"; and {len(shown) - limit} more" if len(shown) > limit else "")

    def _several_exams(self) -> str:
        if self.n_studies <= 1:
            return ""
        patients = f" of {self.n_patients} patients" if self.n_patients > 1 else ""
        return (f"the folder holds {self.n_studies} studies{patients}: give one study's folder, "
                "or name both series by SeriesInstanceUID. ")

    def find(self, key: str | int | None) -> SeriesEntry:
        """The one series matcher: entry key, SeriesInstanceUID, series number, or a unique
        (case-insensitive) description substring."""
        text = str(key if key is not None else "").strip()
        if not text:
            raise SeriesError("no series named")
        usable = self.usable
        exact = [e for e in usable if text in (e.key, e.series_uid)]
        if exact:
            return exact[0]
        hits = [e for e in usable if e.series_number is not None and text == str(e.series_number)]
        if not hits:
            hits = [e for e in usable if text.lower() in (e.description or e.label).lower()]
        if len(hits) == 1:
            return hits[0]
        what = "matches several series" if hits else "matches no usable series"
        raise SeriesError(f"'{text}' {what}; {self._several_exams()}the folder holds: "
                          f"{self.holds(hits or None)}", self.source)

    def volume(self, key: str) -> Volume:
        """The decoded volume of one series (decoded on first use, then kept)."""
        entry = self.find(key)
        with self._lock:
            if entry.volume is None:
                assert entry.loader is not None, "an entry has a volume or a loader"
                entry.volume = entry.loader()
                self.decoded.append(entry.key)
            return entry.volume

    # -- pairing ----------------------------------------------------------------------------
    def choose_pair(self, t1: str | None = None, t2: str | None = None,
                    policy: PairPolicy = "strict", allow_mixed: bool = False) -> SeriesPair:
        """The T1 and T2 series: those named, else by ``policy`` (see the module docstring).
        T1 and T2 of different patients or studies are refused unless ``allow_mixed``."""
        notes: list[str] = []
        picked = {"T1": self.find(t1).key if t1 else None,
                  "T2": self.find(t2).key if t2 else None}
        guessed = False
        for weighting in ("T1", "T2"):
            if picked[weighting] is not None:
                continue
            taken = {k for k in picked.values() if k}
            key, note = (self._strict(weighting) if policy == "strict"
                         else self._guess(weighting, taken))
            picked[weighting] = key
            if note:
                notes.append(note)
                guessed = True
        k1, k2 = picked["T1"], picked["T2"]
        assert k1 is not None and k2 is not None
        if k1 == k2:
            raise SeriesError(f"T1 and T2 are the same series ('{self.entries[k1].label}'): "
                              "choose a T1-weighted and a T2-weighted series", self.source)
        differ = self.entries[k1].origin.differs_from(self.entries[k2].origin)
        if differ and not allow_mixed:
            raise SeriesError(f"T1 '{self.entries[k1].label}' and T2 '{self.entries[k2].label}' "
                              f"come from different {differ}: a T1/T2 pair must be one exam of "
                              "one patient (force it only if you know they are)", self.source)
        if differ:
            notes.append(f"T1 and T2 come from different {differ} (forced by the user)")
        return SeriesPair(k1, k2, tuple(notes), guessed)

    def _ranked(self, weighting: str) -> list[SeriesEntry]:
        hits = [e for e in self.usable if e.weighting == weighting]
        return sorted(hits, key=lambda e: (e.plane != "sagittal", -e.n_slices))

    def _strict(self, weighting: str) -> tuple[str, str]:
        hits = [e for e in self.usable if e.weighting == weighting and e.plane == "sagittal"]
        if len(hits) == 1:
            return hits[0].key, ""
        what = "several" if hits else "no"
        flag = "--t1" if weighting == "T1" else "--t2"
        raise SeriesError(f"{what} sagittal {weighting} series found; {self._several_exams()}"
                          f"name one with {flag}. The folder holds: {self.holds()}", self.source)

    def _guess(self, weighting: str, taken: set[str]) -> tuple[str, str]:
        ranked = [e for e in self._ranked(weighting) if e.key not in taken]
        if taken:   # the partner of a chosen series comes from the same exam first
            origin = self.entries[next(iter(taken))].origin
            ranked.sort(key=lambda e: bool(e.origin.differs_from(origin)))
        if ranked:
            note = (f"several {weighting} series: the one with most sagittal slices was "
                    "chosen; check it" if len(self._ranked(weighting)) > 1 else "")
            return ranked[0].key, note
        rest = [e for e in self.usable if e.key not in taken and e.weighting != "STIR"]
        rest += [e for e in self.usable if e.key not in taken and e not in rest]
        if not rest:
            usable = self.usable
            what = (f"one usable series ({usable[0].weighting})" if len(usable) == 1
                    else "no usable series")
            raise SeriesError(f"only {what} found: the model needs a sagittal T1-weighted and "
                              "a T2-weighted series of the same study")
        return rest[0].key, (f"the headers do not identify a {weighting}-weighted series; "
                             f"'{rest[0].label}' is a guess: check it")

    def aligned(self, pair: SeriesPair) -> AlignedPair:
        """T1 and T2 of ``pair`` decoded and T2 aligned to T1 — once per pair."""
        key = (pair.t1, pair.t2)
        if key not in self._aligned:
            self._aligned[key] = align_pair(self.volume(pair.t1), self.volume(pair.t2))
        return self._aligned[key]
