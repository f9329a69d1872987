"""A teaching session in a real browser (headless Chromium from the Debian package, driven by
Playwright): a teacher creates a session; two residents in two browser contexts join it and
stay separate; both appear on the teacher's live dashboard, whose export parses as a readers
CSV; a reload resumes a resident's progress (the score and the next case survive); the
checklist does not say which way the features lean.

The module serves its own demo (tiny model) with its own teaching data folder, so the store it
checks holds only this test's session. Without Chromium or Playwright it is skipped on a
developer machine but FAILS in CI (see test_demo_browser.py).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from spinefx.demo import teaching as tm
from spinefx.demo.teaching_store import DB_NAME, TeachingStore
from tests.demo.conftest import free_port
from tests.demo.test_demo_browser import ARGS, ARTIFACTS, CHROMIUM, TIMEOUT_MS, _unavailable


@pytest.fixture(scope="module")
def teaching_server(tmp_path_factory, tiny_model, demo_roots):
    """(url, data folder): a demo whose teaching data lives in a folder of its own."""
    data = tmp_path_factory.mktemp("teaching-data")
    keys = ("SPINEFX_TEACHING_DATA", "GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({"SPINEFX_TEACHING_DATA": str(data), "GRADIO_ANALYTICS_ENABLED": "False",
                       "GRADIO_TEMP_DIR": str(demo_roots["gradio"])})
    from spinefx.demo.app import build_app, launch

    # the shared example/teaching cache: the phantom cohort is generated once per test session
    app = build_app(model=tiny_model, cache_dir=demo_roots["cache"],
                    temp_dir=tmp_path_factory.mktemp("teaching-work"), upload_grace_s=0)
    port = free_port()
    launch(app, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", data
    finally:
        app.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str, tab: str):
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("tab", name="Teaching").click()
    page.get_by_role("tab", name=tab).click()
    return context, page


def _text(page, selector: str) -> str:
    return page.locator(selector).inner_text(timeout=TIMEOUT_MS)


def _fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id}").locator("textarea, input").first.fill(value)


def _wait_text(page, selector: str, needle: str) -> None:
    page.wait_for_function("([s, n]) => { const e = document.querySelector(s);"
                           " return e && e.innerText.includes(n); }", arg=[selector, needle])


def _case_id(page) -> str:
    match = re.search(r"Case \d+ of \d+: (\S+)", _text(page, "#case-info"))
    assert match, _text(page, "#case-info")
    return match.group(1)


def _join(page, code: str, name: str) -> str:
    _fill(page, "session-code", code)
    _fill(page, "reader-name", name)
    page.click("#next-case")
    _wait_text(page, "#case-info", "Case 1 of")
    return _case_id(page)


def _commit(page, call: str, n_ticks: int) -> None:
    page.locator("#call").get_by_label(call, exact=True).check()
    for label in page.locator("#features label").all()[:n_ticks]:
        label.click()
    page.click("#commit")
    _wait_text(page, "#reveal", "Truth")


def test_two_residents_a_reload_and_the_teacher_dashboard(browser, teaching_server):
    url, data = teaching_server
    teacher_ctx, teacher = _open(browser, url, "Teacher dashboard")
    _fill(teacher, "session-title", "Browser test")
    teacher.click("#create-session")
    _wait_text(teacher, "#teacher-status", "Created session")
    code = re.search(r"session ([A-Z]{6})", _text(teacher, "#teacher-status")).group(1)

    ana_ctx, ana = _open(browser, url, "Resident")
    label = _text(ana, "#features")
    assert tm.CHECKLIST_LABEL in label and "leaning" not in label
    first = _join(ana, code.lower(), "Ana")
    _commit(ana, "malignant", 2)
    score = _text(ana, "#score")
    assert "Session score (1 case)" in score
    ana.click("#next-case")
    _wait_text(ana, "#case-info", "Case 2 of")
    second = _case_id(ana)
    assert second != first

    ben_ctx, ben = _open(browser, url, "Resident")
    _join(ben, code, "Ben")
    assert "Ben" in _text(ben, "#teach-who") and "0 of" in _text(ben, "#teach-who")
    _commit(ben, "benign", 0)
    assert "Session score (1 case)" in _text(ben, "#score")   # not pooled with Ana's

    ana.reload()                      # the resident's progress comes back from the server
    ana.get_by_role("tab", name="Teaching").click()
    _wait_text(ana, "#case-info", "Case 2 of")
    assert _case_id(ana) == second
    assert _text(ana, "#score") == score
    assert "Welcome back" in _text(ana, "#teach-status")
    assert "Ana" in _text(ana, "#teach-who") and "1 of" in _text(ana, "#teach-who")

    teacher.bring_to_front()
    _wait_text(teacher, "#dash-summary", "2 reads")   # the live table refreshes by itself
    table = _text(teacher, "#dash-residents")
    assert "Ana" in table and "Ben" in table
    ARTIFACTS.mkdir(exist_ok=True)
    teacher.screenshot(path=str(ARTIFACTS / "teaching_dashboard.png"), full_page=True)
    ana.screenshot(path=str(ARTIFACTS / "teaching_resumed.png"), full_page=True)
    with teacher.expect_download() as info:
        teacher.click("#export-session")
    exported = info.value.path()
    readers = pytest.importorskip("spinefx.train.readers")
    calls = readers.read_readers_csv(exported)
    assert calls.readers == ["Ana", "Ben"] and calls.calls_of("Ana") == {first: "malignant"}

    store = TeachingStore(data)
    assert store.path == data / DB_NAME
    assert [r.name for r in store.residents(code)] == ["Ana", "Ben"]
    for context in (teacher_ctx, ana_ctx, ben_ctx):
        context.close()
