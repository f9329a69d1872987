"""The node's resources: the model loads when a study arrives (a C-ECHO right after
"listening" is answered promptly), the memory of a job goes back after it (the localiser's
session dropped, the classifier's arena released, predictions unchanged)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from spinefx.runtime import segmentation
from spinefx.runtime.inference import Predictor
from spinefx.runtime.node import worker as worker_mod
from spinefx.runtime.node.store import JobStore
from spinefx.runtime.node.worker import Worker
from tests.runtime.node.test_node_scp import MODEL, free_port, make_config
from tests.runtime.node.test_node_store import encode, instance


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_model_loads_when_a_study_arrives_not_right_after_listening(tmp_path):
    """Loading holds the interpreter: not in the moments after "listening" (a C-ECHO must be
    answered), but as soon as a study starts arriving, or after preload_after_seconds."""
    loads: list[float] = []
    config = make_config(tmp_path, free_port(), idle_seconds=60)
    store = JobStore(config.data)
    worker = Worker(store, config, load_predictor=lambda: loads.append(time.monotonic()) or MODEL)
    worker.preload_after_seconds = 60
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        assert loads == []  # no study yet, not long enough since the start
        ds = instance(generate_uid(), "MR")
        store.store_instance(encode(ds), ds.StudyInstanceUID, ds.SOPInstanceUID)
        assert _wait_for(lambda: len(loads) == 1, 5), "a receiving study did not load the model"
        time.sleep(0.3)
        assert len(loads) == 1  # once
    finally:
        stop.set()
        thread.join(timeout=10)
    idle = Worker(JobStore(tmp_path / "other"), config, load_predictor=lambda: MODEL)
    idle.preload_after_seconds = 0.2
    assert not idle.preload_due(started=time.time())
    assert idle.preload_due(started=time.time() - 0.3)
    idle.predictor()
    assert not idle.preload_due(started=time.time() - 10)  # loaded: nothing more to do


def test_release_memory_drops_the_localiser_session_and_predictions_stay_equal():
    """After a job the localiser's session (its CPU arena) is dropped; the classifier that
    hands its arena back after each run, its threads not spinning (the node's), predicts
    exactly what the default one does."""
    model_path = Path(segmentation.__file__).resolve().parents[1] / "weights" / "localiser" / \
        "model.onnx"
    segmentation._session(str(model_path), model_path.stat().st_mtime_ns, 1)  # the bundled one
    assert segmentation._session.cache_info().currsize >= 1
    worker_mod.release_memory()
    assert segmentation._session.cache_info().currsize == 0
    plain, releasing = Predictor(variant="int8"), Predictor(variant="int8", release_memory=True,
                                                     spinning=False)
    assert plain.run_options is None and releasing.run_options is not None
    cfg = plain.config
    rng = np.random.default_rng(7)
    for n in (3, 1, 5):  # batch sizes vary as the number of vertebrae does
        batch = rng.standard_normal((n, cfg.n_channels, cfg.image_size, cfg.image_size))
        for a, b in zip(plain.run(batch), releasing.run(batch)):
            np.testing.assert_array_equal(a, b)
