"""`spinefx publish --space`: the Space folder (app.py, requirements.txt, README with Space
YAML)."""
from __future__ import annotations

import ast

import pytest

from spinefx._version import __version__
from spinefx.cli import main
from spinefx.hub.card import front_matter
from spinefx.hub.publish import PublishError, assemble_space_repo, upload_repo
from spinefx.hub.space import SPACE_MARKER, gradio_version

pytest.importorskip("huggingface_hub")
MODEL = "someone/spinefx-tiny"
SPACE = "someone/spinefx-demo"
REQ = f"spinefx[hub,demo] @ git+https://github.com/acme/spinefx@v{__version__}"


def test_space_dry_run_folder(tmp_path, capsys) -> None:
    out = tmp_path / "space"
    assert main(["publish", "--space", SPACE, "--repo", MODEL, "--revision", "v1",
                 "--sdk-version", "6.31.0", "--dry-run", str(out)]) == 0
    assert "placeholder" in capsys.readouterr().out  # told to set --spinefx-requirement
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", "requirements.txt"]

    readme = (out / "README.md").read_text()
    meta = front_matter(readme)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == "6.31.0" and meta["title"] and meta["emoji"]
    assert meta["models"] == [MODEL]
    assert SPACE_MARKER in readme and "Not a medical device" in readme

    app = (out / "app.py").read_text()
    ast.parse(app)
    assert f"'hf://{MODEL}@v1'" in app and "SPINEFX_MODEL" in app and "build_app" in app

    reqs = [line for line in (out / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert reqs == [f"spinefx[hub,demo] @ git+https://github.com/YOUR-ORG/spinefx@v{__version__}"]


def test_space_requirement_and_default_sdk(tmp_path) -> None:
    if gradio_version() is None:
        pytest.skip("gradio not installed")
    plan = assemble_space_repo(SPACE, MODEL, requirement=REQ, synthetic=True)
    meta = front_matter(plan.files["README.md"].decode())
    assert meta["sdk_version"] == gradio_version()
    assert "SYNTHETIC" in plan.files["README.md"].decode()
    assert REQ in plan.files["requirements.txt"].decode().splitlines()
    assert f"'hf://{MODEL}'" in plan.files["app.py"].decode()
    assert not plan.notes


def test_space_app_builds_the_demo_with_the_hub_model(fake_hub, tiny_model_dir, tmp_path,
                                                      monkeypatch) -> None:
    """The generated app.py, run as a Space would import it, loads hf://MODEL from the Hub."""
    pytest.importorskip("gradio")
    fake_hub.add_folder(MODEL, tiny_model_dir)
    plan = assemble_space_repo(SPACE, MODEL, requirement=REQ, sdk_version="6.31.0")
    app = tmp_path / "app.py"
    app.write_bytes(plan.files["app.py"])
    monkeypatch.delenv("SPINEFX_MODEL", raising=False)
    monkeypatch.setenv("SPINEFX_CASES", str(tmp_path / "no-cases"))
    calls = {}
    import spinefx.demo.app as demo_app

    def fake_build_app(model=None, cases_dir=None, **kw):
        from spinefx.runtime.inference import Predictor
        calls["model"], calls["predictor"] = model, Predictor(model)
        return "app"

    monkeypatch.setattr(demo_app, "build_app", fake_build_app)
    scope = {"__name__": "space_app"}
    exec(compile(app.read_text(), str(app), "exec"), scope)  # noqa: S102 - generated here
    assert calls["model"] == f"hf://{MODEL}" and scope["demo"] == "app"
    assert calls["predictor"].spec.synthetic


def test_space_upload(monkeypatch) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import CommitInfo

    seen = {}
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: seen.update(repo=kw))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: (
        seen.update(ops=list(operations), commit=kw),
        CommitInfo(commit_url=f"https://huggingface.co/spaces/{repo_id}/commit/1",
                   commit_message="", commit_description="", oid="1"))[1])
    placeholder = assemble_space_repo(SPACE, MODEL, sdk_version="6.31.0")
    with pytest.raises(PublishError, match="--spinefx-requirement"):
        upload_repo(placeholder)
    assert not seen
    plan = assemble_space_repo(SPACE, MODEL, requirement=REQ, sdk_version="6.31.0")
    url = upload_repo(plan, private=False)
    assert url.endswith("/commit/1")
    assert seen["repo"]["repo_type"] == "space" and seen["repo"]["space_sdk"] == "gradio"
    assert seen["commit"]["repo_type"] == "space"
    assert sorted(op.path_in_repo for op in seen["ops"]) == ["README.md", "app.py",
                                                            "requirements.txt"]


def test_model_and_space_together_dry_run(tiny_run, tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "both"
    assert main(["publish", str(tiny_run), str(tiny_model_dir), "--repo", MODEL, "--space", SPACE,
                 "--spinefx-requirement", REQ, "--sdk-version", "6.31.0",
                 "--dry-run", str(out)]) == 0
    assert (out / "model" / "model.onnx").is_file() and (out / "space" / "app.py").is_file()
    assert "SYNTHETIC" in (out / "space" / "README.md").read_text()


@pytest.mark.parametrize("argv, match", [
    (["publish", "--repo", MODEL], "nothing to publish"),
    (["publish", "run-only", "--repo", MODEL], "both RUN_DIR and MODEL_DIR"),
    (["publish", "--space", "bad", "--repo", MODEL], "--space"),
    (["publish", "--space", SPACE, "--repo", MODEL, "--license", "Apache 2"], "--license"),
])
def test_cli_usage_errors(argv, match, capsys) -> None:
    assert main(argv) == 2
    assert match in capsys.readouterr().err
