"""The run folder before training starts: a new run's empty folder, a resumed run's record.

``run.json`` records the settings and manifest a run started with; ``--resume`` continues only
a run with the very same ones (other settings would silently mix two experiments). It also
records ``allow_outside``: whether the manifest's series may lie outside its folder
(:func:`spinefx.runtime.read_manifest`), so that the stages reading that manifest again
(resume, ``spinefx evaluate``, ``spinefx export``) grant the same permission
(:func:`manifest_permission`). The preprocessed inputs are cached under ``cache/``
(:func:`spinefx.train.data.preprocess_cases`).

Torch-free at import (torch loads with :func:`prepare_inputs`), so the torch-free evaluation
can ask :func:`manifest_permission`.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spinefx.runtime import Case, PreprocessConfig, read_manifest
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.files import atomic_write_json, read_json

from .errors import TrainingError
from .folds import subset

if TYPE_CHECKING:
    import torch

    from .distributed import Dist

RUN_RECORD = "run.json"
#: settings a run records only when they differ from these defaults (older runs lack them)
OPTIONAL_SETTINGS = {"roi_variants": 1}


def manifest_permission(run_dir: str | PathLike | None, manifest: str | PathLike,
                        allow_outside: bool = False) -> bool:
    """Whether ``manifest`` may name series outside its folder: when ``allow_outside`` is
    given now, or when the run in ``run_dir`` was trained on this very manifest (same resolved
    path) with the permission recorded in its ``run.json``. Any other manifest needs the flag
    now: a permission granted to one archive is not granted to another."""
    if allow_outside:
        return True
    if run_dir is None:
        return False
    try:
        record = read_json(Path(run_dir) / RUN_RECORD, required=False)
    except SpineFXError:
        return False  # an unreadable record grants nothing (its stage says what is wrong)
    if not isinstance(record, dict) or record.get("allow_outside") is not True:
        return False
    return record.get("manifest") == str(Path(manifest).resolve())


def check_run_folder(out: Path, settings: dict, manifest: Path, resume: bool) -> None:
    """A new run needs an empty folder; a resumed one the same settings and manifest."""
    existing = out.is_dir() and any(out.iterdir())
    if existing and not resume:
        raise FileExistsError(f"{out} is not empty: choose a new --out folder, or --resume "
                              "to continue the run there")
    if not (resume and existing):
        return
    if not (out / RUN_RECORD).is_file():
        raise TrainingError("cannot resume: no run.json here (not a spinefx run folder)", out)
    saved = read_json(out / RUN_RECORD)
    now, before = {**OPTIONAL_SETTINGS, **settings}, {**OPTIONAL_SETTINGS, **saved["settings"]}
    diffs = [k for k in now if before.get(k) != now[k]]
    if diffs or saved.get("manifest") != str(manifest):
        raise TrainingError(f"cannot resume: this run was started with other settings "
                            f"({', '.join(diffs) or 'manifest'}); use the original options or "
                            "a new --out folder", out)


def prepare_inputs(out: Path, manifest: Path, settings: dict, dd: Dist, device: torch.device,
                   progress: bool, allow_outside: bool = False) -> tuple[list[Case], np.ndarray]:
    """The run's cases (``max_cases``: a seeded subset) and their preprocessed inputs; rank 0
    writes ``run.json`` and the cache, the other ranks then read the cache. ``allow_outside``
    (or, on resume, the permission ``run.json`` recorded) lets series lie outside the
    manifest's folder; ``run.json`` records it. ``settings["roi_variants"]`` K > 1 (absent: 1)
    gives the (N, K, C, S, S) stack of :func:`spinefx.train.data.preprocess_cases`."""
    from .data import preprocess_cases

    allow_outside = manifest_permission(out, manifest, allow_outside)
    cases = subset(read_manifest(manifest, allow_outside=allow_outside),
                   settings["max_cases"], settings["seed"])
    if any(c.label is None for c in cases):
        raise TrainingError("every case needs a label to train", manifest)
    preprocess = PreprocessConfig(image_size=settings["image_size"])
    variants = int(settings.get("roi_variants", 1))  # (N, K, C, S, S) when > 1
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / RUN_RECORD).is_file():
            atomic_write_json(out / RUN_RECORD, {
                "settings": settings, "manifest": str(manifest),
                "allow_outside": allow_outside,
                "preprocess": preprocess.to_dict(), "world_size": dd.world,
                "device": device.type})
        arrays = preprocess_cases(cases, preprocess, out / "cache", progress=progress,
                                  roi_variants=variants)
    dd.barrier()
    if not dd.main:
        arrays = preprocess_cases(cases, preprocess, out / "cache", progress=False,
                                  roi_variants=variants)
    return cases, arrays
