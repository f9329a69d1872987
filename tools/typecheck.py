"""Type-check the installed layout of the package: ``python tools/typecheck.py [mypy args]``.

The four stages are top-level folders mapped into ``spinefx`` by ``package-dir`` (runtime/ is
``spinefx.runtime``...). mypy resolves modules by folder, so run on the folders as they are
it would not find ``spinefx.runtime`` from ``demo/`` and would type every cross-stage import as
``Any``. This script builds the installed layout as a tree of symbolic links in a temporary
folder (nothing is copied or written in the checkout) and runs mypy on ``-p spinefx`` there,
with the settings of ``[tool.mypy]`` in pyproject.toml. Reported paths are those of the link
tree (``spinefx/runtime/x.py`` = ``runtime/x.py``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    """``{"spinefx.runtime": REPO/"runtime", ...}`` from pyproject's package-dir."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: REPO / folder for name, folder in mapping.items()}


def link_tree(root: Path) -> None:
    """The installed layout under ``root``: spinefx/ with each mapped stage linked in."""
    dirs = package_dirs()
    top = root / "spinefx"
    top.mkdir()
    for entry in dirs["spinefx"].iterdir():
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        target = root.joinpath(*name.split("."))
        if name != "spinefx" and not target.exists():
            target.symlink_to(folder)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="spinefx-typecheck-") as tmp:
        link_tree(Path(tmp))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
               "-p", "spinefx", *argv]
        env = {**os.environ, "MYPY_CACHE_DIR": str(REPO / ".mypy_cache")}
        return subprocess.call(cmd, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
