"""The shipped vertebral-body localiser, run torch-free through ``segment_bodies``."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from spinefx.runtime.segmentation import (
    LOCALISER_DIR,
    LocaliserModelError,
    file_sha256,
    resample_slices,
    segment_bodies,
)
from spinefx.train.seg_data import dice, labelled_band, load_real

PHANTOM_SEED = 424_242          # not among the training seeds (0..31) of model.json
PHANTOM_DICE_BOUND = 0.85       # measured 0.944 on this phantom with the shipped model
VB3_DICE_BOUND = 0.80           # measured 0.849 on held-out vb3_50 (model.json per_case)


def _card() -> dict:
    return json.loads((LOCALISER_DIR / "model.json").read_text())


def test_shipped_model_matches_its_card():
    card = _card()
    model = LOCALISER_DIR / card["file"]
    assert model.stat().st_size <= 20 * 1024 * 1024
    assert file_sha256(model) == card["sha256"]
    assert card["input"]["pixel_mm"] > 0 and len(card["input"]["normalisation"]["percentiles"]) == 2
    assert "vb3 subjects 01-44" in card["training"]["data"]
    assert "synthetic phantoms" in card["training"]["data"]


def test_segments_a_phantom_it_never_saw():
    from spinefx.phantom import render_case

    case = render_case(PHANTOM_SEED, "malignant", variation=1.0, n_slices=9)
    truth = case.masks("t1")["bodies"] > 0
    prob = segment_bodies(case.t1, (case.spacing_between_slices, *case.pixel_spacing))
    assert prob.shape == case.t1.shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert dice(prob, truth) >= PHANTOM_DICE_BOUND


def test_segments_a_held_out_real_subject(real_spine):
    image, mask = load_real(real_spine / "vb3" / "vb3_50.npz")   # validation subject
    prob = segment_bodies(image, (1.0, 1.0, 1.0))
    assert dice(prob, mask, labelled_band(mask)) >= VB3_DICE_BOUND


def test_probability_comes_back_on_the_input_grid():
    rng = np.random.default_rng(0)
    image = rng.normal(300, 50, (2, 70, 45)).astype(np.float32)
    prob = segment_bodies(image, (4.0, 0.6, 0.9))
    assert prob.shape == (2, 70, 45) and np.isfinite(prob).all()


def test_runs_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"     # any torch import now fails
            "import numpy as np\n"
            "from spinefx.runtime.segmentation import segment_bodies\n"
            "img = np.random.default_rng(0).random((3, 64, 80)).astype('float32') * 900\n"
            "p = segment_bodies(img, (3.0, 1.0, 1.0))\n"
            "assert p.shape == (3, 64, 80)\n"
            "print('torch-free ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch-free ok" in done.stdout


def test_missing_model_folder_is_a_clear_error(tmp_path):
    image = np.zeros((2, 32, 32), np.float32)
    with pytest.raises(LocaliserModelError, match="model.onnx"):
        segment_bodies(image, (3.0, 1.0, 1.0), model_dir=tmp_path / "absent")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(LocaliserModelError, match="model.json"):
        segment_bodies(image, (3.0, 1.0, 1.0), model_dir=tmp_path)


@pytest.mark.parametrize("image, spacing", [
    (np.zeros((32, 32)), (1.0, 1.0, 1.0)),          # one 2-D slice, no slice axis
    (np.zeros((2, 32, 32)), (1.0, 0.0, 1.0)),       # zero pixel spacing
])
def test_bad_inputs_are_refused(image, spacing):
    with pytest.raises(ValueError):
        segment_bodies(image, spacing)


def test_resampling_keeps_a_linear_ramp():
    ramp = np.tile(np.arange(40, dtype=np.float32), (1, 30, 1))    # 30 rows, 40 cols
    same = resample_slices(ramp, (1.0, 1.0), (30, 40))
    assert np.array_equal(same, ramp)
    half = resample_slices(ramp, (1.0, 0.5), (30, 80))     # twice as many columns
    # output centre j sits at source (j + 0.5) / 2 - 0.5; the ramp is its own coordinate
    expected = np.clip((np.arange(80) + 0.5) / 2 - 0.5, 0, 39)
    assert np.allclose(half[0, 0], expected, atol=1e-5)
