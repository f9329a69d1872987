"""`spinefx publish`: the assembled model repository (dry run) and the upload calls (mocked)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spinefx.cli import main
from spinefx.hub.card import CARD_MARKER, card_metrics, front_matter
from spinefx.hub.publish import PublishError, assemble_model_repo, upload_repo, write_repo
from spinefx.runtime.model_files import ModelIntegrityError, read_model_spec

pytest.importorskip("huggingface_hub")
REPO = "someone/spinefx-tiny"


@pytest.fixture(scope="module")
def dry_run(tiny_run, tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dry") / "repo"
    assert main([
        "publish", str(tiny_run), str(tiny_model_dir), "--repo", REPO, "--dry-run", str(out)]) == 0
    return out


def test_dry_run_folder_holds_every_file(dry_run: Path, tiny_run: Path) -> None:
    names = {p.relative_to(dry_run).as_posix() for p in dry_run.rglob("*") if p.is_file()}
    assert names == {"README.md", "config.json", "model.safetensors", "model.onnx", "model.json",
                     "metrics.json", "oof_predictions.csv", "report.md", "training_log.csv",
                     "figures/roc.png", "figures/calibration.png"}
    # copied byte for byte where nothing needs redacting
    for name in ("model.safetensors", "oof_predictions.csv", "figures/roc.png"):
        assert (dry_run / name).read_bytes() == (tiny_run / name).read_bytes()
    # what must not go up: per-fold checkpoints, splits with patient ids
    assert not (dry_run / "folds").exists() and not (dry_run / "splits.json").exists()


def test_card_yaml_parses_and_carries_the_cv_metrics(dry_run: Path, tiny_run: Path) -> None:
    from huggingface_hub import ModelCard

    text = (dry_run / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "spinefx" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-classification"
    assert {"medical-imaging", "mri", "spine", "onnx", "vertebral-fracture",
            "synthetic-data"} <= set(meta["tags"])
    metrics = json.loads((tiny_run / "metrics.json").read_text())["pooled"]
    (entry,) = meta["model-index"]
    results = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    assert results["accuracy"] == pytest.approx(metrics["accuracy"]["value"], abs=1e-4)
    assert results["roc_auc"] == pytest.approx(metrics["auc"]["value"], abs=1e-4)
    assert results["sensitivity"] == pytest.approx(metrics["sensitivity"]["value"], abs=1e-4)
    assert results["specificity"] == pytest.approx(metrics["specificity"]["value"], abs=1e-4)
    assert "SYNTHETIC" in entry["results"][0]["dataset"]["name"]

    card = ModelCard.load(dry_run / "README.md")  # huggingface_hub's own parser agrees
    assert card.data.library_name == "spinefx" and len(card.data.eval_results) == 4
    body = card.text
    assert CARD_MARKER in text
    assert "SYNTHETIC TRAINING DATA" in body and "Not a medical device" in body
    assert "Synthetic phantom cohort, 40 cases (12 malignant), seed 7" in body
    assert "10-fold cross-validation" in body
    auc = metrics["auc"]
    assert f"{auc['value']:.3f} ({auc['ci_low']:.3f} - {auc['ci_high']:.3f})" in body
    assert "spinefx predict" in body and f"--model hf://{REPO}" in body
    assert "import onnxruntime as ort" in body
    assert "## Out-of-scope use" in body and "## Limitations" in body
    assert "figures/roc.png" in body


def test_card_onnxruntime_snippet_runs(dry_run: Path, monkeypatch) -> None:
    body = (dry_run / "README.md").read_text()
    snippet = body.split("### Plain onnxruntime")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(dry_run)
    scope: dict = {}
    exec(compile(snippet, "card-snippet", "exec"), scope)  # noqa: S102 - our own card text
    assert scope["label"] in ("benign", "malignant")
    assert scope["probability"].shape == (1,)


def test_from_pretrained_rebuilds_equal_model(dry_run: Path, tiny_run: Path) -> None:
    torch = pytest.importorskip("torch")
    from spinefx.train.model import SpineFxNet, load_model

    a = load_model(tiny_run)
    b = SpineFxNet.from_pretrained(str(dry_run)).eval()
    x = torch.rand(2, 6, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert b.preprocess == a.preprocess


def test_published_onnx_passes_sha256_check(dry_run: Path, tiny_model_dir: Path) -> None:
    spec = read_model_spec(dry_run)
    variant, path, digest = spec.file()
    assert path == dry_run / "model.onnx" and variant == "fp32"
    assert spec.synthetic and spec.raw["training_data"]["seed"] == 7
    from spinefx.runtime.inference import Predictor

    prob, cam = Predictor(dry_run).run(np.full((1, 6, 64, 64), 0.4, np.float32))
    assert prob[0] == pytest.approx(0.5, abs=1e-3)


def test_local_paths_are_redacted(dry_run: Path, tiny_run: Path) -> None:
    manifest = json.loads((tiny_run / "metrics.json").read_text())["manifest"]
    for name in ("metrics.json", "report.md", "config.json", "model.json"):
        assert manifest not in (dry_run / name).read_text(), name
    assert json.loads((dry_run / "metrics.json").read_text())["manifest"] == "cohort/manifest.csv"
    # numbers untouched
    assert card_metrics(json.loads((dry_run / "metrics.json").read_text())) == \
        card_metrics(json.loads((tiny_run / "metrics.json").read_text()))


def test_dry_run_refuses_foreign_folder_and_replaces_previous(tiny_run, tiny_model_dir,
                                                               tmp_path, capsys) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_bytes(b"precious")
    assert main(["publish", str(tiny_run), str(tiny_model_dir), "--repo", REPO,
                 "--dry-run", str(foreign)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (foreign / "thesis.docx").read_bytes() == b"precious"

    out = tmp_path / "again"
    for _ in range(2):
        assert main(["publish", str(tiny_run), str(tiny_model_dir), "--repo", REPO,
                     "--dry-run", str(out)]) == 0
    (out / "stale.txt").write_text("from an earlier dry run")
    assert main(["publish", str(tiny_run), str(tiny_model_dir), "--repo", REPO,
                 "--dry-run", str(out)]) == 0
    assert not (out / "stale.txt").exists() and (out / "model.onnx").is_file()


def test_tampered_onnx_is_not_published(tiny_run, tiny_model_dir, tmp_path) -> None:
    bad = tmp_path / "bad-model"
    shutil.copytree(tiny_model_dir, bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        assemble_model_repo(tiny_run, bad, REPO)


def test_model_from_another_run_is_refused(tiny_run, tiny_model_dir, tmp_path) -> None:
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    spec = json.loads((other / "model.json").read_text())
    spec["preprocessing"]["image_size"] = 96
    (other / "model.json").write_text(json.dumps(spec))
    with pytest.raises(PublishError, match="not exported from"):
        assemble_model_repo(tiny_run, other, REPO)


def test_incomplete_run_and_bad_repo_are_refused(tiny_run, tiny_model_dir, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.safetensors").unlink()
    with pytest.raises(PublishError, match="model.safetensors"):
        assemble_model_repo(run, tiny_model_dir, REPO)
    for repo in ("no-owner", "a/b/c", "own er/name", "a--b/name"):
        with pytest.raises(PublishError, match="--repo"):
            assemble_model_repo(tiny_run, tiny_model_dir, repo)


def test_real_data_needs_a_description(tiny_run, tiny_model_dir, tmp_path) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    shutil.copytree(tiny_run, run)
    shutil.copytree(tiny_model_dir, model)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["synthetic"] = False
    metrics["manifest"] = str(tmp_path / "nowhere" / "manifest.csv")
    (run / "metrics.json").write_text(json.dumps(metrics))
    spec = json.loads((model / "model.json").read_text())
    spec["training_data"] = {"description": "manifest manifest.csv, 40 cases",
                             "synthetic": False}
    (model / "model.json").write_text(json.dumps(spec))
    with pytest.raises(PublishError, match="--data-description.*40 patients"):
        assemble_model_repo(run, model, REPO)
    plan = assemble_model_repo(run, model, REPO,
                               data_description="institutional data, 40 patients, 2015-2020")
    card = plan.files["README.md"].decode()
    assert "SYNTHETIC" not in card and "institutional data, 40 patients, 2015-2020" in card
    assert "Institutional data" in front_matter(card)["model-index"][0]["results"][0][
        "dataset"]["name"]
    published = json.loads(plan.files["model.json"])
    assert published["training_data"]["description"] == "institutional data, 40 patients, " \
                                                        "2015-2020"
    assert published["files"] == spec["files"]  # sha256 entries untouched
    assert any("oof_predictions.csv" in n for n in plan.notes)


# ---------------------------------------------------------------------------------------------
# upload: HfApi calls recorded instead of sent
# ---------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, monkeypatch, private_now: bool = True):
        from huggingface_hub import HfApi

        self.calls: list[tuple[str, tuple, dict]] = []
        rec = self

        def create_repo(self, repo_id, **kw):
            rec.calls.append(("create_repo", (repo_id,), kw))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, **kw):
            rec.calls.append(("create_branch", (repo_id,), kw))

        def repo_info(self, repo_id, **kw):
            rec.calls.append(("repo_info", (repo_id,), kw))
            return type("Info", (), {"private": private_now})()

        def create_commit(self, repo_id, operations, **kw):
            ops = list(operations)
            rec.calls.append(("create_commit", (repo_id, ops), kw))
            from huggingface_hub.hf_api import CommitInfo
            return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
                              commit_message=kw["commit_message"], commit_description="",
                              oid="abc123")

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("repo_info", repo_info), ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def _content(op) -> bytes:
    src = op.path_or_fileobj
    return src if isinstance(src, bytes) else Path(src).read_bytes()


def test_upload_sends_one_commit_with_every_file(tiny_run, tiny_model_dir, monkeypatch,
                                                 capsys) -> None:
    rec = Recorder(monkeypatch)
    assert main(["publish", str(tiny_run), str(tiny_model_dir), "--repo", REPO, "--private",
                 "--revision", "v1"]) == 0
    out = capsys.readouterr().out
    assert f"https://huggingface.co/{REPO}/commit/abc123" in out
    assert f"hf://{REPO}@v1" in out
    ((_, (repo,), kw),) = rec.named("create_repo")
    assert repo == REPO and kw["private"] is True and kw["exist_ok"] is True
    assert kw["repo_type"] == "model"
    ((_, _, bkw),) = rec.named("create_branch")
    assert bkw["branch"] == "v1" and bkw["exist_ok"] is True
    ((_, (repo, ops), ckw),) = rec.named("create_commit")
    assert ckw["revision"] == "v1" and ckw["repo_type"] == "model"
    assert ckw["commit_message"].startswith("spinefx model: spinefx-tiny, CV AUC 0.")
    assert "SYNTHETIC" in ckw["commit_message"]
    by_path = {op.path_in_repo: op for op in ops}
    assert set(by_path) == {"README.md", "config.json", "model.safetensors", "model.onnx",
                            "model.json", "metrics.json", "oof_predictions.csv", "report.md",
                            "training_log.csv", "figures/roc.png", "figures/calibration.png"}
    assert _content(by_path["model.onnx"]) == (tiny_model_dir / "model.onnx").read_bytes()
    assert _content(by_path["model.safetensors"]) == (tiny_run / "model.safetensors").read_bytes()
    assert b"library_name: spinefx" in _content(by_path["README.md"])
    # what the dry run writes is what the upload sends
    plan = assemble_model_repo(tiny_run, tiny_model_dir, REPO)
    for path, op in by_path.items():
        src = plan.files[path]
        assert _content(op) == (src if isinstance(src, bytes) else src.read_bytes()), path


def test_upload_defaults_public_main(tiny_run, tiny_model_dir, monkeypatch) -> None:
    rec = Recorder(monkeypatch)
    plan = assemble_model_repo(tiny_run, tiny_model_dir, REPO)
    url = upload_repo(plan)
    assert url.endswith("/commit/abc123")
    assert rec.named("create_repo")[0][2]["private"] is False
    assert not rec.named("create_branch") and not rec.named("repo_info")
    assert rec.named("create_commit")[0][2]["revision"] is None


def test_private_upload_to_existing_public_repo_is_refused(tiny_run, tiny_model_dir,
                                                           monkeypatch) -> None:
    rec = Recorder(monkeypatch, private_now=False)
    plan = assemble_model_repo(tiny_run, tiny_model_dir, REPO)
    with pytest.raises(PublishError, match="public"):
        upload_repo(plan, private=True)
    assert not rec.named("create_commit")


def test_no_token_is_a_clear_error(tiny_run, tiny_model_dir, monkeypatch) -> None:
    import huggingface_hub

    rec = Recorder(monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    plan = assemble_model_repo(tiny_run, tiny_model_dir, REPO)
    with pytest.raises(PublishError, match="hf auth login"):
        upload_repo(plan)
    assert not rec.calls


def test_hub_http_errors_become_one_line(tiny_run, tiny_model_dir, monkeypatch) -> None:
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    Recorder(monkeypatch)
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    response = httpx2.Response(403, request=request)

    def forbidden(self, repo_id, **kw):
        raise HfHubHTTPError("403 Forbidden: you don't have the rights", response=response)

    monkeypatch.setattr(HfApi, "create_repo", forbidden)
    plan = assemble_model_repo(tiny_run, tiny_model_dir, REPO)
    with pytest.raises(PublishError, match="write token"):
        upload_repo(plan)


def test_write_repo_round_trip(tiny_run, tiny_model_dir, tmp_path) -> None:
    plan = assemble_model_repo(tiny_run, tiny_model_dir, REPO, name="My model",
                               license="cc-by-nc-4.0")
    out = write_repo(plan, tmp_path / "x")
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "cc-by-nc-4.0" and meta["model-index"][0]["name"] == "My model"
    assert plan.commit_message.startswith("spinefx model: My model, CV AUC")
