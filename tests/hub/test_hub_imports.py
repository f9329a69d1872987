"""spinefx.hub is its own torch-free unit: it imports the runtime, the runtime imports only its
download module, no import cycle runs through it (function-level imports counted), and
huggingface_hub is an optional extra with a clear message when it is missing."""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HUB_MODULES = ["spinefx.hub", "spinefx.hub.download", "spinefx.hub.card", "spinefx.hub.space",
               "spinefx.hub.publish"]
NOT_AT_IMPORT = ["torch", "torchvision", "pytorch_grad_cam", "sklearn", "matplotlib", "scipy",
                 "gradio", "huggingface_hub", "spinefx.train", "spinefx.export", "spinefx.demo"]
# module name prefix -> source folder (package-dir in pyproject.toml)
SOURCES = {"spinefx.hub": REPO / "spinefx" / "hub", "spinefx.runtime": REPO / "runtime"}


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          timeout=180)


def test_fresh_interpreter_imports_the_hub_without_torch_or_huggingface_hub() -> None:
    code = (f"import sys, {', '.join(HUB_MODULES)}\n"
            f"print(','.join(m for m in {NOT_AT_IMPORT!r} if m in sys.modules))")
    out = _fresh(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing spinefx.hub loaded {out.stdout.strip()}"


@pytest.mark.parametrize("first, then", [("spinefx.runtime.inference", "spinefx.hub.publish"),
                                         ("spinefx.hub.publish", "spinefx.runtime.inference"),
                                         ("spinefx.hub.download", "spinefx.runtime.inference")])
def test_either_import_order_works(first: str, then: str) -> None:
    """inference imports hub.download at the top; the hub imports the runtime: no order may
    meet a half-initialised module."""
    out = _fresh(f"import {first}, {then}\n"
                 "from spinefx.runtime.inference import resolve_model\n"
                 "from spinefx.hub.download import resolve_model as r\n"
                 "assert resolve_model is r\n")
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------------------------
# the import graph of runtime + hub, every import statement (function-level ones too)
# ---------------------------------------------------------------------------------------------
def _module_files() -> dict[str, Path]:
    files = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.glob("*.py")):
            name = prefix if path.stem == "__init__" else f"{prefix}.{path.stem}"
            files[name] = path
    return files


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known}
    return out


def _graph() -> dict[str, set[str]]:
    files = _module_files()
    return {name: _imported(name, path, set(files)) for name, path in files.items()}


def test_model_files_imports_no_hub_code() -> None:
    graph = _graph()
    assert not {m for m in graph["spinefx.runtime.model_files"] if m.startswith("spinefx.hub")}


def test_runtime_imports_only_the_hub_download_module() -> None:
    offences = [f"{m} imports {t}" for m, targets in _graph().items()
                if m.startswith("spinefx.runtime") for t in targets
                if t.startswith("spinefx.hub") and t not in ("spinefx.hub", "spinefx.hub.download")]
    assert not offences, "\n".join(offences)


def test_no_import_cycle_runs_through_the_hub() -> None:
    graph = _graph()
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                cycles.append(" -> ".join(path + [nxt]))
            elif nxt not in path:
                walk(nxt, path + [nxt])

    for start in sorted(m for m in graph if m.startswith("spinefx.hub")):
        walk(start, [start])
    assert not cycles, "\n".join(cycles)


# ---------------------------------------------------------------------------------------------
# the card template ships; huggingface_hub is optional
# ---------------------------------------------------------------------------------------------
def test_card_template_is_package_data() -> None:
    from spinefx.hub.card import TEMPLATE, card_template

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert resources.files("spinefx.hub").joinpath(TEMPLATE).is_file()
    assert "$metric_rows" in card_template().template
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "spinefx.hub" in setuptools["packages"]
    assert "*.md" in setuptools["package-data"]["spinefx.hub"]


def test_missing_huggingface_hub_names_the_extra(monkeypatch, tmp_path) -> None:
    from spinefx.hub.card import CardInputs, card_data
    from spinefx.hub.download import HubError, download_model, resolve_model
    from spinefx.hub.publish import PublishError, RepoPlan, upload_repo

    for name in [m for m in sys.modules if m == "huggingface_hub" or
                 m.startswith("huggingface_hub.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import -> ImportError
    hint = "pip install 'spinefx[hub]'"
    with pytest.raises(HubError, match=hint.replace("[", r"\[").replace("]", r"\]")):
        download_model("hf://owner/name")
    with pytest.raises(HubError, match="needs huggingface_hub"):
        resolve_model("hf://owner/name")
    with pytest.raises(HubError, match="needs huggingface_hub"):
        card_data(CardInputs(repo_id="a/b", name="b", license="mit", metrics={}, model_spec={},
                             config={}, synthetic=True, data_description="synthetic"))
    plan = RepoPlan(repo_id="a/b", repo_type="model", files={"x": b""}, commit_message="m")
    with pytest.raises(PublishError, match="needs huggingface_hub"):
        upload_repo(plan)
