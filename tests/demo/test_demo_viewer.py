"""The Read tab's viewer, explained result and report without a browser: the words of
runtime.explain against model.json's own numbers (and what they say when numbers are missing),
the viewer's click mapping and windowing, a stale result cleared by a slice change but kept by a
W/L change, and the report of an upload whose headers carry PHI strings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from spinefx.demo import read_handlers as rh
from spinefx.demo.context import DemoContext
from spinefx.demo.report import ReportInput, build_report
from spinefx.demo.viewer import View, ViewSpec, apply_window, crop_window, render_pair
from spinefx.runtime.explain import explain, operating_point, proportion_of
from spinefx.runtime.model_files import BUNDLED_DIR
from spinefx.runtime.stats import wilson_ci

NEEDLES = ["PHIVIEWER", "SECRETREPORT", "PHI-ID-40417"]


def _bundled_raw() -> dict:
    return json.loads((BUNDLED_DIR / "model.json").read_text())


def test_explain_quotes_model_json_numbers_and_their_intervals():
    raw = _bundled_raw()
    val = raw["metrics"]["validation"]
    out = explain(0.8, raw["threshold"], "malignant", raw, None, "", True)
    sens = out["operating_point"]["sensitivity"]
    assert sens["value"] == val["sensitivity"]["value"]
    assert (sens["ci_low"], sens["ci_high"]) == (val["sensitivity"]["ci_low"],
                                                 val["sensitivity"]["ci_high"])
    statement = out["operating_point"]["statement"]
    s = val["sensitivity"]
    assert f"{100 * s['value']:.0f}% (95% CI {100 * s['ci_low']:.0f}-{100 * s['ci_high']:.0f}%; " \
        f"{s['k']} of {s['n']})" in statement
    assert f"{val['specificity']['k']} of {val['specificity']['n']})" in statement
    assert f"{val['ece']['value']:.3f}" in out["calibration"]["statement"]
    assert "at or above" in out["threshold_meaning"] and "SYNTHETIC" in out["synthetic_note"]


def test_counts_without_an_interval_give_wilson_and_nothing_is_never_invented():
    block = {"counts": {"tp": 30, "fn": 10, "tn": 45, "fp": 5}}
    sens = proportion_of(block, "sensitivity")
    assert sens["value"] == pytest.approx(0.75) and (sens["k"], sens["n"]) == (30, 40)
    assert (sens["ci_low"], sens["ci_high"]) == wilson_ci(30, 40)
    assert "Wilson" in sens["ci_from"]
    bare = operating_point({"metrics": {"sensitivity": 0.9}}, 0.5)
    assert bare["sensitivity"]["ci_low"] is None and "no confidence interval" in bare["statement"]
    assert bare["missing"] == ["specificity"]
    empty = explain(0.3, 0.5, "benign", {"metrics": {}}, None, "no features output")
    assert empty["operating_point"]["missing"] == ["sensitivity", "specificity"]
    assert "%" not in empty["operating_point"]["statement"]
    assert empty["calibration"]["ece"] is None and "no calibration" in \
        empty["calibration"]["statement"]
    assert empty["ood"]["verdict"] == "not checked" and "no features output" in \
        empty["ood"]["statement"]
    flagged = explain(0.9, 0.5, "malignant", {}, {"flagged": True, "fired": ["feature score"]})
    assert flagged["ood"]["verdict"] == "out of distribution"
    assert "not meaningful" in flagged["ood"]["statement"]


def test_a_click_on_either_panel_maps_to_the_same_t1_pixel():
    rng = np.random.default_rng(0)
    t1, t2 = rng.random((60, 80)), rng.random((60, 80))
    spec = ViewSpec(pair=("a", "b"), k=3, zoom=2.0, focus=(70.0, 50.0), box=(60, 40, 75, 55))
    img, view = render_pair(t1, t2, ((0.0, 1.0), (0.0, 1.0)), spec, 10)
    x0, y0, x1, y1 = crop_window(t1.shape, 2.0, (70.0, 50.0))
    assert (x1, y1) == (80, 60) and (x1 - x0, y1 - y0) == (40, 30)   # kept inside the image
    assert img.width == 2 * view.panel_width + 6
    left = view.to_pixels(10 * view.scale, 5 * view.scale)
    right = view.to_pixels(view.panel_width + 6 + 10 * view.scale, 5 * view.scale)
    assert left == right == pytest.approx((x0 + 10, y0 + 5))
    assert View().to_pixels(3, 4) == (3, 4)
    grey = apply_window(np.array([0.0, 0.5, 1.0, np.nan]), (0.0, 1.0), 50, 50)
    assert list(grey) == [0, 127, 255, 0]


@pytest.fixture(scope="module")
def ctx(tiny_model, tmp_path_factory) -> DemoContext:
    root = tmp_path_factory.mktemp("viewer")
    (root / "uploads").mkdir()
    return DemoContext.create(tiny_model, None, root / "cache", 1, root,
                              [str(root / "uploads")], 0.0)


@pytest.fixture(scope="module")
def phi_upload(phantom_study, tmp_path_factory) -> list[str]:
    """The phantom study with PHI strings in its patient module."""
    out = tmp_path_factory.mktemp("viewer-phi")
    files = []
    for series in phantom_study[:2]:
        for p in sorted(Path(series).glob("*.dcm")):
            ds = pydicom.dcmread(p)
            ds.PatientName, ds.PatientID = "PHIVIEWER^SECRETREPORT", "PHI-ID-40417"
            target = out / f"{Path(series).name}_{p.name}"
            ds.save_as(target)
            files.append(str(target))
    return files


def test_a_slice_change_clears_the_result_a_window_change_keeps_it(ctx, phantom_study,
                                                                   phi_upload):
    case = phantom_study[2]
    st = rh.load_upload(ctx, None, phi_upload, None, None, None)["read_state"]
    box = ",".join(str(v) for v in case.box)
    done = rh.run_predict(ctx, st, case.slice, box, 0.45)
    assert done["status"] == "Done." and "explanation" in done["details"]
    kept = rh.set_window(ctx, st, 40, 80, "2x", case.slice, box)
    assert "result_md" not in kept and st.last is not None
    moved = rh.show_slice(ctx, st, case.slice + 1, box)
    assert moved["result_md"] == rh.STALE_RESULT and moved["overlay"] is None
    assert st.last is None


def test_the_report_has_the_findings_and_no_phi(ctx, phi_upload):
    out = rh.load_upload(ctx, None, phi_upload, None, None, None)
    st = out["read_state"]
    assert st.spine is not None, st.spine_error
    text = Path(out["report_btn"]).read_text()
    assert f"P(malignant) = {st.last.prediction.probability:.3f}" in text
    for entry in st.spine.localisation.document["vertebrae"]:
        assert f"<td>{entry['level']}</td>" in text
    assert "SYNTHETIC" in text and st.last.prediction.model_sha256 in text
    assert "data:image/png;base64," in text
    assert not [n for n in NEEDLES if n in text], "PHI reached the report"
    assert Path(out["report_btn"]).is_relative_to(ctx.work)
    again = rh.pick_level(ctx, st, str(st.picked), 0.45)["report_btn"]
    assert not Path(out["report_btn"]).exists(), "the previous report is deleted"
    assert Path(again).read_text() == text, "the same reading gives the same report"


def _fail(*args, **kwargs):
    from spinefx.runtime import SpineFXError

    raise SpineFXError("localiser broke")


def test_levels_corrected_by_the_user_reach_the_list_the_result_and_the_report(ctx,
                                                                               phi_upload,
                                                                               monkeypatch):
    from spinefx.demo import spine_view
    from spinefx.demo.level_handlers import PICK_FIRST, correct_levels
    from spinefx.runtime.vertebrae import LEVELS

    out = rh.load_upload(ctx, None, phi_upload, None, None, None)
    st = out["read_state"]
    assert st.spine is not None and st.picked is not None, st.spine_error
    before = st.spine
    auto = [e["level"] for e in before.localisation.document["vertebrae"]]
    i = st.picked
    true_level = LEVELS[LEVELS.index(auto[i]) - 1]     # "it is one level higher"
    fixed = correct_levels(ctx, st, true_level, 0.45)
    levels = [e["level"] for e in st.spine.localisation.document["vertebrae"]]
    assert levels == [LEVELS[LEVELS.index(name) - 1] for name in auto]
    assert st.picked == i and levels[i] == true_level
    assert "corrected by you" in fixed["status"] and true_level in fixed["spine_md"]
    assert [row[0] for row in fixed["spine_df"]] == levels
    assert st.spine.primary.spine["level_reason"].startswith("set by the user")
    # the analysis it replaced (an example's may be shared by sessions) is unchanged
    assert [e["level"] for e in before.localisation.document["vertebrae"]] == auto
    text = Path(fixed["report_btn"]).read_text()
    assert f"<td>{true_level}</td>" in text
    assert fixed["dicom_btn"]["value"] is None         # a zip of the old names is withdrawn
    import io
    import zipfile

    from spinefx.demo.report import write_dicom_results

    with zipfile.ZipFile(write_dicom_results(ctx, st)) as zf:
        segs = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist()]
    seg = next(ds for ds in segs if ds.Modality == "SEG")
    # one segment per vertebra, superior -> inferior, named by the corrected count
    assert [item.SegmentLabel for item in seg.SegmentSequence] == levels
    # plain words, never a traceback: no level chosen, nothing picked, a failed re-run (the
    # reading the user had stays)
    assert "choose the level" in correct_levels(ctx, st, None, 0.45)["status"]
    kept = st.spine
    monkeypatch.setattr(spine_view, "analyse_spine", _fail)
    assert "localiser broke" in correct_levels(ctx, st, "L1", 0.45)["status"]
    assert st.spine is kept and st.picked == i
    monkeypatch.undo()
    st.picked = None
    assert PICK_FIRST in correct_levels(ctx, st, "L1", 0.45)["status"]


def test_report_without_a_result_says_so():
    text = build_report(ReportInput(source="uploaded image slices", series=["T1", "T2"],
                                    model={}, model_id="m", model_sha256="", synthetic_model=False,
                                    synthetic_case=False, spine_note="localiser found nothing"))
    assert "No result" in text and "localiser found nothing" in text
    assert "SYNTHETIC" not in text and "not for diagnosis" in text


def test_a_failed_localiser_is_said_in_plain_words_and_the_box_path_stays(ctx, phantom_study,
                                                                         phi_upload,
                                                                         monkeypatch):
    from spinefx.demo import spine_view
    from spinefx.runtime import SpineFXError

    def no_vertebra(*args, **kwargs):
        raise SpineFXError("no vertebra found on T1 nor on T2")
    monkeypatch.setattr(spine_view, "analyse_spine", no_vertebra)
    out = rh.load_upload(ctx, None, phi_upload, None, None, None)
    assert out["spine_md"].startswith("**Automatic reading unavailable:** no vertebra found")
    assert "click its centre" in out["spine_md"] and out["spine_df"] == []
    assert "Click the centre" in out["status"] and out["box_tb"] == ""
    case = phantom_study[2]
    done = rh.run_predict(ctx, out["read_state"], case.slice,
                          ",".join(str(v) for v in case.box), 0.45)
    assert done["status"] == "Done."
