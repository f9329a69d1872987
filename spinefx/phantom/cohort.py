"""Generate a whole synthetic cohort on disk: DICOM series, masks, manifest.csv, cohort.json.

Layout (paths in the manifest are relative to its folder)::

    out_dir/manifest.csv
    out_dir/cohort.json
    out_dir/cases/case_0001/t1/<hash>.dcm ...
    out_dir/cases/case_0001/t2/<hash>.dcm ...
    out_dir/cases/case_0001/masks.npz

``masks.npz`` (uint8 (slices, rows, cols) on the T1 grid, ``np.load(..., allow_pickle=False)``):
``lesion`` (abnormal marrow of the fractured body), ``vertebra`` (the fractured body),
``bodies`` and ``discs`` (label maps: value i + 1 = ``level_names[i]``, a disc numbered after the
body above it), ``level_names`` (fixed-width unicode); when the T2 series has its own grid also
``t2_lesion``, ``t2_vertebra``, ``t2_bodies``, ``t2_discs`` on that grid.

The plan of seeds, labels and patients is :func:`spinefx.phantom.stream.plan_cohort`, shared with
the in-memory stream (:func:`spinefx.phantom.stream.iter_cases`). Cases are independent (each
has its own seed), so they are rendered in parallel worker processes and the result does not
depend on the number of workers.
"""
from __future__ import annotations

import csv
import shutil
import zipfile
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from spinefx._version import __version__
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.features import FEATURE_KEYS
from spinefx.runtime.files import atomic_write_csv, atomic_write_json, read_json
from spinefx.runtime.provenance import is_synthetic_record

from . import appearance, confounders
from .appearance import PROBABILITIES, feature_probabilities
from .case import T2_OTHER_GRID_P, T2_SCALES, PhantomCase
from .dicom_writer import write_case_dicom
from .stream import (
    CasePlan,
    case_row,
    check_cohort_request,
    default_workers,
    ordered_map,
    plan_cohort,
    render_planned,
)

GENERATOR = "spinefx.phantom"
PHANTOM_VERSION = 2  # bump when the same seed would render different images
MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1", "box_y1", "level",
    "mask", *FEATURE_KEYS, "patient_id",
)
MASK_NAMES = ("lesion", "vertebra", "bodies", "discs")


class CohortExistsError(SpineFXError, ValueError):
    """The output folder holds something that is not a phantom cohort: never overwritten."""


def generate_cohort(out_dir: str | PathLike, n_cases: int = 190, n_malignant: int = 50,
                    seed: int = 0, difficulty: float = 1.0, progress: bool = True,
                    workers: int | None = None, variation: float = 1.0,
                    cases_per_patient: int = 1) -> Path:
    """Write a synthetic cohort and return the path of its ``manifest.csv``.

    Exactly ``n_malignant`` cases are malignant, the rest benign, in seeded random order.
    ``cases_per_patient`` > 1: patients with that many cases (distinct fractured levels, one
    spine); the label is the patient's (see :mod:`spinefx.phantom.stream`). ``variation``: 0 =
    the nominal (v1-like) look, 1 = full randomisation. ``out_dir`` must be missing, empty or a
    previous phantom cohort (which is replaced); anything else raises
    :class:`CohortExistsError`. ``workers`` defaults to the CPU count (1 for small cohorts).
    """
    check_cohort_request(n_cases, n_malignant, difficulty, variation, cases_per_patient)
    plans = plan_cohort(seed, n_cases, n_malignant, cases_per_patient)
    out = Path(out_dir)
    _prepare(out)

    jobs = [(str(out), plan, float(difficulty), float(variation)) for plan in plans]
    n_workers = default_workers(n_cases) if workers is None else max(1, int(workers))
    # disable=None: tqdm shows the bar on a terminal only (and honours TQDM_DISABLE)
    with tqdm(total=n_cases, desc="phantom cohort", unit="case",
              disable=None if progress else True) as bar:
        rows = []
        for row in ordered_map(_make_case, jobs, n_workers):
            rows.append(row)
            bar.update()

    manifest = atomic_write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    info = _cohort_info(plans, seed, n_malignant, difficulty, variation, cases_per_patient)
    info["manifest"] = manifest.name
    atomic_write_json(out / "cohort.json", info)   # last: its presence marks a complete cohort
    return manifest


def _cohort_info(plans: list[CasePlan], seed: int, n_malignant: int, difficulty: float,
                 variation: float, cases_per_patient: int) -> dict[str, Any]:
    """cohort.json: the parameters, the tables of every class-dependent draw, the plan."""
    return {
        "generator": GENERATOR,
        "generator_version": PHANTOM_VERSION,
        "spinefx_version": __version__,
        "synthetic": True,
        "seed": int(seed),
        "n_cases": len(plans),
        "n_malignant": int(n_malignant),
        "n_patients": len({p.patient_id for p in plans}),
        "cases_per_patient": int(cases_per_patient),
        "label_unit": "patient",  # every case of a patient has the patient's label
        "difficulty": float(difficulty),
        "variation": float(variation),
        "probabilities": {k: {"benign": b, "malignant": m} for k, (b, m) in PROBABILITIES.items()},
        "probabilities_at_difficulty": {
            label: feature_probabilities(label, difficulty) for label in ("benign", "malignant")},
        "tables": _tables(),
        "t2_other_grid": {"share": T2_OTHER_GRID_P, "spacing_factors": list(T2_SCALES)},
        # enough to render any case again in memory: render_case(seed, label, difficulty,
        # variation=..., patient_seed=..., level=...) (level None: the seed draws it)
        "plan": [{"case_id": p.case_id, "patient_id": p.patient_id, "seed": p.seed,
                  "patient_seed": p.patient_seed, "level": p.level} for p in plans],
        "note": "SYNTHETIC phantom images for testing and demonstration; not patient data.",
    }


def _tables() -> dict[str, str]:
    """The Markdown tables the README shows: every class-dependent draw (the features) and
    the class-independent confounder rates."""
    return {"features": appearance.probability_table_markdown(),
            "confounders": confounders.confounder_table_markdown()}


def _make_case(job: tuple[str, CasePlan, float, float]) -> dict[str, Any]:
    out, plan, difficulty, variation = job
    case = render_planned(plan, difficulty, variation)
    rel = Path("cases") / plan.case_id
    folder = Path(out) / rel
    write_case_dicom(case, folder, plan.case_id)
    save_npz(folder / "masks.npz", **mask_arrays(case))
    row = case_row(plan, case)
    row.update({"t1": (rel / "t1").as_posix(), "t2": (rel / "t2").as_posix(),
                "mask": (rel / "masks.npz").as_posix()})
    return row


def mask_arrays(case: PhantomCase) -> dict[str, np.ndarray]:
    """What ``masks.npz`` holds (see the module docstring)."""
    t1 = case.masks("t1")
    arrays = {name: np.asarray(t1[name], dtype=np.uint8) for name in MASK_NAMES}
    arrays["level_names"] = np.array(case.level_names, dtype=np.str_)  # '<U3': no pickle
    if not case.t2_same_grid:
        t2 = case.masks("t2")
        arrays.update({f"t2_{name}": np.asarray(t2[name], dtype=np.uint8)
                       for name in MASK_NAMES})
    return arrays


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but byte-identical across runs (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _prepare(out: Path) -> None:
    """Make ``out`` ready: create it, or clear a previous cohort; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise CohortExistsError(f"{out}: exists and is not a folder; choose another output folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not is_cohort(out):
        raise CohortExistsError(
            f"{out}: folder is not empty and holds no phantom cohort (no cohort.json from "
            f"{GENERATOR}); refusing to write into it. Choose an empty or new folder.")
    # A previous cohort: remove exactly what it wrote, keep anything else.
    manifest = out / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                case_dir = out / "cases" / Path(row.get("case_id", "")).name
                if row.get("case_id") and case_dir.is_dir():
                    shutil.rmtree(case_dir)
        manifest.unlink()
    cases = out / "cases"
    if cases.is_dir() and not any(cases.iterdir()):
        cases.rmdir()
    (out / "cohort.json").unlink()


def is_cohort(folder: str | PathLike) -> bool:
    """True if ``folder`` holds a cohort written by this generator."""
    try:
        info = read_json(Path(folder) / "cohort.json", required=False)
    except SpineFXError:
        return False
    return (isinstance(info, dict) and info.get("generator") == GENERATOR
            and is_synthetic_record(info))
