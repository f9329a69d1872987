"""Generate a whole synthetic cohort on disk: DICOM series, masks, manifest.csv, cohort.json.

Layout (paths in the manifest are relative to its folder)::

    out_dir/manifest.csv
    out_dir/cohort.json
    out_dir/cases/case_0001/t1/<hash>.dcm ...
    out_dir/cases/case_0001/t2/<hash>.dcm ...
    out_dir/cases/case_0001/masks.npz        # lesion, vertebra: uint8 (slices, rows, cols), T1 grid

Cases are independent (each has its own seed derived from the cohort seed and its index), so
they are rendered in parallel worker processes and the result does not depend on the number
of workers.
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import shutil
import zipfile
from concurrent.futures import ProcessPoolExecutor
from os import PathLike
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spinefx._version import __version__
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.features import FEATURE_KEYS
from spinefx.runtime.files import atomic_write_csv, atomic_write_json, read_json
from spinefx.runtime.provenance import is_synthetic_record

from .appearance import PROBABILITIES, feature_probabilities
from .case import T2_OTHER_GRID_P, T2_SCALES, render_case
from .dicom_writer import write_case_dicom

GENERATOR = "spinefx.phantom"
PHANTOM_VERSION = 1  # bump when the same seed would render different images
MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1", "box_y1", "level",
    "mask", *FEATURE_KEYS, "patient_id",
)


class CohortExistsError(SpineFXError, ValueError):
    """The output folder holds something that is not a phantom cohort: never overwritten."""


def generate_cohort(out_dir: str | PathLike, n_cases: int = 190, n_malignant: int = 50,
                    seed: int = 0, difficulty: float = 1.0, progress: bool = True,
                    workers: int | None = None) -> Path:
    """Write a synthetic cohort and return the path of its ``manifest.csv``.

    Exactly ``n_malignant`` cases are malignant, the rest benign, in seeded random order.
    ``out_dir`` must be missing, empty or a previous phantom cohort (which is replaced);
    anything else raises :class:`CohortExistsError`. ``workers`` defaults to the CPU count
    (1 for small cohorts, where starting processes costs more than it saves).
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if not 0 <= n_malignant <= n_cases:
        raise ValueError(f"n_malignant must be within 0..n_cases ({n_cases}), got {n_malignant}")
    feature_probabilities("benign", difficulty)  # validates difficulty before touching disk
    out = Path(out_dir)
    _prepare(out)

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    malignant = set(rng.permutation(n_cases)[:n_malignant].tolist())
    width = max(4, len(str(n_cases)))
    jobs = []
    for i in range(n_cases):
        case_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        label = "malignant" if i in malignant else "benign"
        jobs.append((str(out), f"case_{i + 1:0{width}d}", case_seed, label, float(difficulty)))

    if workers is None:
        workers = 1 if n_cases < 12 else min(os.cpu_count() or 1, 8)
    # disable=None: tqdm shows the bar on a terminal only (and honours TQDM_DISABLE)
    bar = tqdm(total=n_cases, desc="phantom cohort", unit="case",
               disable=None if progress else True)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        # fork: no re-import of the caller's __main__ (scripts without a main guard work)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            rows = []
            for row in pool.map(_make_case, jobs, chunksize=2):
                rows.append(row)
                bar.update()
    else:
        rows = []
        for job in jobs:
            rows.append(_make_case(job))
            bar.update()
    bar.close()

    manifest = atomic_write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    info = {
        "generator": GENERATOR,
        "generator_version": PHANTOM_VERSION,
        "spinefx_version": __version__,
        "synthetic": True,
        "seed": int(seed),
        "n_cases": n_cases,
        "n_malignant": n_malignant,
        "difficulty": float(difficulty),
        "manifest": manifest.name,
        "probabilities": {k: {"benign": b, "malignant": m} for k, (b, m) in PROBABILITIES.items()},
        "probabilities_at_difficulty": {
            label: feature_probabilities(label, difficulty) for label in ("benign", "malignant")},
        "t2_other_grid": {"share": T2_OTHER_GRID_P, "spacing_factors": list(T2_SCALES)},
        "note": "SYNTHETIC phantom images for testing and demonstration; not patient data.",
    }
    atomic_write_json(out / "cohort.json", info)   # last: its presence marks a complete cohort
    return manifest


def _make_case(job: tuple[str, str, int, str, float]) -> dict:
    out, case_id, case_seed, label, difficulty = job
    case = render_case(case_seed, label, difficulty)
    rel = Path("cases") / case_id
    folder = Path(out) / rel
    write_case_dicom(case, folder, case_id)
    save_npz(folder / "masks.npz", lesion=case.lesion_mask, vertebra=case.vertebra_mask)
    x0, y0, x1, y1 = case.box
    row = {"case_id": case_id, "label": label, "t1": (rel / "t1").as_posix(),
           "t2": (rel / "t2").as_posix(), "slice": case.slice, "box_x0": x0, "box_y0": y0,
           "box_x1": x1, "box_y1": y1, "level": case.level,
           "mask": (rel / "masks.npz").as_posix(), "patient_id": case_id}
    row.update(case.features)
    return row


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
