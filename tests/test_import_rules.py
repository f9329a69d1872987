"""The house's import rules (DESIGN.md), checked on the source and in a fresh interpreter.

- runtime imports numpy, pydicom, onnxruntime and light helpers, never torch (of the Hub
  unit only spinefx.hub.download, which resolves hf:// models);
- hub (spinefx/hub: Hugging Face upload and download) imports runtime, never torch, train,
  export or demo; huggingface_hub loads inside its functions only;
- demo imports runtime (and gradio), never torch;
- train may import runtime; export imports train; nothing imports demo.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = {"runtime": REPO / "runtime", "train": REPO / "train", "export": REPO / "export",
          "demo": REPO / "demo", "spinefx": REPO / "spinefx", "hub": REPO / "spinefx" / "hub"}
HEAVY = {"torch", "torchvision", "pytorch_grad_cam", "sklearn", "matplotlib", "scipy", "gradio"}
FORBIDDEN = {
    "runtime": HEAVY | {"spinefx.train", "spinefx.export", "spinefx.demo", "spinefx.hub.publish",
                        "spinefx.hub.card", "spinefx.hub.space"},
    "hub": HEAVY | {"spinefx.train", "spinefx.export", "spinefx.demo"},
    "demo": HEAVY - {"gradio", "matplotlib"} | {"spinefx.train", "spinefx.export"},
    "train": {"spinefx.export", "spinefx.demo"},
    "export": {"spinefx.demo"},
    "spinefx": {"spinefx.demo"},  # the CLI may start the demo lazily, but never at import
}


def _imports(path: Path, package: str) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against `package`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module or "")
    return names


def _top_level_imports(path: Path) -> set[str]:
    """Imports executed at module import time (not inside functions: lazy imports are fine)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
    return names


def _matches(name: str, banned: set[str]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_source_respects_import_rules(stage: str) -> None:
    folder = STAGES[stage]
    package = "spinefx" if stage == "spinefx" else f"spinefx.{stage}"
    offences = []
    for path in sorted(folder.rglob("*.py")):
        sub = package + "." + ".".join(path.relative_to(folder).with_suffix("").parts)
        sub = sub.removesuffix(".__init__")
        names = _imports(path, sub)
        if stage == "spinefx":  # the CLI may import stages lazily inside its commands
            names = _top_level_imports(path)
        offences += [f"{path.relative_to(REPO)} imports {n}" for n in names
                     if _matches(n, FORBIDDEN[stage])]
    assert not offences, "\n".join(offences)


TORCH = {"torch", "torchvision", "pytorch_grad_cam"}


@pytest.mark.parametrize("module, banned", [
    ("spinefx.runtime", HEAVY), ("spinefx.cli", HEAVY), ("spinefx.phantom", HEAVY),
    ("spinefx.hub.publish", HEAVY | {"huggingface_hub"}),  # publish imports card, space, download
    ("spinefx.runtime.inference", HEAVY | {"huggingface_hub"}),  # hf:// support costs nothing
    ("spinefx.demo", TORCH), ("spinefx.demo.app", TORCH),  # the app loads gradio, never torch
])
def test_fresh_interpreter_loads_no_torch(module: str, banned: set[str]) -> None:
    code = (f"import sys, {module}; "
            f"heavy = sorted(m for m in {sorted(banned)!r} if m in sys.modules);"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"
