"""Fuzz harness for spinefx.runtime's readers: seeds, mutators, a sandboxed runner.

The contract (README, "Reading MRI"): every failure on bad input is a ``SpineFXError`` whose
message names the file (or manifest line) and the problem. Nothing else may escape (no other
exception, no ``BaseException`` such as pyo3's ``PanicException``), no input may hang past a
time limit or allocate past a memory bound, and no NaN/inf may reach the model input.

Each input runs in a forked child with ``RLIMIT_AS`` (default 3 GiB) and a wall-clock timeout,
so a hang or a huge allocation is reported as a finding, not a stuck test. An outcome is
``ok``, ``error`` (a ``SpineFXError`` naming the file) or ``finding`` (anything else).

Used by tests/fuzz/test_fuzz.py (bounded, fixed seeds) and benchmarks/fuzz.py (the long run).
This module only re-exports; the code lives in:

- ``runner``: FuzzInput, the targets, the forked runner, Outcome and Report
- ``seeds``: the small valid inputs every mutator starts from
- ``mutate_common``: byte flips, truncation, fresh case folders
- ``mutate_dicom``, ``mutate_files``, ``mutate_images``, ``mutate_manifest``, ``mutate_e2e``
- ``families``: the FAMILIES table wiring mutators to entry points, and the fuzz loop
"""
from __future__ import annotations

from tests.fuzz.families import FAMILIES, GENERATORS, fuzz, generate
from tests.fuzz.mutate_common import _copy_series, flip_bytes, truncate
from tests.fuzz.mutate_images import NPY_DESCR, npy_with_header, png_with_ihdr
from tests.fuzz.mutate_manifest import NUMERIC_CELLS, NUMERIC_COLS
from tests.fuzz.runner import (
    DEFAULT_MEM_BYTES,
    DEFAULT_TIMEOUT_S,
    TARGETS,
    FuzzInput,
    Outcome,
    Report,
    normalise_detail,
    run_case,
)
from tests.fuzz.seeds import Seeds, _seed_rows, make_seeds, manifest_text

__all__ = [
    "DEFAULT_MEM_BYTES", "DEFAULT_TIMEOUT_S", "FAMILIES", "GENERATORS", "NPY_DESCR",
    "NUMERIC_CELLS", "NUMERIC_COLS", "TARGETS", "FuzzInput", "Outcome", "Report", "Seeds",
    "_copy_series", "_seed_rows", "flip_bytes", "fuzz", "generate", "make_seeds",
    "manifest_text", "normalise_detail", "npy_with_header", "png_with_ihdr", "run_case",
    "truncate",
]
