"""`spinefx --help` and each sub-command explain themselves; user errors are one clean line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from spinefx.cli import build_parser, main

SUBCOMMANDS = ["phantom", "inspect", "localise", "train", "evaluate", "readers", "export", "bench",
               "publish", "predict", "demo", "node"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinefx", *args], capture_output=True,
                          text=True, timeout=120)


def test_top_level_help_lists_every_subcommand() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout
    assert "not a medical device" in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name: str) -> None:
    out = _run(name, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith(f"usage: spinefx {name}")
    assert len(out.stdout.splitlines()) > 5


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "usage: spinefx" in capsys.readouterr().out


def test_inspect_missing_folder_is_one_clean_line(tmp_path, capsys) -> None:
    missing = tmp_path / "nope"
    assert main(["inspect", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and "Traceback" not in err


def test_inspect_folder_without_dicom_says_so(tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["inspect", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "notes.txt: not a DICOM file" in captured.out
    assert "no DICOM image series" in captured.err


def test_phantom_rejects_more_malignant_than_cases(tmp_path, capsys) -> None:
    assert main(["phantom", "--out", str(tmp_path / "c"), "--cases", "3", "--malignant", "5"]) == 2
    assert "--malignant" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_parser_builds_without_heavy_imports() -> None:
    assert build_parser().prog == "spinefx"


def test_inspect_shows_series_but_no_patient_data(tmp_path, capsys) -> None:
    import pydicom

    from spinefx.phantom import write_phantom_study

    t1_dir, _, _ = write_phantom_study(tmp_path / "study", seed=5, label="benign", case_id="c5")
    src = pydicom.dcmread(next(t1_dir.iterdir()), stop_before_pixels=True)
    for args in ([], ["--json"]):
        assert main(["inspect", str(tmp_path / "study"), *args]) == 0
        out = capsys.readouterr().out
        assert "SAG T1" in out and "SAG T2" in out and "sagittal" in out
        for phi in (str(src.PatientName), str(src.PatientID), "PHANTOM_c5"):
            assert phi not in out


def test_help_loads_no_stage_and_nothing_heavy() -> None:
    """Every command registers with argparse alone: its stage loads only when it runs."""
    banned = ["torch", "torchvision", "pytorch_grad_cam", "sklearn", "scipy", "matplotlib",
              "gradio", "onnx", "onnxruntime", "huggingface_hub", "spinefx.train",
              "spinefx.export", "spinefx.demo", "spinefx.hub"]
    code = ("import sys; from spinefx.cli import build_parser; build_parser(); "
            f"print(','.join(m for m in {banned!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_help_defaults_match_the_stages() -> None:
    """The few stage values the help text spells out are the stages' own."""
    evaluation = pytest.importorskip("spinefx.train.evaluation")
    from spinefx.cli import evaluate, readers
    from spinefx.train.readers import DEFAULT_READERS

    assert evaluate.PER_FOLD == evaluation.PER_FOLD
    assert evaluate.DEFAULT_BOOTSTRAP == evaluation.DEFAULT_BOOTSTRAP
    assert readers.DEFAULT_READERS_TEXT == ", ".join(f"{k}={s:g},{t:g}"
                                                     for k, (s, t) in DEFAULT_READERS.items())


def test_usage_errors_are_spinefx_errors_and_every_epilog_is_shared() -> None:
    from spinefx.cli import EPILOG, UsageError
    from spinefx.runtime.errors import SpineFXError
    from spinefx.runtime.provenance import NOT_A_DEVICE

    assert issubclass(UsageError, SpineFXError) and EPILOG.startswith(NOT_A_DEVICE)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices)
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)
    assert all(p.epilog.startswith(EPILOG) for p in [parser, *sub.choices.values()])


def test_train_module_runs_on_its_own() -> None:
    """`python -m spinefx.cli.train` (what torchrun starts) takes the train options."""
    out = subprocess.run([sys.executable, "-m", "spinefx.cli.train", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("usage: python -m spinefx.cli.train") and "--resume" in out.stdout
