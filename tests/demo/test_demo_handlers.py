"""The demo's handlers called directly over a DemoContext (no server): a whole read session,
T2 aligned once for it, and the same result document as `spinefx predict`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinefx.demo import api
from spinefx.demo import read_handlers as rh
from spinefx.demo.context import DemoContext
from spinefx.runtime import matching

VOLATILE = ("timings_ms", "files")   # wall time of this run; files only the CLI writes


@pytest.fixture()
def ctx(tiny_model, tmp_path) -> DemoContext:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return DemoContext.create(tiny_model, None, tmp_path / "cache", 1, tmp_path,
                              [str(uploads)], 0.0)


def _box_text(box) -> str:
    return ",".join(str(v) for v in box)


def test_a_read_session_aligns_t2_once(ctx, phantom_study, dicom_files, monkeypatch):
    t1_dir, t2_dir, case = phantom_study
    calls = []
    real = matching.on_t1_grid
    monkeypatch.setattr(matching, "on_t1_grid", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = rh.load_upload(ctx, None, dicom_files(t1_dir, t2_dir), None, None, None)
    assert "Could not" not in str(out["status"]), out["status"]
    st = out["read_state"]
    assert st.study.decoded == [st.pair.t1, st.pair.t2]
    for k in (case.slice - 1, case.slice + 1, case.slice):   # slider moves with a box
        view = rh.show_slice(ctx, st, k, _box_text(case.box))
        assert view["status"] == "" and len(view["channels"]) == 6
    clicked = rh.click_centre(ctx, st, case.slice, 40, (60, 80))
    assert clicked["box_tb"] and "Press Predict" in clicked["status"]
    done = rh.run_predict(ctx, st, case.slice, _box_text(case.box), 0.45)
    assert done["status"] == "Done." and done["details"]["status"] == "ok"
    assert len(calls) == 1, f"T2 aligned {len(calls)} times in one session"


def test_bad_input_is_a_line_on_the_page(ctx):
    out = rh.run_predict(ctx, None, 0, "1,2,3,4", 0.45)
    assert out["status"].startswith("**Could not do that:**") and "load a study" in out["status"]
    out = rh.load_upload(ctx, None, None, None, None, None)
    assert "choose files first" in out["status"]


def test_cli_and_demo_give_the_same_document(ctx, tiny_model, phantom_study, dicom_files,
                                             tmp_path):
    from spinefx.cli import main

    t1_dir, t2_dir, case = phantom_study
    study_dir = Path(t1_dir).parent
    assert Path(t2_dir).parent == study_dir
    out = tmp_path / "cli"
    assert main(["predict", str(study_dir), "--model", str(tiny_model), "--slice",
                 str(case.slice), "--box", _box_text(case.box), "--out", str(out)]) == 0
    cli_doc = json.loads((out / "result.json").read_text())
    demo_doc, overlay = api.predict_case(ctx, dicom_files(t1_dir, t2_dir), "", "", case.slice,
                                         _box_text(case.box), "", 0)
    assert overlay is not None and demo_doc["status"] == "ok"
    # both carry the explanation (runtime.explain): one document, the same words
    assert set(cli_doc) == set(demo_doc) | {"files"}
    same = {k: v for k, v in cli_doc.items() if k not in VOLATILE}
    assert same == {k: v for k, v in demo_doc.items() if k not in VOLATILE}
    assert demo_doc["explanation"]["threshold"] == demo_doc["threshold"]


def test_the_occlusion_button_remaps_the_current_result_and_keeps_its_probability(
        ctx, phantom_study, dicom_files):
    from spinefx.demo.map_handlers import show_occlusion

    t1_dir, t2_dir, case = phantom_study
    assert "predict first" in show_occlusion(ctx, None, 0.45)["status"]
    st = rh.load_upload(ctx, None, dicom_files(t1_dir, t2_dir), None, None, None)["read_state"]
    done = rh.run_predict(ctx, st, case.slice, _box_text(case.box), 0.45)
    cam_map = st.last.prediction.cam_roi
    out = show_occlusion(ctx, st, 0.45)
    assert out["status"].startswith("Occlusion map shown")
    assert out["details"]["map_method"] == "occlusion" and done["details"]["map_method"] == "cam"
    assert out["details"]["probability"] == done["details"]["probability"]
    assert st.last.prediction.map_method == "occlusion"   # the report and opacity follow it
    assert st.last.prediction.cam_roi.shape == cam_map.shape
    assert abs(st.last.prediction.cam_roi - cam_map).max() > 0.05
    assert out["overlay"] != done["overlay"]
