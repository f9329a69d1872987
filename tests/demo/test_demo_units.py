"""The demo's gradio-free parts: safe unzipping, image uploads, boxes, teaching score + CSV,
and the `spinefx demo` command line."""
from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinefx.demo import teaching as tm
from spinefx.demo import uploads
from spinefx.demo.ingest import Staging, UploadError, load_dicom_upload, load_image_upload
from spinefx.runtime import FEATURES, Case, PreprocessConfig, RoiError, SpineFXError
from spinefx.runtime.service import parse_box, parse_point, resolve_roi

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ uploads
def test_zip_members_never_escape_and_links_are_skipped(tmp_path, phantom_study):
    t1_dir, t2_dir, _ = phantom_study
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, p in enumerate(sorted(t1_dir.glob("*.dcm")) + sorted(t2_dir.glob("*.dcm"))):
            zf.write(p, f"../../../escape_{i}.dcm" if i % 2 else f"/abs/path/{p.name}")
        link = zipfile.ZipInfo("link_to_passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("nested.zip", b"PK\x03\x04")
    root = tmp_path / "root"
    root.mkdir()
    study = load_dicom_upload([archive], root)
    assert {study.volume(k).weighting for k in study.labels} == {"T1", "T2"}
    assert not list(tmp_path.glob("escape_*")) and not (Path("/abs/path")).exists()
    assert list(root.iterdir()) == []  # staging removed


def test_zip_bomb_is_capped_by_bytes_written(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1 << 20)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.dcm", b"\0" * (4 << 20))
    with Staging(tmp_path) as staging, pytest.raises(UploadError, match="too large"):
        staging.add_file(archive)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):  # each member below the cap, together above it
            zf.writestr(f"part{i}.dcm", b"\0" * (600 << 10))
    with Staging(tmp_path) as staging, pytest.raises(UploadError, match="more than 1 MiB"):
        staging.add_file(archive)
    assert not list(tmp_path.glob("upload-*"))


def test_too_many_members(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_ZIP_MEMBERS", 3)
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(5):
            zf.writestr(f"{i}.dcm", b"x")
    with pytest.raises(UploadError, match="5 files in the archive"):
        load_dicom_upload([archive], tmp_path)


def test_images_in_the_dicom_box_are_redirected(tmp_path):
    p = tmp_path / "slice_1.png"
    Image.fromarray((np.arange(4096) % 251).reshape(64, 64).astype(np.uint8)).save(p)
    with pytest.raises(UploadError, match="plain images, not DICOM"):
        load_dicom_upload([p], tmp_path)


def test_image_slices_sort_naturally_and_need_both_sequences(tmp_path):
    paths = []
    for i in (10, 2, 1):
        p = tmp_path / f"s_{i}.png"
        Image.fromarray(np.full((32, 32), i * 10, np.uint8) + np.eye(32, dtype=np.uint8)).save(p)
        paths.append(p)
    study = load_image_upload(paths, paths, 0.8)
    t1 = study.volume("T1")
    assert [float(t1.data[i].max()) for i in range(3)] == [11.0, 21.0, 101.0]
    assert t1.pixel_spacing == (0.8, 0.8) and t1.spacing_known
    with pytest.raises(UploadError, match="only T2 slices"):
        load_image_upload([], paths)
    with pytest.raises(UploadError, match="implausible"):
        load_image_upload(paths, paths, 50)


def test_boxes_parse_and_resolve(phantom_study):
    from spinefx.runtime import load_series
    t1_dir, _, case = phantom_study
    assert parse_box(" 1, 2 ,30 40 ") == (1.0, 2.0, 30.0, 40.0)
    assert parse_box("") is None
    for bad in ("1,2,3", "a,b,c,d", "1,2,nan,4", "5,5,1,1"):
        with pytest.raises(RoiError):
            parse_box(bad)
    t1 = load_series(t1_dir)
    config = PreprocessConfig()
    roi = resolve_roi(t1, config, -1, parse_box(""), parse_point("100,120"), 40)
    k, box = roi.slice_index, roi.box
    assert k == t1.n_slices // 2 and box[0] < 100 < box[2] and box[1] < 120 < box[3]
    with pytest.raises(RoiError, match="outside the"):
        resolve_roi(t1, config, 0, None, parse_point("-50,-50"), 10)
    with pytest.raises(RoiError, match="say where"):
        resolve_roi(t1, config, 0, None, None, 0)


# ----------------------------------------------------------------------------------- teaching
def _case(i, label, **features):
    return Case(case_id=f"c{i}", label=label, t1=Path("t1"), t2=Path("t2"), slice=3,
                box=(1, 1, 9, 9), features={f.key: features.get(f.key, 0) for f in FEATURES})


def test_teaching_score_and_readers_csv(tmp_path):
    cases = [_case(1, "malignant", epidural_mass=1), _case(2, "benign"), _case(3, "benign")]
    s = tm.TeachingSession(reader=tm.clean_reader("Dr. A, 1st-year\n"))
    assert s.reader == "Dr._A_1st-year"
    title = next(f.title for f in FEATURES if f.key == "epidural_mass")
    for case, call, ticks in ((cases[0], "malignant", [title]), (cases[1], "malignant", []),
                              (cases[2], "benign", [title])):
        s.current = case.case_id
        tm.commit(s, case, call, ticks)
    with pytest.raises(SpineFXError, match="already committed"):
        tm.commit(s, cases[2], "benign", [])
    with pytest.raises(SpineFXError, match="commit a call"):
        tm.commit(tm.TeachingSession(), cases[0], None, [])
    sc = tm.score(s.reads)
    assert sc["n"] == 3 and sc["accuracy"] == pytest.approx(2 / 3)
    assert sc["sensitivity"] == 1.0 and sc["specificity"] == 0.5
    # epidural_mass present once and ticked; ticked once where absent; 43 absent unticked
    assert sc["feature_sensitivity"] == 1.0
    assert sc["feature_specificity"] == pytest.approx(43 / 44)
    text = tm.readers_csv(s)
    assert text.splitlines()[0] == "case_id,reader,call,simulated,features_seen"
    assert text.splitlines()[1] == "c1,Dr._A_1st-year,malignant,no,epidural_mass"
    assert "Session score" in tm.score_markdown(s.reads)
    key = tm.feature_key_markdown(cases[2], s.reads[2])
    assert key.count("\n|") == 17 and "✗" in key
    path = tmp_path / "reads.csv"
    path.write_text(text)
    readers = pytest.importorskip("spinefx.train.readers")
    table = readers.read_readers_csv(path, known_cases=[c.case_id for c in cases])
    assert table.readers == ["Dr._A_1st-year"] and not table.simulated
    assert table.calls_of("Dr._A_1st-year") == {"c1": "malignant", "c2": "malignant",
                                                "c3": "benign"}


def test_next_case_follows_the_residents_order_and_skips_read_cases():
    cases = [_case(i, "benign") for i in range(3)]
    s = tm.TeachingSession(order=["c2", "c0", "c1"])
    assert s.next_case_id() == "c2"
    tm.commit(s, cases[0], "benign", [])
    assert s.next_case_id() == "c2"
    tm.commit(s, cases[2], "benign", [])
    assert s.next_case_id() == "c1"
    tm.commit(s, cases[1], "benign", [])
    assert s.next_case_id() is None


# ---------------------------------------------------------------------------------------- cli
def test_demo_parser_defaults_and_options():
    from spinefx.cli import demo as demo_command
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    args = parser.parse_args(["demo"])
    assert (args.model, args.host, args.port, args.cases) == (None, "127.0.0.1", 7860, None)
    assert args.run is demo_command.run
    args = parser.parse_args(["demo", "--model", "m", "--port", "9000", "--cases", "c",
                              "--host", "0.0.0.0"])
    assert (str(args.model), args.port, str(args.cases), args.host) == ("m", 9000, "c", "0.0.0.0")


def test_run_demo_refuses_a_bad_model_folder(tmp_path):
    from spinefx.cli import demo as demo_command
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--model", str(tmp_path), "--cache", str(tmp_path / "c")])
    with pytest.raises(SpineFXError, match="model.json"):
        demo_command.run(args)


def test_missing_bundled_model_still_builds_and_says_so(tmp_path, monkeypatch):
    from spinefx.runtime import model_files
    monkeypatch.setattr(model_files, "BUNDLED_DIR", tmp_path / "no-weights")
    from spinefx.demo.app import build_app
    app = build_app(None, cache_dir=tmp_path / "cache", temp_dir=tmp_path)
    assert not app.spinefx_model.ready
    assert "--model" in app.spinefx_model.message
    with pytest.raises(SpineFXError, match="no model is loaded"):
        app.spinefx_model.require()


def test_bad_teaching_folder_is_a_clear_error(tmp_path):
    from spinefx.demo.library import Library
    with pytest.raises(SpineFXError, match="manifest.csv"):
        Library(cache_dir=tmp_path, cases_dir=tmp_path)


def test_demo_imports_no_torch_and_hf_space_entry_point_builds(tiny_model, tmp_path):
    code = ("import sys, runpy; ns = runpy.run_path('app.py'); "
            "import gradio as gr; assert isinstance(ns['demo'], gr.Blocks); "
            "assert ns['demo'].spinefx_model.ready; "
            "bad = [m for m in ('torch', 'torchvision', 'spinefx.train', 'spinefx.export') "
            "if m in sys.modules]; print('loaded:', bad)")
    env = {**os.environ, "SPINEFX_MODEL": str(tiny_model), "SPINEFX_DEMO_CACHE": str(tmp_path),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded: []" in out.stdout


def _outside_teaching_manifest(folder: Path) -> Path:
    """An instructor manifest whose series are absolute paths into another folder (the series
    need not exist: the manifest is read when the library opens, series when a case is shown)."""
    archive = folder.parent / "archive"
    folder.mkdir(parents=True)
    path = folder / "manifest.csv"
    path.write_text("case_id,label,t1,t2,slice,box_x0,box_y0,box_x1,box_y1\n"
                    f"c1,benign,{archive / 'c1' / 't1'},{archive / 'c1' / 't2'},3,1,1,20,20\n"
                    f"c2,malignant,{archive / 'c2' / 't1'},{archive / 'c2' / 't2'},3,1,1,20,20\n")
    return path


def test_instructor_manifest_outside_its_folder_needs_allow_outside(tmp_path):
    from spinefx.demo.library import Library
    manifest = _outside_teaching_manifest(tmp_path / "cases")
    with pytest.raises(SpineFXError, match=rf"{manifest} line 2: .*outside.*--allow-outside"):
        Library(cache_dir=tmp_path / "cache", cases_dir=tmp_path / "cases")
    library = Library(cache_dir=tmp_path / "cache", cases_dir=tmp_path / "cases",
                      allow_outside=True)
    assert [c.case_id for c in library.teaching_cases()] == ["c1", "c2"]


def test_demo_cli_passes_allow_outside_to_the_app(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import spinefx.demo as demo_package
    from spinefx.cli import demo as demo_command
    seen: dict = {}
    monkeypatch.setattr(demo_package, "build_app", lambda **kw: seen.update(kw) or "app")
    monkeypatch.setattr(demo_package, "launch", lambda app, **kw: None)
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    for argv, allowed in ((["demo"], False), (["demo", "--allow-outside"], True)):
        args = parser.parse_args(argv + ["--cases", str(tmp_path)])
        assert demo_command.run(args) == 0
        assert seen["allow_outside"] is allowed


@pytest.fixture(scope="module")
def named_upload(phantom_study, dicom_files, tmp_path_factory):
    """The phantom study uploaded as DICOM files, titled as the page titles an upload."""
    from spinefx.demo.context import upload_title
    t1_dir, t2_dir, _ = phantom_study
    files = dicom_files(t1_dir, t2_dir)
    title = upload_title(files, "uploaded DICOM study")
    assert title == f"{Path(files[0]).name} and {len(files) - 1} more files"
    return load_dicom_upload(files, tmp_path_factory.mktemp("upload"), title=title)


def test_series_choice_errors_name_the_study(named_upload):
    from spinefx.demo import api, read_handlers
    from spinefx.demo.context import ReadState, StudyError
    study = named_upload
    st = ReadState(study=study, pair=study.choose_pair(policy="guess"))
    out = read_handlers.change_series(None, st, "no-such-series", "", 0, "")
    assert out["status"].startswith("**Could not do that:**")
    assert f"study {study.title!r}:" in out["status"] and "no-such-series" in out["status"]
    with pytest.raises(StudyError, match=rf"study {re.escape(repr(study.title))}: .*no-such"):
        api._predict(None, study, "no-such-series", "", None, "", "", None)


def test_naming_study_adds_the_title_once():
    from spinefx.demo.context import naming_study, upload_title
    assert upload_title(["/tmp/x/spine.zip"], "uploaded DICOM study") == "spine.zip"
    assert upload_title([], "uploaded image slices") == "uploaded image slices"
    plain = RoiError("the box lies outside the image")
    assert naming_study(plain, None) is plain
    assert str(naming_study(plain, _titled("spine.zip"))) == \
        "study 'spine.zip': the box lies outside the image"
    already = SpineFXError("spine.zip: no T2 series")
    assert naming_study(already, _titled("spine.zip")) is already


def _titled(title: str):
    """A stand-in study: naming_study reads only the title."""
    from types import SimpleNamespace
    return SimpleNamespace(title=title)


def test_the_result_text_says_which_box_the_model_saw() -> None:
    from spinefx.demo.views import roi_snap_line

    fitted = roi_snap_line({"snapped": True, "box": [10.0, 12.0, 40.0, 30.0],
                            "box_given": [8.0, 8.0, 44.5, 34.0], "reason": "fitted"})
    assert "(8, 8, 44.5, 34)" in fitted and "(10, 12, 40, 30)" in fitted
    assert "any box or click on this body" in fitted
    kept = roi_snap_line({"snapped": False, "box": [1.0, 1.0, 5.0, 5.0],
                          "box_given": [1.0, 1.0, 5.0, 5.0],
                          "reason": "box kept: the localiser finds no vertebral body under "
                                    "the box's centre"})
    assert kept.endswith("used as given: the localiser finds no vertebral body under the box's "
                         "centre.")
