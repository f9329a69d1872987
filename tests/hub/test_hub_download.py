"""`hf://owner/name[@revision]` loading against a fake Hub on 127.0.0.1 (real huggingface_hub
download and cache code), offline mode, and tampered cache files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spinefx.hub.download import (
    HubError,
    HubRef,
    download_files,
    download_model,
    parse_hf_uri,
    resolve_model,
)
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.model_files import ModelIntegrityError

pytest.importorskip("huggingface_hub")
REPO = "someone/tiny"


def set_offline(monkeypatch) -> None:
    """HF_HUB_OFFLINE=1 as if set before start-up (huggingface_hub reads it at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _model_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(fake_hub, tiny_model_dir):
    fake_hub.commit = fake_hub.add_commit(REPO, _model_files(tiny_model_dir))
    return fake_hub


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, ref", [
    ("hf://owner/name", HubRef("owner/name")),
    ("hf://owner/name@v1.2", HubRef("owner/name", "v1.2")),
    ("hf://owner/my_model.v2@" + "a" * 40, HubRef("owner/my_model.v2", "a" * 40)),
    ("hf://owner/name@refs/pr/3", HubRef("owner/name", "refs/pr/3")),
    ("hf://models/owner/name", HubRef("owner/name")),
    ("hf:/owner/name", HubRef("owner/name")),  # what pathlib.Path makes of hf://owner/name
    (Path("hf://owner/name"), HubRef("owner/name")),
])
def test_parse_hf_uri(text, ref) -> None:
    assert parse_hf_uri(text) == ref


@pytest.mark.parametrize("text, match", [
    ("hf://", "owner/name"), ("hf://name", "got 'name'"), ("hf://owner/", "owner/name"),
    ("hf://owner/name/model.onnx", "not a file"), ("hf://owner/name@", "revision"),
    ("hf://own er/name", "not a valid"), ("hf://a--b/name", "not a valid"),
    ("hf://datasets/owner/name", "dataset"), ("https://huggingface.co/owner/name", "not a Hugging"),
    ("hf://owner/na..me", "not a valid"),
])
def test_malformed_hf_uri_is_a_clear_error(text, match) -> None:
    with pytest.raises(HubError, match=match):
        parse_hf_uri(text)
    with pytest.raises(SpineFXError):
        resolve_model(text) if text.startswith("hf:") else parse_hf_uri(text)


# ---------------------------------------------------------------------------------------------
# downloading
# ---------------------------------------------------------------------------------------------
def test_download_into_the_hf_cache_and_verify(hub, tiny_model_dir) -> None:
    folder = download_model(f"hf://{REPO}")
    cache = Path(hub.cache).resolve()
    assert folder == cache / "models--someone--tiny" / "snapshots" / hub.commit
    assert (cache / "models--someone--tiny" / "refs" / "main").read_text() == hub.commit
    assert (folder / "model.onnx").read_bytes() == (tiny_model_dir / "model.onnx").read_bytes()
    gets = [p for m, p in hub.requests if m == "GET"]
    assert gets[0].endswith("/resolve/main/model.json")        # model.json first ...
    assert gets[1].endswith(f"/resolve/{hub.commit}/model.onnx")  # ... then its files, same commit
    # a second call is served from the cache (no file is fetched again)
    n = len([1 for m, _ in hub.requests if m == "GET"])
    assert download_model(f"hf://{REPO}") == folder
    assert len([1 for m, _ in hub.requests if m == "GET"]) == n


def test_predictor_runs_end_to_end_from_hf(hub) -> None:
    from spinefx.runtime.inference import Predictor

    predictor = Predictor(f"hf://{REPO}")
    prob, cam = predictor.run(np.full((2, 6, 64, 64), 0.6, np.float32))
    assert prob.shape == (2,) and prob[0] > 0.8 and cam.shape == (2, 8, 8)
    assert predictor.spec.synthetic


def test_revision_pins_a_branch(hub, tiny_model_dir) -> None:
    spec = json.loads((tiny_model_dir / "model.json").read_text())
    spec["threshold"] = 0.3
    commit = hub.add_commit(REPO, {"model.json": json.dumps(spec).encode()}, branch="v2")
    folder = download_model(f"hf://{REPO}@v2")
    assert folder.name == commit
    assert json.loads((folder / "model.json").read_text())["threshold"] == 0.3
    assert json.loads((download_model(f"hf://{REPO}") / "model.json").read_text())[
        "threshold"] == 0.45
    assert download_model(f"hf://{REPO}@{commit}") == folder


def test_offline_loads_from_cache(hub, monkeypatch) -> None:
    online = download_model(f"hf://{REPO}")
    n = len(hub.requests)
    set_offline(monkeypatch)
    assert resolve_model(f"hf://{REPO}") == online
    assert len(hub.requests) == n  # nothing was asked of the Hub
    from spinefx.runtime.inference import Predictor

    assert Predictor(f"hf://{REPO}").run(np.zeros((1, 6, 64, 64), np.float32))[0].shape == (1,)


def test_offline_env_read_at_call_time(hub, monkeypatch) -> None:
    """HF_HUB_OFFLINE=1 set after huggingface_hub was imported is honoured too."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the local Hugging Face cache and offline"):
        download_model(f"hf://{REPO}")
    assert hub.requests == []


def test_offline_and_not_cached_is_a_clear_error(hub, monkeypatch) -> None:
    set_offline(monkeypatch)
    with pytest.raises(HubError, match="not in the local Hugging Face cache and offline: run "
                                       "once online or set HF_HUB_OFFLINE=0"):
        resolve_model(f"hf://{REPO}")
    assert hub.requests == []


def test_offline_missing_onnx_in_cache(hub, monkeypatch) -> None:
    folder = download_model(f"hf://{REPO}")
    os.remove(folder / "model.onnx")  # the snapshot link; model.json is still cached
    set_offline(monkeypatch)
    with pytest.raises(HubError, match="model.onnx is not in the local Hugging Face cache"):
        download_model(f"hf://{REPO}")


def test_tampered_cached_file_is_refused(hub, monkeypatch) -> None:
    folder = download_model(f"hf://{REPO}")
    blob = (folder / "model.onnx").resolve()  # the blob behind the snapshot link
    assert "blobs" in blob.parts
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        download_model(f"hf://{REPO}")  # online: the cached copy is still checked
    with pytest.raises(ModelIntegrityError, match=f"hf cache rm model/{REPO}"):
        download_model(f"hf://{REPO}")
    set_offline(monkeypatch)
    with pytest.raises(ModelIntegrityError, match="refusing"):
        from spinefx.runtime.inference import Predictor
        Predictor(f"hf://{REPO}")


def test_tampered_download_is_refused(fake_hub, tiny_model_dir) -> None:
    files = _model_files(tiny_model_dir)
    files["model.onnx"] = files["model.onnx"] + b"\0"  # the Hub serves something else
    fake_hub.add_commit(REPO, files)
    with pytest.raises(ModelIntegrityError, match="does not match model.json"):
        download_model(f"hf://{REPO}")


def test_hub_errors_are_clear(hub) -> None:
    with pytest.raises(HubError, match="no such model repository"):
        download_model("hf://someone/absent")
    with pytest.raises(HubError, match="no revision 'nope'"):
        download_model(f"hf://{REPO}@nope")
    hub.add_commit("someone/not-spinefx", {"config.json": b"{}"})
    with pytest.raises(HubError, match="no model.json: not a spinefx model"):
        download_model("hf://someone/not-spinefx")


def test_unreachable_hub_without_cache(fake_hub, monkeypatch) -> None:
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    # huggingface_hub retries with exponential backoff (~20 s) before giving up; skip the waits
    monkeypatch.setattr(hf_http, "time", type("NoSleep", (), {
        "sleep": staticmethod(lambda s: None), "time": staticmethod(__import__("time").time),
        "monotonic": staticmethod(__import__("time").monotonic)}))
    with pytest.raises(HubError, match="could not reach the Hugging Face Hub"):
        download_model(f"hf://{REPO}")


def test_unsafe_path_in_model_json_is_refused(fake_hub, tiny_model_dir) -> None:
    spec = json.loads((tiny_model_dir / "model.json").read_text())
    spec["files"]["fp32"]["path"] = "../../outside.onnx"
    fake_hub.add_commit(REPO, {"model.json": json.dumps(spec).encode()})
    with pytest.raises(HubError, match="unsafe file path"):
        download_model(f"hf://{REPO}")


def test_published_dry_run_round_trip(fake_hub, tiny_run, tiny_model_dir, tmp_path) -> None:
    """What `spinefx publish --dry-run` writes, served as a repo, loads with both runtimes."""
    from spinefx.cli import main

    out = tmp_path / "repo"
    assert main(["publish", str(tiny_run), str(tiny_model_dir), "--repo", REPO,
                 "--dry-run", str(out)]) == 0
    fake_hub.add_folder(REPO, out)
    from spinefx.runtime.inference import Predictor

    assert Predictor(f"hf://{REPO}").run(np.zeros((1, 6, 64, 64), np.float32))[0].shape == (1,)
    # the PyTorch weights for fine-tuning: config.json + model.safetensors, same commit
    folder = download_files(f"hf://{REPO}", ["config.json", "model.safetensors"])
    assert (folder / "model.safetensors").read_bytes() == \
        (tiny_run / "model.safetensors").read_bytes()
    torch = pytest.importorskip("torch")
    from spinefx.train.model import SpineFxNet, load_pretrained

    model = SpineFxNet(preprocess={"image_size": 64})
    report = load_pretrained(model, folder)
    assert report["kind"] == "spinefx"
    ref = SpineFxNet.from_pretrained(str(tiny_run)).eval()
    x = torch.rand(1, 6, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref(x))


def test_spinefx_predict_with_hf_model(hub, tmp_path, capsys, monkeypatch) -> None:
    """`spinefx predict --model hf://...` (the CLI goes through resolve_model), then offline."""
    import json as _json

    from spinefx.cli import main
    from spinefx.phantom import write_phantom_study

    _, _, case = write_phantom_study(tmp_path / "study", seed=3, label="malignant",
                                     t2_variant="T2", case_id="p3")
    box = ",".join(map(str, case.box))
    for offline in (False, True):
        if offline:
            set_offline(monkeypatch)
        out = tmp_path / f"out-{offline}"
        rc = main(["predict", str(tmp_path / "study"), "--box", box, "--slice", str(case.slice),
                   "--model", f"hf://{REPO}", "--out", str(out), "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        result = _json.loads((out / "result.json").read_text())
        assert 0.0 <= result["probability"] <= 1.0
    # the demo's --model is parsed with type=Path, which turns hf://a/b into hf:/a/b
    assert resolve_model(Path(f"hf://{REPO}")) == download_model(f"hf://{REPO}")


def test_fresh_interpreter_online_then_offline(hub, tmp_path) -> None:
    """As a user runs it: HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE set before Python starts
    (huggingface_hub reads them at import), in a new process that has imported nothing yet."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from spinefx.runtime.inference import Predictor\n"
            "from spinefx.runtime.errors import SpineFXError\n"
            "try:\n"
            "    p = Predictor(sys.argv[1])\n"
            "except SpineFXError as exc:\n"
            "    print('ERROR', exc); sys.exit(3)\n"
            "print('OK', p.model_id, p.path)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "home"),
               HF_HUB_CACHE=str(tmp_path / "fresh-cache"), HF_HUB_DISABLE_TELEMETRY="1")

    def run(uri: str, **extra) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, uri], env={**env, **extra},
                              capture_output=True, text=True, timeout=120)

    offline_first = run(f"hf://{REPO}", HF_HUB_OFFLINE="1")
    assert offline_first.returncode == 3, offline_first.stderr
    assert "not in the local Hugging Face cache and offline" in offline_first.stdout
    online = run(f"hf://{REPO}")
    assert online.returncode == 0, online.stderr
    assert str(tmp_path / "fresh-cache") in online.stdout
    n = len(hub.requests)
    offline = run(f"hf://{REPO}", HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert len(hub.requests) == n  # offline: the fake Hub heard nothing
