"""A phantom cohort in memory: :func:`iter_cases` yields ``(row, case)`` without writing DICOM.

Training wants thousands of cases; writing them as DICOM costs disk and time, so this module
renders them on the fly. It also holds what the disk cohort (:mod:`spinefx.phantom.cohort`)
shares with it, so a streamed case is exactly the case the cohort of the same parameters writes:

- :func:`plan_cohort`: the case seeds, labels, patients and fractured levels of a cohort;
- :func:`render_planned`: one planned case as a :class:`~spinefx.phantom.case.PhantomCase`;
- :func:`case_row`: its manifest row (without the file columns ``t1``, ``t2``, ``mask``);
- :func:`ordered_map`: the worker pool both use (results in plan order, bounded memory).

Patients: with ``cases_per_patient=k`` every patient has ``k`` cases, each fracturing another
level (drawn without replacement from :data:`spinefx.phantom.spine.LESION_LEVELS` with its
weights) of one spine (one ``patient_seed``: anatomy, acquisition and contrast shared). The
label belongs to the patient (all of a patient's fractures are benign, or all malignant), and
``n_malignant`` counts cases exactly: malignant cases are grouped into patients of ``k`` and at
most one malignant patient holds the remainder, likewise for the benign cases.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
from tqdm import tqdm

from .appearance import class_gap
from .case import PhantomCase, render_case
from .spine import LESION_LEVELS

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class CasePlan:
    """What one case of a cohort is rendered from."""
    case_id: str
    patient_id: str
    label: str
    seed: int                  # the case's render_case seed
    patient_seed: int | None   # shared by the patient's cases; None = one case per patient
    level: str | None          # fractured level; None = the renderer draws it


def check_cohort_request(n_cases: int, n_malignant: int, difficulty: float = 1.0,
                         variation: float = 1.0, cases_per_patient: int = 1) -> None:
    """Raise ``ValueError`` naming the first parameter a cohort cannot be drawn with."""
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if not 0 <= n_malignant <= n_cases:
        raise ValueError(f"n_malignant must be within 0..n_cases ({n_cases}), got {n_malignant}")
    class_gap(difficulty)  # raises for a negative or non-finite difficulty
    if not (np.isfinite(variation) and 0.0 <= variation <= 1.0):
        raise ValueError(f"variation must be within 0..1, got {variation!r}")
    if not 1 <= cases_per_patient <= len(LESION_LEVELS):
        raise ValueError(f"cases_per_patient must be within 1..{len(LESION_LEVELS)} (the "
                         f"fracture levels {', '.join(LESION_LEVELS)}), got {cases_per_patient}")


def plan_cohort(seed: int, n_cases: int, n_malignant: int,
                cases_per_patient: int = 1) -> list[CasePlan]:
    """Every case of a cohort in manifest order (see the module docstring for patients)."""
    check_cohort_request(n_cases, n_malignant, cases_per_patient=cases_per_patient)
    k = int(cases_per_patient)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    patients = (_patient_sizes(n_malignant, k, "malignant")
                + _patient_sizes(n_cases - n_malignant, k, "benign"))
    width = max(4, len(str(n_cases)))
    plans: list[CasePlan] = []
    for p, j in enumerate(rng.permutation(len(patients)).tolist()):
        label, size = patients[j]
        patient = np.random.SeedSequence([int(seed), 0x9A71E47, p])
        # one case per patient: the v1 plan (the renderer draws the level, no shared patient)
        patient_seed = int(patient.generate_state(1)[0]) if k > 1 else None
        levels = _draw_levels(np.random.default_rng(patient), size) if k > 1 else [None]
        for level in levels:
            i = len(plans)
            case_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
            plans.append(CasePlan(case_id=f"case_{i + 1:0{width}d}",
                                  patient_id=f"patient_{p + 1:0{width}d}", label=label,
                                  seed=case_seed, patient_seed=patient_seed, level=level))
    return plans


def _patient_sizes(n: int, k: int, label: str) -> list[tuple[str, int]]:
    full, rest = divmod(n, k)
    return [(label, k)] * full + ([(label, rest)] if rest else [])


def _draw_levels(rng: np.random.Generator, size: int) -> list[str | None]:
    """``size`` distinct fractured levels, weighted like the renderer's own level draw."""
    names = list(LESION_LEVELS)
    weights = np.asarray(list(LESION_LEVELS.values()), dtype=np.float64)
    picks = rng.choice(len(names), size=size, replace=False, p=weights / weights.sum())
    return [names[int(i)] for i in picks]


def render_planned(plan: CasePlan, difficulty: float = 1.0, variation: float = 1.0,
                   **overrides: Any) -> PhantomCase:
    """Render one planned case in memory (``overrides`` go to :func:`render_case`)."""
    if plan.level is not None:
        if "level" in overrides:
            raise ValueError("a cohort with several cases per patient plans each case's level; "
                             "a level override cannot apply")
        overrides["level"] = plan.level
    return render_case(plan.seed, plan.label, difficulty, variation=variation,
                       patient_seed=plan.patient_seed, **overrides)


def case_row(plan: CasePlan, case: PhantomCase) -> dict[str, Any]:
    """The case's manifest row without the file columns (``t1``, ``t2``, ``mask``)."""
    x0, y0, x1, y1 = case.box
    row: dict[str, Any] = {"case_id": plan.case_id, "label": plan.label, "slice": case.slice,
                           "box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1,
                           "level": case.level, "patient_id": plan.patient_id}
    row.update(case.features)
    return row


def default_workers(n_cases: int) -> int:
    """The CPU count (at most 8), or 1 for small cohorts where starting processes costs more
    than it saves."""
    return 1 if n_cases < 12 else min(os.cpu_count() or 1, 8)


def ordered_map(fn: Callable[[J], R], jobs: Iterable[J], workers: int,
                window: int | None = None) -> Iterator[R]:
    """``fn`` over ``jobs`` in ``workers`` forked processes, results in job order; at most
    ``window`` (default 2 x workers) jobs in flight, so a slow consumer bounds the memory.
    One worker (or no ``fork``): in this process."""
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, jobs)
        return
    # fork: no re-import of the caller's __main__ (scripts without a main guard work)
    ctx = multiprocessing.get_context("fork")
    todo = iter(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque[Future[R]] = deque(
            pool.submit(fn, job) for job in islice(todo, window or 2 * workers))
        try:
            while pending:
                result = pending.popleft().result()
                pending.extend(pool.submit(fn, job) for job in islice(todo, 1))  # refill
                yield result
        finally:  # a consumer that stops early: drop what has not started
            for future in pending:
                future.cancel()


def _render_job(job: tuple[CasePlan, float, float, dict]) -> tuple[dict[str, Any], PhantomCase]:
    plan, difficulty, variation, overrides = job
    case = render_planned(plan, difficulty, variation, **overrides)
    return case_row(plan, case), case


def iter_cases(seed: int, n_cases: int, n_malignant: int, difficulty: float = 1.0,
               variation: float = 1.0, cases_per_patient: int = 1, workers: int | None = None,
               progress: bool = True, **overrides: Any
               ) -> Iterator[tuple[dict[str, Any], PhantomCase]]:
    """Yield ``(row, case)`` for every case of the cohort
    :func:`~spinefx.phantom.generate_cohort` would write with these parameters, in manifest
    order, rendered in memory (no files). ``row`` is the manifest row without ``t1``, ``t2``,
    ``mask``. ``overrides`` (e.g. ``n_slices=5``) go to every :func:`render_case` call; without
    them the cases are exactly the disk cohort's. ``workers``: forked processes (default: see
    :func:`default_workers`); the cases do not depend on it."""
    check_cohort_request(n_cases, n_malignant, difficulty, variation, cases_per_patient)
    plans = plan_cohort(seed, n_cases, n_malignant, cases_per_patient)
    jobs = ((plan, float(difficulty), float(variation), dict(overrides)) for plan in plans)
    n_workers = default_workers(n_cases) if workers is None else max(1, int(workers))
    # disable=None: tqdm shows the bar on a terminal only (and honours TQDM_DISABLE)
    with tqdm(total=n_cases, desc="phantom cases (in memory)", unit="case",
              disable=None if progress else True) as bar:
        for item in ordered_map(_render_job, jobs, n_workers):
            bar.update()
            yield item
