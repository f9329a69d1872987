"""Fixtures for the Hub tests: a tiny training run, a tiny ONNX model folder, and a fake Hub.

Nothing here talks to huggingface.co. The fake Hub is a real HTTP server on 127.0.0.1 that
answers ``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{path}`` the way the Hub does for
``hf_hub_download`` (headers ``X-Repo-Commit``, ``ETag``, ``Content-Length``; errors with
``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound), so the real download and
cache code of huggingface_hub runs against it.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

IMAGE_SIZE = 64


# ---------------------------------------------------------------------------------------------
# a tiny training run folder (what spinefx.train writes), built without training
# ---------------------------------------------------------------------------------------------
def _write_run(run: Path, manifest_dir: Path, synthetic: bool = True) -> Path:
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is None:  # only looked up: spinefx imports it
        pytest.skip("the train extra (torchvision) is not installed")
    from PIL import Image

    from spinefx.train.metrics import binary_metrics
    from spinefx.train.model import SpineFxNet

    torch.manual_seed(0)
    model = SpineFxNet(preprocess={"image_size": IMAGE_SIZE}).eval()
    run.mkdir(parents=True)
    model.save_pretrained(run, config={
        "architecture": model.architecture, "in_channels": model.in_channels,
        "classes": list(model.classes), "preprocess": model.preprocess,
        "training": {"seed": 3, "threshold": 0.45, "final_epochs": 2,
                     "manifest_note": str(manifest_dir / "manifest.csv")}})
    if (run / "README.md").exists():  # the mixin's own card: publish replaces it
        (run / "README.md").unlink()

    manifest_dir.mkdir(parents=True, exist_ok=True)
    (manifest_dir / "manifest.csv").write_text("case_id,label\n")
    if synthetic:
        (manifest_dir / "cohort.json").write_text(json.dumps(
            {"synthetic": True, "seed": 7, "n_cases": 40, "n_malignant": 12}))
    rng = np.random.default_rng(0)
    y = np.array([1] * 12 + [0] * 28)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, len(y)), 0, 1)
    folds = np.arange(len(y)) % 10 + 1
    rows = [{"case_id": f"case_{i:04d}", "fold": int(f), "label": "malignant" if t else "benign",
             "probability": float(q), "threshold": 0.45} for i, (t, q, f) in
            enumerate(zip(y, p, folds))]
    with open(run / "oof_predictions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pooled = binary_metrics(y, p, 0.45)
    metrics = {
        "synthetic": synthetic, "manifest": str(manifest_dir / "manifest.csv"),
        "n_cases": 40, "n_malignant": 12, "folds": 10, "positive_class": "malignant",
        "threshold": 0.45, "fold_thresholds": [0.45] * 10,
        "pooled": {**pooled, "threshold": None}, "pooled_at_operating_threshold": pooled,
        "per_fold": [], "per_fold_summary": {
            k: {"mean": 0.8, "sd": 0.1, "n_folds": 10}
            for k in ("auc", "accuracy", "sensitivity", "specificity")},
        "settings": {"folds": 10, "val_fraction": 0.15, "threshold_rule": "youden", "seed": 3},
    }
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run / "report.md").write_text(
        f"# spinefx training report\n\n- manifest: `{manifest_dir / 'manifest.csv'}`\n\n"
        "![ROC curve](figures/roc.png)\n")
    (run / "training_log.csv").write_text("fold,epoch,train_loss\n1,1,0.69\n")
    (run / "figures").mkdir()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(run / "figures" / "roc.png")
    Image.new("RGB", (8, 8), (30, 30, 200)).save(run / "figures" / "calibration.png")
    (run / "splits.json").write_text(json.dumps({"cases": [
        {"case_id": r["case_id"], "patient_id": r["case_id"], "fold": r["fold"]} for r in rows]}))
    (run / "folds" / "1").mkdir(parents=True)
    (run / "folds" / "1" / "checkpoint.safetensors").write_bytes(b"not published")
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    return _write_run(root / "run", root / "cohort")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")
    from tests.helpers.onnx_model import write_tiny_model

    folder = write_tiny_model(tmp_path_factory.mktemp("model") / "model",
                              image_size=IMAGE_SIZE, threshold=0.45)
    spec = json.loads((folder / "model.json").read_text())
    spec["metrics"] = {"n_cases": 40, "source": "RUN/metrics.json"}
    spec["training_data"] = {"description": "synthetic phantom cohort, 40 cases (12 malignant), "
                                            "seed 7", "synthetic": True, "n_cases": 40,
                             "n_malignant": 12, "seed": 7}
    (folder / "model.json").write_text(json.dumps(spec, indent=2))
    return folder


# ---------------------------------------------------------------------------------------------
# a fake Hub on 127.0.0.1
# ---------------------------------------------------------------------------------------------
class FakeHub:
    """Repos: ``{repo_id: {"refs": {branch: commit}, "commits": {commit: {path: bytes}}}}``."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        head = repo["refs"].get(branch, repo["refs"].get("main"))  # a new branch starts at main
        parent = repo["commits"].get(head, {})
        content = {**parent, **files}
        digest = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest())
                                                for k, v in content.items())).encode()
                              + str(len(repo["commits"])).encode()).hexdigest()
        repo["commits"][digest] = content
        repo["refs"][branch] = digest
        return digest

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        files = {p.relative_to(folder).as_posix(): p.read_bytes()
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_commit(repo_id, files, branch)

    def resolve(self, path: str):
        """-> (status, headers, body) for /{owner}/{name}/resolve/{rev}/{file}."""
        parts = path.split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {}, b"not found"
        repo_id, revision, filename = "/".join(parts[:2]), unquote(parts[3]), \
            unquote("/".join(parts[4:]))
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound",
                         "X-Error-Message": "Repository not found"}, b"{}"
        commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound",
                         "X-Error-Message": "Invalid rev id"}, b"{}"
        data = repo["commits"][commit].get(filename)
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "X-Repo-Commit": commit}, b"{}"
        return 200, {"X-Repo-Commit": commit,
                     "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                     "Content-Type": "application/octet-stream"}, data


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, with_body: bool) -> None:
            hub.requests.append((self.command, self.path))
            status, headers, body = hub.resolve(self.path.split("?")[0].lstrip("/"))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802
            self._serve(False)

        def do_GET(self):  # noqa: N802
            self._serve(True)

        def log_message(self, *args):  # keep pytest output clean
            pass

    return Handler


NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves the machine


def _point_hub_at(monkeypatch, endpoint: str) -> None:
    """huggingface_hub's import-time endpoint constants -> ``endpoint`` (and HF_ENDPOINT)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture(autouse=True)
def _never_the_real_hub(monkeypatch, tmp_path):
    """No test here may reach huggingface.co: every endpoint huggingface_hub knows points at
    127.0.0.1, its once-a-day agent-registry fetch is pre-empted, and HF_HOME is temporary."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    _point_hub_at(monkeypatch, NOWHERE)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH",
                        str(tmp_path / "hf-home" / ".agent_harnesses.json"))
    try:
        from huggingface_hub.utils import _detect_agent
        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    except (ImportError, AttributeError):
        pass
    yield


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A running fake Hub; HF_ENDPOINT points at it, the HF cache is in tmp_path, online."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    cache = tmp_path / "hf-cache"
    _point_hub_at(monkeypatch, hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    hub.cache = cache
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()

