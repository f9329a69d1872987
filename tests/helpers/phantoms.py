"""Phantom factories for the tests: cohorts built once per session, phantoms in memory.

A cohort case costs ~0.85 s (render, DICOM, masks), a case rendered in memory ~0.1-0.2 s.

- :class:`CohortCache` (the session fixture ``phantom_cohorts`` of tests/conftest.py): every
  cohort the tests need, keyed by its generator parameters (``n_cases``, ``n_malignant``,
  ``seed``, ``difficulty``, ``cases_per_patient``), generated once per session with
  :func:`spinefx.phantom.generate_cohort` under the session's temporary folder; every folder
  that asks for the same parameters gets the same manifest. Cached cohorts are read-only: a test
  that edits a manifest or writes into the cohort takes a :meth:`CohortCache.private_copy`.
- :func:`phantom_volumes`: one case as runtime :class:`~spinefx.runtime.Volume` objects, for
  tests that are not about DICOM (nothing is written).

No cache outlives the session on purpose: the generator's version (``PHANTOM_VERSION``) is
bumped by hand, so a cohort kept on disk under it could hide a generator change from exactly
the tests that should see it, and several sessions sharing a machine would race for it.
"""
from __future__ import annotations

import shutil
from pathlib import Path


class CohortCache:
    """Phantom cohorts under ``root``, each generated on first use; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._manifests: dict[tuple, Path] = {}

    def manifest(self, n_cases: int, n_malignant: int, seed: int = 0,
                 difficulty: float = 1.0, cases_per_patient: int = 1,
                 variation: float = 1.0) -> Path:
        """The ``manifest.csv`` of the cohort with these parameters (shared: do not modify)."""
        key = (int(n_cases), int(n_malignant), int(seed), float(difficulty),
               int(cases_per_patient), float(variation))
        if key not in self._manifests:
            from spinefx.phantom import generate_cohort

            folder = self.root / "n{}-m{}-seed{}-d{}".format(*key[:4])
            if key[4] != 1:
                folder = folder.with_name(f"{folder.name}-k{key[4]}")
            if key[5] != 1.0:
                folder = folder.with_name(f"{folder.name}-v{key[5]}")
            self._manifests[key] = generate_cohort(folder, n_cases=key[0], n_malignant=key[1],
                                                   seed=key[2], difficulty=key[3],
                                                   cases_per_patient=key[4], variation=key[5],
                                                   progress=False)
        return self._manifests[key]

    def private_copy(self, dest: Path, n_cases: int, n_malignant: int, seed: int = 0,
                     difficulty: float = 1.0, cases_per_patient: int = 1,
                     variation: float = 1.0) -> Path:
        """A copy of that cohort in ``dest`` (the caller's to change); its manifest path."""
        source = self.manifest(n_cases, n_malignant, seed, difficulty, cases_per_patient,
                               variation)
        shutil.copytree(source.parent, dest)
        return Path(dest) / source.name


def phantom_volumes(seed: int, label: str, difficulty: float = 1.0, **overrides):
    """``(t1, t2, case)``: one phantom rendered in memory, T1 and T2 as runtime Volumes with the
    pixels and geometry its DICOM series would load with (no files written)."""
    from spinefx.phantom import render_case
    from spinefx.phantom.case import case_volumes

    case = render_case(seed, label, difficulty, **overrides)
    t1, t2 = case_volumes(case)
    return t1, t2, case
