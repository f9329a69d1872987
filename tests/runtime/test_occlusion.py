"""Occlusion sensitivity (spinefx.runtime.occlusion): the map finds the region a score depends
on; the Predictor and `spinefx predict --map occlusion` return the model's own occlusion map."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spinefx.cli import main
from spinefx.runtime import align_pair, load_series
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.inference import Predictor, normalise_cam
from spinefx.runtime.occlusion import occlusion_map, positions
from spinefx.runtime.preprocess import resize
from tests.helpers.onnx_model import expected_probability

pytest.importorskip("onnx", reason="the dev extra installs onnx to build the test graph")

REGION = (slice(40, 60), slice(70, 90))   # rows, cols the score below depends on


def region_score(batch: np.ndarray) -> np.ndarray:
    """A 'model' that looks only at channel 1 inside REGION."""
    return 1 / (1 + np.exp(-8 * (batch[:, 1, REGION[0], REGION[1]].mean(axis=(1, 2)) - 0.5)))


def test_positions_cover_every_pixel() -> None:
    assert positions(128, 32, 16) == [0, 16, 32, 48, 64, 80, 96]
    assert positions(10, 4, 4) == [0, 4, 6]   # the last square flush with the edge
    with pytest.raises(ValueError, match="patch"):
        positions(16, 32, 16)


def test_the_map_peaks_where_the_score_looks_and_is_zero_where_it_cannot() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.3, (6, 128, 128)).astype(np.float32)
    x[:, REGION[0], REGION[1]] = 0.9          # bright evidence inside the region
    m = occlusion_map(region_score, x)
    assert m.shape == (128, 128) and m.min() >= 0
    # the map resolves to the stride: its peak lies within 16 px of the region, its centre of
    # mass inside it
    r, c = np.unravel_index(np.argmax(m), m.shape)
    assert REGION[0].start - 16 <= r < REGION[0].stop + 16
    assert REGION[1].start - 16 <= c < REGION[1].stop + 16
    rows, cols = np.indices(m.shape)
    assert REGION[0].start <= (rows * m).sum() / m.sum() < REGION[0].stop
    assert REGION[1].start <= (cols * m).sum() / m.sum() < REGION[1].stop
    # no 32 px square that covers these pixels touches the region: hiding them changes nothing
    assert m[:8, :8].max() == 0 and m[120:, :].max() == 0
    assert m[r, c] > 0.1


def test_hiding_that_raises_the_score_is_not_evidence() -> None:
    x = np.full((6, 128, 128), 0.9, np.float32)
    x[:, REGION[0], REGION[1]] = 0.1          # the region is dark: hiding it raises the score
    assert occlusion_map(region_score, x).max() == 0


def test_a_batch_is_refused_with_its_shape() -> None:
    with pytest.raises(ValueError, match=r"\(1, 6, 128, 128\)"):
        occlusion_map(region_score, np.zeros((1, 6, 128, 128), np.float32))


def test_the_predictor_returns_the_models_own_occlusion_map(tiny_model, malignant_study) -> None:
    _, t1_dir, t2_dir, case = malignant_study
    pair = align_pair(load_series(t1_dir), load_series(t2_dir))
    cam = Predictor(tiny_model, snap_roi=False).predict_pair(pair, case.slice, box=case.box)
    occ = Predictor(tiny_model, snap_roi=False, map_method="occlusion").predict_pair(
        pair, case.slice, box=case.box)
    assert occ.probability == pytest.approx(cam.probability)   # the map changes, not P
    assert cam.summary()["map_method"] == "cam" and occ.summary()["map_method"] == "occlusion"
    side = occ.roi[2] - occ.roi[0]
    expected = resize(normalise_cam(occlusion_map(expected_probability,
                                                  occ.model_input.array)), side)
    assert occ.cam_roi.shape == (side, side)
    np.testing.assert_allclose(occ.cam_roi, expected, atol=2e-3)
    assert not np.allclose(occ.cam_roi, cam.cam_roi, atol=0.05)


def test_an_unknown_map_method_is_refused_by_name(tiny_model) -> None:
    with pytest.raises(SpineFXError, match="'gradcam\\+\\+'.*cam, occlusion"):
        Predictor(tiny_model, map_method="gradcam++")


def test_cli_predict_map_occlusion_says_so_in_result_json(tiny_model, malignant_study, tmp_path,
                                                           capsys) -> None:
    folder, _, _, case = malignant_study
    out = tmp_path / "out"
    rc = main(["predict", str(folder), "--box", ",".join(map(str, case.box)), "--slice",
               str(case.slice), "--model", str(tiny_model), "--map", "occlusion", "--out",
               str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "result.json").read_text())["map_method"] == "occlusion"
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(folder), "--map", "lime", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "'cam', 'occlusion'" in capsys.readouterr().err
