"""Phantom factories for the tests.

- :func:`phantom_volumes`: one case as runtime :class:`~spinefx.runtime.Volume` objects, for
  tests that are not about DICOM (nothing is written; a case rendered in memory costs
  ~0.1-0.2 s, writing and reading it back as DICOM comes on top).
"""
from __future__ import annotations


def phantom_volumes(seed: int, label: str, difficulty: float = 1.0, **overrides):
    """``(t1, t2, case)``: one phantom rendered in memory, T1 and T2 as runtime Volumes with the
    pixels and geometry its DICOM series would load with (no files written)."""
    from spinefx.phantom import render_case
    from spinefx.phantom.case import case_volumes

    case = render_case(seed, label, difficulty, **overrides)
    t1, t2 = case_volumes(case)
    return t1, t2, case
