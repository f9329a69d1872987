"""The shipped vertebral-body localiser, run torch-free through ``segment_bodies``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

PHANTOM_SEED = 424_242          # not among the training seeds of model.json (see its card)
PHANTOM_DICE_BOUND = 0.85       # measured 0.950 on this phantom with the shipped model
VB3_DICE_BOUND = 0.80           # measured 0.872 on held-out vb3_50 (model.json per_case)


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


@pytest.mark.parametrize("seed", [102, 4])
def test_the_sacrum_output_marks_s1_and_no_lumbar_body(seed):
    from spinefx.phantom import render_case
    from spinefx.runtime.segmentation import segment_spine
    from spinefx.runtime.vertebrae import find_vertebrae

    case = render_case(seed, "benign", t2_variant="T2")   # SYNTHETIC; T12..S3 in view
    spacing = (case.spacing_between_slices, *case.pixel_spacing)
    maps = segment_spine(case.t1, spacing)
    assert maps.sacrum is not None and maps.sacrum.shape == case.t1.shape
    assert np.array_equal(maps.body, segment_bodies(case.t1, spacing))
    bodies = case.masks("t1")["bodies"]
    vl = find_vertebrae(bodies > 0, spacing, sacrum=maps.sacrum)   # true bodies, its sacrum
    read = {}
    for v in vl.vertebrae:
        x, y, k = (int(round(c)) for c in v.centroid)
        read[case.level_names[bodies[k, y, x] - 1]] = v
    assert read["S1"].sacral >= 0.5 and read["S1"].level == "S1"
    assert all(v.sacral < 0.5 for name, v in read.items() if name[0] in "TL")
    assert vl.level_confidence >= 0.8 and "as sacrum" in vl.level_reason


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


def reference_resample_slices(stack, scale, shape):
    """resample_slices as it was before the speed work (four temporaries per axis)."""
    from spinefx.runtime.segmentation import _box_average, _linear_axis

    out = np.asarray(stack, dtype=np.float32)
    factors = (int(scale[0]) if scale[0] >= 1.5 else 1, int(scale[1]) if scale[1] >= 1.5 else 1)
    if factors != (1, 1):
        out = _box_average(out, factors)
        scale = (scale[0] / factors[0], scale[1] / factors[1])
    lo, hi, w = _linear_axis(out.shape[2], shape[1], scale[1])
    out = out[:, :, lo] * (1 - w)[None, None, :] + out[:, :, hi] * w[None, None, :]
    lo, hi, w = _linear_axis(out.shape[1], shape[0], scale[0])
    return out[:, lo, :] * (1 - w)[None, :, None] + out[:, hi, :] * w[None, :, None]


@pytest.mark.parametrize("shape,scale,out", [((3, 50, 70), (0.7, 1.3), (71, 54)),
                                             ((2, 171, 171), (1 / 3, 1 / 3), (512, 512)),
                                             ((2, 512, 300), (3.0, 1.7), (171, 176))])
def test_resampling_same_as_reference(shape, scale, out):
    rng = np.random.default_rng(7)
    stack = rng.normal(100, 30, shape).astype(np.float32)
    before = stack.copy()
    assert np.array_equal(resample_slices(stack, scale, out),
                          reference_resample_slices(stack, scale, out))
    assert np.array_equal(stack, before)                 # the input is never written


def test_segmentation_stages_same_as_the_reference_path(monkeypatch):
    """segment_bodies (in-place resampling, one cached session with spinning off) gives the
    bytes the previous resampling gives, and the same bytes on every call."""
    from spinefx.phantom import render_case
    from spinefx.runtime import segmentation

    case = render_case(PHANTOM_SEED, "benign", n_slices=5)
    spacing = (case.spacing_between_slices, *case.pixel_spacing)
    new = segment_bodies(case.t1, spacing)
    assert np.array_equal(new, segment_bodies(case.t1, spacing))
    monkeypatch.setattr(segmentation, "resample_slices", reference_resample_slices)
    assert np.array_equal(new, segment_bodies(case.t1, spacing))
    assert new.max() > 0.5                                 # it found bodies


def test_one_session_per_model_and_thread_count():
    from spinefx.runtime.segmentation import _session, load_card

    image = np.random.default_rng(1).normal(300, 50, (2, 64, 64)).astype(np.float32)
    segment_bodies(image, (4.0, 1.5, 1.5))
    before = _session.cache_info()
    segment_bodies(image, (4.0, 1.5, 1.5))
    after = _session.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    path = load_card()["_model_path"]
    options = _session(path, Path(path).stat().st_mtime_ns, 2).get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
