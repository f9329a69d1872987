"""onnxruntime, CPU or GPU, either-or: the extras never install both, and the Predictor says so
(with the fix) when both are there, and what to install when none is. No GPU needed: the
installed distributions are faked through importlib.metadata."""
from __future__ import annotations

import importlib.metadata
import logging
import sys
from pathlib import Path

import pytest

from spinefx.runtime import inference
from spinefx.runtime.errors import SpineFXError, SpineFXWarning
from spinefx.runtime.inference import Predictor, installed_onnxruntimes
from tests.helpers.onnx_model import write_tiny_model

REPO = Path(__file__).resolve().parents[2]
FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'spinefx[gpu]'"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def _fake_distributions(monkeypatch, names: set[str]) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str):
        if name in ("onnxruntime", "onnxruntime-gpu"):
            if name not in names:
                raise importlib.metadata.PackageNotFoundError(name)
            return real("onnxruntime")  # any installed distribution object will do
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def _requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
            for r in requirements}


def test_extras_make_cpu_and_gpu_either_or() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    assert not core & {"onnxruntime", "onnxruntime-gpu"}, "core must not pick the runtime"
    extras = project["optional-dependencies"]
    assert "onnxruntime>=1.17" in extras["cpu"] and "onnxruntime-gpu>=1.17" in extras["gpu"]
    for name in ("dev", "demo"):  # the README's test and demo commands get the CPU runtime
        assert any(r.startswith("spinefx[") and "cpu" in r for r in extras[name]), name
    for name, reqs in extras.items():  # no extra ever brings the GPU runtime along
        assert name == "gpu" or not any("onnxruntime-gpu" in r or "gpu" in r.split("]")[0]
                                        for r in reqs), name


def test_installed_onnxruntimes_reads_the_metadata(monkeypatch) -> None:
    _fake_distributions(monkeypatch, {"onnxruntime", "onnxruntime-gpu"})
    assert installed_onnxruntimes() == ["onnxruntime", "onnxruntime-gpu"]
    _fake_distributions(monkeypatch, {"onnxruntime-gpu"})
    assert installed_onnxruntimes() == ["onnxruntime-gpu"]


def test_both_runtimes_installed_warns_with_the_fix(model_dir, monkeypatch, caplog) -> None:
    _fake_distributions(monkeypatch, {"onnxruntime", "onnxruntime-gpu"})
    with caplog.at_level(logging.WARNING, logger="spinefx.runtime"), \
            pytest.warns(SpineFXWarning, match="both onnxruntime and onnxruntime-gpu") as rec:
        predictor = Predictor(model_dir)
    assert predictor.provider == "CPUExecutionProvider"  # it still runs
    assert any(FIX in str(w.message) for w in rec)
    assert any(FIX in r.getMessage() for r in caplog.records)


def test_one_runtime_installed_is_quiet(model_dir, monkeypatch, recwarn, caplog) -> None:
    _fake_distributions(monkeypatch, {"onnxruntime"})
    with caplog.at_level(logging.WARNING, logger="spinefx.runtime"):
        Predictor(model_dir)
    assert not [w for w in recwarn if issubclass(w.category, SpineFXWarning)]
    assert not caplog.records


def test_gpu_runtime_without_cuda_is_logged(model_dir, monkeypatch, caplog) -> None:
    _fake_distributions(monkeypatch, {"onnxruntime-gpu"})
    with caplog.at_level(logging.WARNING, logger="spinefx.runtime"):
        Predictor(model_dir)
    assert any("CUDA is not available" in r.getMessage() for r in caplog.records)


def test_no_runtime_raises_with_the_install_lines(monkeypatch) -> None:
    _fake_distributions(monkeypatch, set())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(SpineFXError, match="onnxruntime is not installed") as err:
        inference.Predictor()
    assert "pip install 'spinefx[cpu]'" in str(err.value)
    assert "pip install 'spinefx[gpu]'" in str(err.value)
