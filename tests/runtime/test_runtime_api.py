"""``spinefx.runtime.analyse_study``: the embedding entry gives the same document as
``spinefx predict STUDY`` (no box), from a folder or from pydicom datasets, and owns (then
removes) the temporary copy it makes of datasets."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pydicom
import pytest

from spinefx.cli import main
from spinefx.runtime import StudyResult, analyse_study
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.inference import Predictor


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("api") / "study"
    write_phantom_study(root, seed=102, label="benign", t2_variant="T2", case_id="p102")
    return root


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(None)


def _comparable(doc: dict) -> dict:
    doc = dict(doc)
    for key in ("files", "timings_ms"):
        doc.pop(key, None)
    return doc


def test_the_document_is_what_predict_writes(study, predictor, tmp_path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["predict", str(study), "--out", str(tmp_path / "cli"),
                     "--no-progress"]) == 0
    written = json.loads((tmp_path / "cli" / "result.json").read_text())
    with analyse_study(study, predictor=predictor) as result:
        assert isinstance(result, StudyResult)
        assert _comparable(result.document) == _comparable(written)
        assert result.probability == pytest.approx(written["probability"], abs=1e-6)
        files = result.write(tmp_path / "api")
    assert {"result", "overlay", "overview"} <= set(files)
    again = json.loads(files["result"].read_text())
    assert _comparable(again) == _comparable(written)


def test_datasets_in_a_private_folder_removed_on_close(study, predictor) -> None:
    datasets = [pydicom.dcmread(p) for p in sorted(study.rglob("*.dcm"))]
    result = analyse_study(datasets, predictor=predictor)
    scratch = result.source
    assert scratch.is_dir() and not scratch.is_relative_to(study)
    with analyse_study(study, predictor=predictor) as from_folder:
        assert result.document["vertebrae"] == from_folder.document["vertebrae"]
    result.close()
    assert not scratch.exists()


def test_no_sagittal_pair_is_an_error_naming_the_study(tmp_path, predictor) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpineFXError, match="empty"):
        analyse_study(empty, predictor=predictor)
    with pytest.raises(SpineFXError, match="not a study folder"):
        analyse_study(tmp_path / "missing", predictor=predictor)


def test_the_package_names_load_on_first_use() -> None:
    """Every public name resolves, and importing the package imports no pydicom/numpy (the
    node's cold start): checked in a fresh interpreter."""
    import subprocess
    import sys

    import spinefx.runtime as runtime

    assert runtime.__all__ == sorted(runtime._EXPORTS)
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None, name
    code = ("import sys, spinefx.runtime, spinefx.runtime.errors; "
            "print(sorted(m for m in ('pydicom', 'numpy', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
