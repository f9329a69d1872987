"""The FAMILIES table wiring mutators to entry points, and the fuzz loop."""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Callable

from tests.fuzz.mutate_dicom import DICOM_FAMILIES, gen_codec, gen_dicom, gen_enhanced
from tests.fuzz.mutate_e2e import E2E_FAMILIES, gen_e2e
from tests.fuzz.mutate_files import gen_folder, gen_special_file, gen_study_path
from tests.fuzz.mutate_images import (
    IMAGE_FAMILIES,
    NIFTI_FAMILIES,
    NPY_FAMILIES,
    gen_image,
    gen_nifti,
    gen_npy,
)
from tests.fuzz.mutate_manifest import MANIFEST_FAMILIES, gen_manifest
from tests.fuzz.runner import (
    DEFAULT_MEM_BYTES,
    DEFAULT_TIMEOUT_S,
    FuzzInput,
    Outcome,
    Report,
    run_case,
)
from tests.fuzz.seeds import Seeds, make_seeds

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
