"""Shared fixtures. Tests mirror the package layout: tests/runtime, tests/phantom, ..."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.phantoms import CohortCache

REPO = Path(__file__).resolve().parents[1]

if "PYTEST_XDIST_WORKER" in os.environ:
    # one worker per core: torch's and OpenMP's own thread pools would only fight each other
    os.environ.setdefault("OMP_NUM_THREADS", "1")
REAL_SPINE = REPO.parent / "shared" / "data" / "real-spine"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def real_spine() -> Path:
    """../shared/data/real-spine beside the clone; tests using it skip cleanly without it."""
    if not REAL_SPINE.is_dir():
        pytest.skip(f"real spine MRI not present at {REAL_SPINE} (a fresh clone has no ../shared)")
    return REAL_SPINE


@pytest.fixture(scope="session")
def phantom_cohorts(tmp_path_factory) -> CohortCache:
    """Every phantom cohort of the session, each generated once and shared by every folder
    that asks for the same parameters: ``phantom_cohorts.manifest(n_cases=12, n_malignant=5,
    seed=1)`` (read-only) or ``.private_copy(dest, ...)`` (see tests/helpers/phantoms.py)."""
    return CohortCache(tmp_path_factory.mktemp("phantom_cohorts"))


def pytest_sessionfinish(session, exitstatus) -> None:
    """In CI every optional dependency is installed and ../shared is present, so a skipped test
    means something is missing: fail the run instead of counting the skip as a pass."""
    if not os.environ.get("CI") or exitstatus not in (0, pytest.ExitCode.OK):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped[:20]:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            print(f"\nCI: skipped {report.nodeid}: {reason}")
        print(f"\nCI=true: {len(skipped)} test(s) skipped; in CI nothing may be skipped")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
