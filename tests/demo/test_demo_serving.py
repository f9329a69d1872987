"""Serving: examples computed once per process, uploads once per content, every file the demo
and gradio wrote for a server's requests gone after close(), a session's files gone at its end;
click-free reading refuses images without a pixel spacing."""
from __future__ import annotations

from pathlib import Path

import pytest

from spinefx.demo import api, spine_view
from spinefx.demo import read_handlers as rh
from spinefx.demo.context import DemoContext, drop_state
from tests.demo.test_demo_browser import browser  # noqa: F401  (the Chromium fixture)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture()
def ctx(tiny_model, tmp_path) -> DemoContext:
    for name in ("uploads", "work-root"):
        (tmp_path / name).mkdir()
    return DemoContext.create(tiny_model, None, tmp_path / "cache", 1, tmp_path / "work-root",
                              [str(tmp_path / "uploads")], 0.0)


def _counting(monkeypatch, module, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_server_leaves_nothing_after_close_and_examples_run_once(tiny_model, tmp_path,
                                                                   monkeypatch, phantom_study,
                                                                   dicom_files):
    from gradio_client import Client, handle_file

    from spinefx.demo.app import build_app, launch
    from tests.demo.conftest import free_port

    gradio_tmp, work_root = tmp_path / "gradio", tmp_path / "work"
    gradio_tmp.mkdir()
    work_root.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_tmp))
    predictions = _counting(monkeypatch, api, "predict")
    app = build_app(model=tiny_model, cache_dir=tmp_path / "cache", temp_dir=work_root,
                    upload_grace_s=0)
    port = free_port()
    launch(app, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        t1_dir, t2_dir, case = phantom_study
        files = dicom_files(t1_dir, t2_dir)
        box = ",".join(str(v) for v in case.box)
        first, _ = client.predict("phantom_benign", api_name="/predict_example")
        again, _ = client.predict("phantom_benign", api_name="/predict_example")
        assert first["status"] == "ok" and again == first
        assert len(predictions) == 1, "the second /predict_example call recomputed"
        for _ in range(2):
            doc, overlay = client.predict([handle_file(f) for f in files], "", "", case.slice,
                                          box, "", 0, api_name="/predict_case")
            assert doc["status"] == "ok" and Path(overlay).is_file()
        assert len(predictions) == 2, "the same upload and box were predicted twice"
        assert app.spinefx_context.studies.computed == 1, "the same upload was decoded twice"
        assert _files(gradio_tmp) and _files(work_root), "the requests wrote nothing?"
    finally:
        app.close()
    assert _files(gradio_tmp) == [], "files left in gradio's temp folder after close"
    assert list(work_root.iterdir()) == [], "the demo's work folder is left after close"


def test_a_page_example_is_computed_once_and_a_session_end_removes_its_files(ctx,
                                                                              monkeypatch):
    readings = _counting(monkeypatch, rh, "run_localiser")
    one = api.run_example(ctx, "phantom_malignant", None, 0.45)
    two = api.run_example(ctx, "phantom_malignant", None, 0.45)
    assert len(readings) == 1, "the example's page was computed twice"
    assert one["result_md"] == two["result_md"] and one["result_md"]
    one["slice_sl"].pop("value")        # as gradio does when it sends an update
    three = api.run_example(ctx, "phantom_malignant", None, 0.45)
    assert three["slice_sl"]["value"] == two["slice_sl"]["value"], "a session's updates leak"
    first, second = one["read_state"], two["read_state"]
    assert first is not second and first.study is second.study
    assert Path(one["report_btn"]).read_text() == Path(two["report_btn"]).read_text()
    shown = Path(one["slice_img"])
    assert shown.is_file() and shown.is_relative_to(ctx.kept.folder)
    moved = rh.show_slice(ctx, first, first.last.roi.slice_index + 1, one["box_tb"])
    own = Path(moved["slice_img"])
    assert own.is_relative_to(first.outbox.folder), "a session's picture is its own"
    session_folder = first.outbox.folder
    drop_state(first)
    assert not session_folder.exists(), "the session's folder outlived the session"
    assert Path(two["report_btn"]).is_file() and shown.is_file(), "shared files went too"


def test_images_without_pixel_spacing_are_not_read_automatically(ctx, png_pair, monkeypatch):
    analyses = _counting(monkeypatch, spine_view, "analyse_spine")
    t1, t2, case, spacing = png_pair
    out = rh.load_upload(ctx, None, None, t1, t2, None)
    assert analyses == [], "the localiser ran on a guessed 1 mm grid"
    assert out["read_state"].spine is None and out["spine_df"] == []
    assert ("automatic reading needs the pixel spacing: give it (mm) when uploading images, "
            "or click the vertebra") in out["spine_md"]
    done = rh.run_predict(ctx, out["read_state"], case.slice,
                          ",".join(str(v) for v in case.box), 0.45)
    assert done["status"] == "Done.", "the manual path is kept"
    with_spacing = rh.load_upload(ctx, None, None, t1, t2, spacing)
    assert len(analyses) == 1, "a known spacing is read automatically"
    assert "pixel spacing" not in with_spacing["spine_md"]


def test_a_dicom_upload_gives_its_dicom_results_in_the_session_folder(ctx, phantom_study,
                                                                      dicom_files):
    import io
    import zipfile

    import pydicom

    from spinefx.demo import report

    t1_dir, t2_dir, _ = phantom_study
    files = dicom_files(t1_dir, t2_dir)
    out = rh.load_upload(ctx, None, files, None, None, None)
    st = out["read_state"]
    assert st.spine is not None, st.spine_error
    assert out["dicom_prepare"]["visible"] and out["dicom_note"]["visible"]
    ready = report.prepare_dicom(ctx, st)
    path = Path(ready["dicom_btn"]["value"])
    assert path.is_relative_to(st.outbox.folder), "the zip is in the session's folder"
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    with zipfile.ZipFile(path) as zf:
        datasets = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist()]
    assert len(datasets) == 3
    assert sorted(ds.Modality for ds in datasets) == ["OT", "SEG", "SR"]
    assert {ds.StudyInstanceUID for ds in datasets} == {study_uid}
    assert [p.name for p in st.outbox.folder.iterdir() if p.name.startswith("sources-")] == []
    drop_state(st)
    assert not path.exists(), "the DICOM results outlived the session"


def test_an_example_offers_no_dicom_results(ctx):
    out = api.run_example(ctx, "phantom_benign", None, 0.45)
    assert not out["dicom_prepare"]["visible"] and not out["dicom_note"]["visible"]


def test_closing_the_tab_removes_the_sessions_folder(demo_server, browser):  # noqa: F811
    """A real page: an example read in a session writes its report in the session's folder;
    closing the tab ends the session (unload) and the folder goes."""
    import time

    from tests.demo.test_demo_browser import TIMEOUT_MS

    app, url = demo_server
    sessions = Path(app.spinefx_workdir) / "sessions"
    before = set(sessions.iterdir()) if sessions.exists() else set()
    page = browser.new_page()
    page.goto(url, timeout=TIMEOUT_MS)
    page.click("#example-phantom_benign", timeout=TIMEOUT_MS)
    page.wait_for_function("document.querySelector('#result') && "
                           "document.querySelector('#result').innerText.includes('P(malignant)')",
                           timeout=TIMEOUT_MS)
    mine = set(sessions.iterdir()) - before
    assert len(mine) == 1 and _files(next(iter(mine))), "the session wrote no files?"
    page.close()
    deadline = time.monotonic() + 90
    while next(iter(mine)).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not next(iter(mine)).exists(), "the closed tab's session folder is still there"
