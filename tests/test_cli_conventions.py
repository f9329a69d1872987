"""CLI conventions on a real archive: missing extras, progress flags, option checks before the
model loads, loud warnings, stale outputs, errors that name the study / manifest line."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spinefx.cli import EXTRAS, build_parser, main
from spinefx.phantom import write_phantom_study
from spinefx.runtime import cases as cases_mod

COMMAND_EXTRA = [("export", "torch", "train", ["export", "run", "--out", "m"]),
                 ("bench", "torch", "train", ["bench", "--runs", "1"]),
                 ("evaluate", "sklearn", "train", ["evaluate", "--oof", "o.csv", "--out", "e"]),
                 ("evaluate", "matplotlib", "train", ["evaluate", "--oof", "o.csv", "--out", "e"]),
                 ("train", "torch", "train", ["train", "--manifest", "m.csv", "--out", "r"]),
                 ("demo", "gradio", "demo", ["demo"])]


def _without(module: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys; sys.modules[%r] = None; from spinefx.cli import main; "
            "sys.exit(main(%r))" % (module, argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("command,module,extra,argv", COMMAND_EXTRA)
def test_missing_extra_is_one_line(command, module, extra, argv, tmp_path):
    out = _without(module, argv, tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert f"spinefx {command} needs the '{extra}' extra: pip install 'spinefx[{extra}]'" \
        in out.stderr


def test_missing_extra_guard_in_process(monkeypatch, capsys):
    from spinefx.cli import execute

    def run(args):
        import onnxscript  # noqa: F401
    run.__module__ = "spinefx.cli.export"
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert execute(run, None) == 2
    assert "spinefx export needs the 'export' extra: pip install 'spinefx[export]'" \
        in capsys.readouterr().err
    assert set(EXTRAS) >= {"torch", "torchvision", "onnx", "onnxscript", "pytorch_grad_cam",
                           "gradio", "huggingface_hub", "sklearn", "scipy", "matplotlib",
                           "safetensors", "nibabel"}

    def other(args):
        import no_such_module_xyz  # noqa: F401
    with pytest.raises(ModuleNotFoundError):  # a bug, not a missing extra: not hidden
        execute(other, None)


def test_one_progress_flag_spelling():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices)
    for name, p in sub.choices.items():
        flags = [o for a in p._actions for o in a.option_strings if "progress" in o]
        assert flags in ([], ["--no-progress"]), (name, flags)
    for path in Path("spinefx/cli").glob("*.py"):
        assert "disable=not progress" not in path.read_text()
    assert "disable=not progress" not in Path("runtime/predict.py").read_text()


def test_predict_progress_bar_lets_tqdm_decide(monkeypatch, tmp_path):
    import spinefx.runtime.predict as predict_mod

    seen = []

    def fake_tqdm(it, **kw):
        seen.append(kw["disable"])
        return it

    class P:
        threshold = 0.5

    monkeypatch.setattr(predict_mod, "tqdm", fake_tqdm)
    predict_mod.predict_manifest(P(), tmp_path / "m.csv", tmp_path / "o", cases=[])
    predict_mod.predict_manifest(P(), tmp_path / "m.csv", tmp_path / "o", cases=[],
                                 progress=False)
    assert seen == [None, True]


@pytest.mark.parametrize("option,words", [
    (["--opacity", "1.5"], "--opacity"), (["--opacity", "x"], "--opacity"),
    (["--threads", "0"], "--threads"), (["--size-mm", "1e5"], "--size-mm"),
    (["--size-mm", "inf"], "--size-mm"), (["--slice", "-3"], "--slice")])
def test_predict_options_checked_by_argparse(option, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "s", "--box", "1,2,3,4", "--out", "o", *option])
    assert info.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("box", ["1,2,3", "inf,1,2,3", "5,5,1,1", "1e300,0,1e301,5"])
def test_predict_box_checked_before_the_model_loads(box, monkeypatch, tmp_path, capsys):
    import spinefx.runtime.inference as inference

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(inference, "Predictor", boom)
    assert main(["predict", str(tmp_path), "--box", box, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "box" in err and "Traceback" not in err


def test_predict_manifest_checked_before_the_model_loads(monkeypatch, tmp_path, capsys):
    import spinefx.runtime.inference as inference

    monkeypatch.setattr(inference, "Predictor", lambda *a, **k: 1 / 0)
    m = tmp_path / "m.csv"
    m.write_text("case_id,label,t1,t2,slice,box_x0,box_y0,box_x1,box_y1\n"
                 "c1,benign,/etc/passwd,t2,1,1,2,3,4\n")
    assert main(["predict", "--manifest", str(m), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{m} line 2" in err and "outside" in err and "--allow-outside" in err
    assert main(["predict", "--manifest", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "folder" in capsys.readouterr().err


# --- with the tiny ONNX model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")
    from tests.helpers.onnx_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    t1_dir, t2_dir, case = write_phantom_study(root / "study", seed=3, label="malignant",
                                               t2_variant="T2", case_id="p3")
    return root / "study", t1_dir, t2_dir, case


def _box(case) -> str:
    return ",".join(map(str, case.box))


def test_json_prints_the_result_document(model_dir, study, tmp_path, capsys):
    folder, _, _, case = study
    out = tmp_path / "o"
    assert main(["predict", str(folder), "--box", _box(case), "--slice", str(case.slice),
                 "--model", str(model_dir), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "result.json").read_text())
    assert printed["warnings"] == []


def test_rerun_without_dicom_removes_the_stale_capture(model_dir, study, tmp_path, capsys):
    folder, _, _, case = study
    out = tmp_path / "o"
    argv = ["predict", str(folder), "--box", _box(case), "--model", str(model_dir),
            "--out", str(out)]
    assert main([*argv, "--dicom"]) == 0 and (out / "overlay_sc.dcm").is_file()
    (out / "notes.txt").write_text("mine")
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "overlay.png", "result.json"]


def test_same_series_as_t1_and_t2_is_loud(model_dir, study, tmp_path, capsys):
    folder, t1_dir, _, case = study
    out = tmp_path / "o"
    assert main(["predict", "--t1", str(t1_dir), "--t2", str(t1_dir) + "/", "--box", _box(case),
                 "--model", str(model_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: T1 and T2 are the same series" in err
    doc = json.loads((out / "result.json").read_text())
    assert any("same series" in w for w in doc["warnings"])


def test_stir_as_t2_is_noted(model_dir, study, tmp_path, capsys):
    import pydicom

    folder, t1_dir, t2_dir, case = study
    stir = tmp_path / "stir"
    stir.mkdir()
    for f in sorted(t2_dir.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "SAG STIR"
        ds.SequenceName = "*tir2d1"
        ds.InversionTime = 150
        ds.ScanningSequence = "IR"
        ds.save_as(stir / f.name)
    from spinefx.runtime.cases import load_volume
    if load_volume(stir).weighting != "STIR":
        pytest.skip("the header rules do not call this edited series STIR")
    out = tmp_path / "o"
    assert main(["predict", "--t1", str(t1_dir), "--t2", str(stir), "--box", _box(case),
                 "--model", str(model_dir), "--out", str(out)]) == 0
    assert "T2 channel is a STIR series: the model was trained on T2W" in capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    assert "T2 channel is a STIR series: the model was trained on T2W" in doc["warnings"]


def test_errors_name_the_study_folder_once(model_dir, study, tmp_path, capsys):
    folder, _, _, case = study
    rc = main(["predict", str(folder), "--box", "5000,5000,5100,5100", "--model", str(model_dir),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()[-1]
    assert rc == 2 and err.startswith(f"error: {folder}: ") and "outside" in err
    assert err.count(str(folder)) == 1
    rc = main(["predict", str(folder), "--t1", "nothing-like-this", "--box", _box(case),
               "--model", str(model_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()[-1]
    assert rc == 2 and err.startswith(f"error: {folder}: ") and "nothing-like-this" in err
    t1_dir = study[1]
    rc = main(["predict", "--t1", str(t1_dir), "--t2", str(study[2]), "--box", "900,0,950,9",
               "--model", str(model_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()[-1]
    assert rc == 2 and err.startswith(f"error: T1 {t1_dir}: ") and "outside" in err


def test_manifest_errors_name_the_line(model_dir, study, tmp_path, capsys):
    folder, t1_dir, t2_dir, case = study
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1",
                    "box_y1"])
        w.writerow(["good", "malignant", t1_dir, t2_dir, case.slice, *case.box])
        w.writerow(["far", "malignant", t1_dir, t2_dir, case.slice, 3000, 3000, 3100, 3100])
    assert main(["predict", "--manifest", str(m), "--model", str(model_dir), "--out",
                 str(tmp_path / "b"), "--no-progress", "--allow-outside"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "b" / "predictions.csv")))
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[1]["error"].startswith(f"{m} line 3: ") and "outside" in rows[1]["error"]


def test_size_range_is_the_manifests():
    from spinefx.cli import predict

    text = Path(predict.__file__).read_text()
    lo, hi = cases_mod.SIZE_MM_RANGE
    assert re.search(rf"lo, hi = {lo}, {hi}", text)


def test_cli_progress_only_on_a_terminal(monkeypatch):
    import argparse
    import io

    from spinefx.cli._common import show_progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert show_progress(argparse.Namespace(no_progress=False)) is False  # a log file
    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress(argparse.Namespace(no_progress=False)) is True
    assert show_progress(argparse.Namespace(no_progress=True)) is False
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert show_progress(argparse.Namespace(no_progress=False)) is False


def test_every_command_reading_a_manifest_can_allow_outside_series():
    """A manifest with absolute series paths (an institution's own) is refused by default;
    every command that reads one must offer the same way to allow it."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices)
    readers_of_manifests = []
    for name, p in sub.choices.items():
        options = {o for a in p._actions for o in a.option_strings}
        paths = {o for a in p._actions if a.type is Path for o in a.option_strings}
        if paths & {"--manifest", "--cases"}:  # phantom's --cases is a count, not a folder
            readers_of_manifests.append(name)
            assert "--allow-outside" in options, name
    assert {"train", "evaluate", "export", "predict", "readers", "demo"} <= \
        set(readers_of_manifests)
