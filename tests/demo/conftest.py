"""Fixtures for the demo tests: a tiny ONNX model (same contract as the real one), phantom
studies written as DICOM, and one demo server on 127.0.0.1 shared by the session.

The server writes only under the session's temporary folders: GRADIO_TEMP_DIR (gradio's
upload/output cache), the demo's work folder and its example/teaching cache, so the PHI test
can search every file the app left behind.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio",
                    reason="the demo tests need the demo extra (pip install -e '.[demo]')")
pytest.importorskip("gradio_client", reason="the demo tests need gradio_client")
pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")

from tests.helpers.onnx_model import write_tiny_model  # noqa: E402  (after the skips)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def demo_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("demo")
    roots = {"gradio": base / "gradio-cache", "work": base / "work", "cache": base / "cache"}
    for p in roots.values():
        p.mkdir()
    return roots


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model"), image_size=64)


@pytest.fixture(scope="session")
def demo_server(demo_roots, tiny_model):
    """(app, url): the demo with the tiny model, served on a free port for the whole session."""
    old = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED",
                                          "SPINEFX_TEACHING_DATA")}
    os.environ["GRADIO_TEMP_DIR"] = str(demo_roots["gradio"])
    # teaching sessions of the shared server stay in the session's folder, never in ~/.local
    os.environ["SPINEFX_TEACHING_DATA"] = str(demo_roots["work"].parent / "teaching")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from spinefx.demo.app import build_app, launch

    # SPINEFX_SCREENSHOT_MODEL: serve another model folder (e.g. weights/) when refreshing
    # docs/demo_screenshot.png; run only test_demo_browser.py then (other tests expect tiny).
    model = os.environ.get("SPINEFX_SCREENSHOT_MODEL") or tiny_model
    app = build_app(model=model, cache_dir=demo_roots["cache"], temp_dir=demo_roots["work"],
                    upload_grace_s=0)
    port = free_port()
    launch(app, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield app, f"http://127.0.0.1:{port}/"
    finally:
        app.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def client(demo_server):
    from gradio_client import Client

    return Client(demo_server[1], verbose=False)


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory):
    """(t1_dir, t2_dir, case): one malignant phantom written as two DICOM series."""
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("phantom")
    return write_phantom_study(root / "study", seed=5, label="malignant", case_id="demo5")


@pytest.fixture(scope="session")
def dicom_files():
    """All .dcm files under some folders, as a list of str (what gradio_client uploads)."""
    def collect(*folders: Path) -> list[str]:
        return sorted(str(p) for f in folders for p in Path(f).rglob("*.dcm"))
    return collect


@pytest.fixture(scope="session")
def png_pair(tmp_path_factory, phantom_study):
    """T1 and T2 PNG slices exported from the phantom (16-bit grey, one file per slice)."""
    import numpy as np
    from PIL import Image

    from spinefx.runtime import load_series
    from spinefx.runtime.matching import on_t1_grid

    t1_dir, t2_dir, case = phantom_study
    t1 = load_series(t1_dir, weighting="T1")
    t2 = on_t1_grid(t1, load_series(t2_dir, weighting="T2"))
    out = tmp_path_factory.mktemp("png")
    files = {}
    for name, vol in (("t1", t1), ("t2", t2)):
        files[name] = []
        for i, plane in enumerate(vol.data):
            path = out / f"{name}_slice_{i}.png"
            Image.fromarray(np.nan_to_num(plane).astype(np.uint16)).save(path)
            files[name].append(str(path))
    return files["t1"], files["t2"], case, t1.pixel_spacing[0]
