"""Example cases for read mode and the case library for teaching mode.

- Phantom examples and the bundled teaching set are SYNTHETIC, generated on first use (seeded,
  a few seconds) into a cache folder: ``$SPINEFX_DEMO_CACHE``, else
  ``$XDG_CACHE_HOME/spinefx/demo`` (``~/.cache/spinefx/demo``), else a temporary folder.
- Real-anatomy examples come from ``../shared/data/real-spine`` beside the repository (or
  ``$SPINEFX_REAL_SPINE``) when present; they have no ground truth and are labelled so.
- An instructor's own library is a folder with ``manifest.csv`` (the project's manifest format,
  with labels and, optionally, the 15 feature columns) given as ``--cases``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from spinefx.phantom import generate_cohort, write_phantom_study
from spinefx.runtime import (
    Case,
    SpineFXError,
    Volume,
    load_image_slices,
    load_volume,
    read_manifest,
)
from spinefx.runtime.errors import ManifestError
from spinefx.runtime.preprocess import box_from_center
from spinefx.runtime.provenance import manifest_provenance
from spinefx.runtime.study import SeriesPair, Study, entry_from_volume

from .ingest import natural_key

T = TypeVar("T")

log = logging.getLogger("spinefx.demo")

REPO = Path(__file__).resolve().parent.parent
TEACHING_CASES, TEACHING_MALIGNANT, TEACHING_SEED = 12, 5, 2022
CACHE_VERSION = 2  # bump when the examples or the teaching set change (2: phantom v2)
# The examples and the teaching set keep v2's nominal look (variation 0): it reads most
# clearly for teaching, and the bundled model (trained at variation 1) does no worse there
# (AUC 0.921 at variation 0, 0.869 at 1 on 120 cases, seed 77:
# python benchmarks/model_on_phantoms.py --model weights --cases 120 --variation 0 1).
PHANTOM_VARIATION = 0.0


def default_cache_dir() -> Path:
    env = os.environ.get("SPINEFX_DEMO_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "spinefx" / "demo"


def real_spine_dir() -> Path | None:
    """``../shared/data/real-spine`` beside the repository, if this checkout has one."""
    env = os.environ.get("SPINEFX_REAL_SPINE")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data" / "real-spine",
                   Path.cwd().parent / "shared" / "data" / "real-spine"]
    return next((c for c in candidates if (c / "README.md").is_file()), None)


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return folder
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"spinefx-demo-cache-{os.getuid()}"
        log.warning("cache folder %s is not writable; using %s", folder, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _build_once(target: Path, build) -> Path:
    """Build ``target`` (a folder) with ``build(tmp)`` unless it exists; atomic by rename, so
    two processes starting at once never see a half-written folder."""
    if (target / ".complete").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            if target.exists():  # an incomplete leftover from a killed process
                shutil.rmtree(target)
            tmp.rename(target)
        except OSError:
            if not (target / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Read-mode examples
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    key: str
    title: str          # button text
    kind: str           # 'phantom' | 'real-png' | 'real-npz'
    blurb: str
    seed: int = 0
    label: str = ""
    difficulty: float = 1.0


PHANTOM_EXAMPLES = (
    Example("phantom_malignant", "Phantom: malignant (SYNTHETIC)", "phantom",
            "SYNTHETIC phantom, ground truth malignant", seed=7, label="malignant"),
    Example("phantom_benign", "Phantom: benign (SYNTHETIC)", "phantom",
            "SYNTHETIC phantom, ground truth benign", seed=8, label="benign"),
    Example("phantom_atypical", "Phantom: atypical benign (SYNTHETIC)", "phantom",
            "SYNTHETIC phantom drawn with extra overlap between the classes, ground truth benign",
            seed=21, label="benign", difficulty=2.0),
)
REAL_EXAMPLES = (
    Example("real_dzz", "Real MRI: lumbar T1+T2 (no ground truth)", "real-npz",
            "real MRI, no ground truth: a healthy subject's T1 TSE + T2 TSE on one 1 mm grid "
            "(public vertebral-body segmentation data); any probability here is meaningless "
            "for diagnosis"),
    Example("real_aka3", "Real MRI: PNG slices (no ground truth)", "real-png",
            "real MRI, no ground truth: T1 FSE (AKa3) + T2 frFSE (AKs5) PNG slices of one exam "
            "(Zukic et al. 2014); PNGs carry no geometry, so T1 and T2 are paired slice by "
            "slice without registration"),
)


class Library:
    """Examples and the teaching set, built lazily and shared by every session."""

    def __init__(self, cache_dir: str | PathLike | None = None,
                 cases_dir: str | PathLike | None = None, allow_outside: bool = False):
        """``allow_outside``: the instructor manifest's series may lie outside its folder
        (absolute paths, as a department's own archive often has them)."""
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.real_dir = real_spine_dir()
        self._lock = threading.Lock()
        self._teaching: list[Case] | None = None
        self.instructor_manifest = _find_manifest(cases_dir) if cases_dir else None
        if self.instructor_manifest is not None:
            cases = read_manifest(self.instructor_manifest, allow_outside=allow_outside)
            self._teaching = _check_teaching(cases, self.instructor_manifest)
        self._volumes: OrderedDict[tuple, Any] = OrderedDict()   # example volumes, studies

    # -- examples ----------------------------------------------------------------------------
    @property
    def examples(self) -> tuple[Example, ...]:
        return PHANTOM_EXAMPLES + (REAL_EXAMPLES if self.real_dir else ())

    def example(self, key: str) -> Example:
        for e in self.examples:
            if e.key == key:
                return e
        names = ", ".join(e.key for e in self.examples)
        raise SpineFXError(f"no example named {key!r} (available: {names})")

    def _phantom_root(self) -> Path:
        def build(tmp: Path) -> None:
            for e in PHANTOM_EXAMPLES:
                _, _, case = write_phantom_study(tmp / e.key, seed=e.seed, label=e.label,
                                                 case_id=e.key, difficulty=e.difficulty,
                                                 variation=PHANTOM_VARIATION)
                (tmp / e.key / "case.json").write_text(json.dumps({
                    "label": case.label, "slice": int(case.slice),
                    "box": [int(v) for v in case.box], "level": case.level,
                    "features": {k: int(v) for k, v in case.features.items()},
                    "synthetic": True}, indent=2))

        root = _writable(self.cache_dir)
        with self._lock:
            return _build_once(root / f"examples-v{CACHE_VERSION}", build)

    def load_example(self, key: str) -> Study:
        e = self.example(key)
        if e.kind == "phantom":
            folder = self._phantom_root() / e.key
            info = json.loads((folder / "case.json").read_text())
            t1, t2 = self._cached(("example", key), lambda: (load_volume(folder / "t1", "T1"),
                                                              load_volume(folder / "t2", "T2")))
            truth = {"label": info["label"], "level": info["level"],
                     "features": info["features"], "synthetic": True,
                     "source": "SYNTHETIC phantom"}
            return _example_study(e, t1, t2, info["slice"], tuple(info["box"]), truth,
                                  ["SYNTHETIC phantom: ground truth known"])
        if self.real_dir is None:
            raise SpineFXError("the real-MRI examples need ../shared/data/real-spine, which "
                               "this installation does not have")
        if e.kind == "real-npz":
            def load():
                vols = []
                for name, w in (("t1", "T1"), ("t2", "T2")):
                    with np.load(self.real_dir / f"dzz_{name}.npz", allow_pickle=False) as z:
                        data = np.moveaxis(z["image"], 2, 0)  # axis 2 is the sagittal axis
                        if name == "t1":
                            labels = np.moveaxis(z["vertebral_bodies"], 2, 0)
                    vols.append(Volume.from_array(data, pixel_spacing=(1.0, 1.0),
                                                  slice_spacing=1.0, weighting=w,
                                                  source=f"DzZ {w}"))
                vols[0].metadata["body_mask"] = labels == 1  # a mid-lumbar body, label 1
                return tuple(vols)
            t1, t2 = self._cached(("example", key), load)
            mask = t1.metadata["body_mask"]
            present = np.flatnonzero(mask.any(axis=(1, 2)))
            k = int(present[len(present) // 2])
            ys, xs = np.nonzero(mask[k])
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            return _example_study(e, t1, t2, k, box, {"label": None, "source": "real MRI"},
                                  [e.blurb])
        slices = self.real_dir / "spinesource" / "slices"

        def load_png():
            vols = []
            for exam, w in (("AKa3", "T1"), ("AKs5", "T2")):
                files = sorted(slices.glob(f"{exam}_*.png"), key=lambda p: natural_key(p.name))
                vol = load_image_slices(files, w)
                vols.append(vol.with_data(vol.data, source=f"{exam} {w}", slice_sources=()))
            return tuple(vols)
        t1, t2 = self._cached(("example", key), load_png)
        box = self._info_box("AKa3_7.png", 5) or (200, 223, 258, 281)
        return _example_study(e, t1, t2, 7, box, {"label": None, "source": "real MRI"},
                              [e.blurb, "PNG slices carry no pixel spacing: 1 mm is assumed"])

    def _info_box(self, name: str, index: int) -> tuple[int, int, int, int] | None:
        """The index-th vertebra box listed for one slice in spinesource/info.txt."""
        if self.real_dir is None:
            return None
        try:
            lines = (self.real_dir / "spinesource" / "info.txt").read_text().splitlines()
            rows = [line.split() for line in lines if line.split()[:1] == [f"Slices/{name}"]]
            x, y, w, h = (int(v) for v in rows[index][2:6])
            return (x, y, x + w, y + h)
        except (OSError, IndexError, ValueError):
            return None

    def _cached(self, key: tuple, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return self._volumes[key]
        vols = load()
        with self._lock:
            self._volumes[key] = vols
            while len(self._volumes) > 12:
                self._volumes.popitem(last=False)
        return vols

    # -- teaching ----------------------------------------------------------------------------
    @property
    def teaching_source(self) -> str:
        if self.instructor_manifest is not None:
            n = len(self._teaching or [])
            return f"instructor's case library: {n} cases from {self.instructor_manifest}"
        return (f"bundled SYNTHETIC teaching set: {TEACHING_CASES} phantom cases "
                f"({TEACHING_MALIGNANT} malignant), generated on first use")

    @property
    def synthetic_teaching(self) -> bool:
        if self.instructor_manifest is None:
            return True
        return manifest_provenance(self.instructor_manifest).synthetic

    def teaching_cases(self) -> list[Case]:
        if self._teaching is not None:
            return self._teaching

        def build(tmp: Path) -> None:
            generate_cohort(tmp / "cohort", n_cases=TEACHING_CASES, n_malignant=TEACHING_MALIGNANT,
                            seed=TEACHING_SEED, difficulty=1.0, variation=PHANTOM_VARIATION,
                            progress=False, workers=1)

        root = _writable(self.cache_dir)
        with self._lock:
            if self._teaching is None:
                folder = _build_once(root / f"teaching-v{CACHE_VERSION}", build)
                self._teaching = _check_teaching(read_manifest(folder / "cohort" / "manifest.csv"),
                                                 folder / "cohort" / "manifest.csv")
        return self._teaching

    def teaching_study(self, case: Case, default_size_mm: float) -> Study:
        """One teaching case as a :class:`Study` (kept, so its pair is aligned once)."""
        def load() -> Study:
            t1, t2 = load_volume(case.t1, "T1"), load_volume(case.t2, "T2")
            box = case.box
            if box is None:
                assert case.center is not None, "a manifest case has a box or a centre"
                box = box_from_center(case.center, case.size_mm or default_size_mm,
                                      t1.pixel_spacing)
            study = Study.from_volumes({"T1": ("T1", t1), "T2": ("T2", t2)},
                                       title=case.case_id, kind="teaching",
                                       default_slice=case.slice, default_box=box)
            study.default_pair = SeriesPair("T1", "T2")
            return study
        return self._cached(("teaching", case.case_id, default_size_mm), load)


def _find_manifest(cases_dir: str | PathLike) -> Path:
    path = Path(cases_dir)
    if path.is_file():
        return path
    manifest = path / "manifest.csv"
    if not manifest.is_file():
        raise ManifestError("no manifest.csv here: --cases needs a folder with a manifest "
                            "(e.g. one written by `spinefx phantom`)", path)
    return manifest


def _check_teaching(cases: list[Case], manifest: Path) -> list[Case]:
    unlabelled = [c.case_id for c in cases if c.label is None]
    if unlabelled:
        raise ManifestError(f"teaching cases need a label; unlabelled: {', '.join(unlabelled[:5])}",
                            manifest)
    return cases


def _example_study(e: Example, t1: Volume, t2: Volume, k: int, box, truth: dict,
                   notes: list[str]) -> Study:
    rows = [{"series_number": None, "description": f"{e.title}: {w}", "modality": "MR",
             "plane": "sagittal", "weighting": w, "slices": v.n_slices,
             "matrix": f"{v.data.shape[1]}x{v.data.shape[2]}",
             "pixel_spacing_mm": [round(s, 3) for s in v.pixel_spacing],
             "slice_spacing_mm": round(v.slice_spacing, 3), "tr_ms": None, "te_ms": None,
             "ti_ms": None, "status": "usable"} for w, v in (("T1", t1), ("T2", t2))]
    entries = [entry_from_volume(w, f"{e.title}: {w}", v, row)
               for (w, v), row in zip((("T1", t1), ("T2", t2)), rows)]
    study = Study(entries, title=e.title, kind="example", notes=list(notes),
                  truth={**truth, "example": e.key}, default_slice=int(k),
                  default_box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])))
    study.default_pair = SeriesPair("T1", "T2")
    return study
