"""The run folder before training starts: a new run's empty folder, a resumed run's record.

``run.json`` records the settings and manifest a run started with; ``--resume`` continues only
a run with the very same ones (other settings would silently mix two experiments). The
preprocessed inputs are cached under ``cache/`` (:func:`spinefx.train.data.preprocess_cases`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spinefx.runtime import Case, PreprocessConfig, read_manifest
from spinefx.runtime.files import atomic_write_json, read_json

from .data import preprocess_cases
from .distributed import Dist
from .errors import TrainingError
from .folds import subset


def check_run_folder(out: Path, settings: dict, manifest: Path, resume: bool) -> None:
    """A new run needs an empty folder; a resumed one the same settings and manifest."""
    existing = out.is_dir() and any(out.iterdir())
    if existing and not resume:
        raise FileExistsError(f"{out} is not empty: choose a new --out folder, or --resume "
                              "to continue the run there")
    if not (resume and existing):
        return
    if not (out / "run.json").is_file():
        raise TrainingError("cannot resume: no run.json here (not a spinefx run folder)", out)
    saved = read_json(out / "run.json")
    diffs = [k for k in settings if saved["settings"].get(k) != settings[k]]
    if diffs or saved.get("manifest") != str(manifest):
        raise TrainingError(f"cannot resume: this run was started with other settings "
                            f"({', '.join(diffs) or 'manifest'}); use the original options or "
                            "a new --out folder", out)


def prepare_inputs(out: Path, manifest: Path, settings: dict, dd: Dist, device: torch.device,
                   progress: bool) -> tuple[list[Case], np.ndarray]:
    """The run's cases (``max_cases``: a seeded subset) and their preprocessed inputs; rank 0
    writes ``run.json`` and the cache, the other ranks then read the cache."""
    cases = subset(read_manifest(manifest), settings["max_cases"], settings["seed"])
    if any(c.label is None for c in cases):
        raise TrainingError("every case needs a label to train", manifest)
    preprocess = PreprocessConfig(image_size=settings["image_size"])
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "run.json").is_file():
            atomic_write_json(out / "run.json", {
                "settings": settings, "manifest": str(manifest),
                "preprocess": preprocess.to_dict(), "world_size": dd.world,
                "device": device.type})
        arrays = preprocess_cases(cases, preprocess, out / "cache", progress=progress)
    dd.barrier()
    if not dd.main:
        arrays = preprocess_cases(cases, preprocess, out / "cache", progress=False)
    return cases, arrays
