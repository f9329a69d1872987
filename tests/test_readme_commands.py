"""The README's two commands are the ones CI and users run: keep them in step with .ci/run."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fenced_commands(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    part = re.split(r"\n#+ ", text.split(f"### {section}\n", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", part, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_exactly_the_readme_test_commands() -> None:
    readme = _fenced_commands("Run the tests")
    ci_lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export ",
                                                                   "exec "))]
    assert ci_lines == readme
    assert readme[-1].endswith("python -m pytest -q")


def test_readme_commands_use_the_torch_constraints() -> None:
    for section in ("Run the tests", "Run it"):
        cmd = _fenced_commands(section)[-1]
        assert "-c constraints.txt" in cmd, section
    pins = (REPO / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in pins and "torchvision==0.28.0" in pins


def test_readme_says_it_is_not_a_medical_device() -> None:
    assert "not a medical device" in (REPO / "README.md").read_text()
