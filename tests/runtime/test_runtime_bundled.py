"""The bundled demonstration model (weights/): integrity, provider fallback, where its
class-activation map points on phantoms, and the real DzZ pair end to end."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from spinefx.cli import main
from spinefx.phantom import write_phantom_study
from spinefx.runtime import load_series
from spinefx.runtime.inference import Predictor
from spinefx.runtime.model_files import BUNDLED_DIR, read_model_spec
from tests.helpers.phantoms import phantom_volumes


@pytest.fixture(scope="module")
def bundled() -> Predictor:
    return Predictor()


def test_bundled_model_is_verified_labelled_synthetic_and_lean(bundled) -> None:
    spec = read_model_spec(BUNDLED_DIR)
    assert bundled.path.parent == BUNDLED_DIR and bundled.variant == spec.raw["default"]
    assert spec.synthetic and "synthetic" in spec.raw["training_data"]["description"]
    assert sum(p.stat().st_size for p in BUNDLED_DIR.glob("*.onnx")) <= 50 * 2**20
    assert "not a medical device" in (BUNDLED_DIR / "README.md").read_text().lower()


def test_bundled_body_fraction_threshold_was_fitted_with_the_shipped_localiser() -> None:
    """A new localiser moves every body fraction (one moved the threshold from 0.066 to 0.39):
    whoever ships a localiser must refit the bundled model's OOD block with it."""
    from spinefx.runtime.segmentation import load_card

    definition = read_model_spec(BUNDLED_DIR).raw["ood"]["body_fraction_definition"]
    assert definition["localiser_sha256"] == load_card()["sha256"]


def test_cuda_asked_but_absent_runs_on_cpu() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert predictor.provider == "CPUExecutionProvider"


def test_in_memory_phantom_is_what_its_dicom_series_load_as(tmp_path) -> None:
    """The pointing game below renders in memory; this keeps that equal to the DICOM route
    (T2 on its own grid, so the resampling onto T1 sees the same geometry too)."""
    t1, t2, case = phantom_volumes(seed=2001, label="malignant", t2_scale=0.9)
    t1_dir, t2_dir, _ = write_phantom_study(tmp_path / "s", seed=2001, label="malignant",
                                            t2_scale=0.9)
    for memory, disk in ((t1, load_series(t1_dir)), (t2, load_series(t2_dir))):
        assert np.array_equal(memory.data, disk.data)
        assert np.array_equal(memory.positions, disk.positions)
        assert memory.pixel_spacing == disk.pixel_spacing
        assert np.array_equal(memory.row_direction, disk.row_direction)
        assert np.array_equal(memory.column_direction, disk.column_direction)
        assert memory.weighting == disk.weighting
    assert t2.data.shape[1:] != t1.data.shape[1:]


def test_cam_is_registered_on_the_roi_of_malignant_phantoms(bundled) -> None:
    """The map the overlay shows is the model's map, placed on its ROI: zero outside the ROI,
    its peak at the ROI map's peak, and not empty on malignant phantoms.

    Where the map points is a quality measure, not a correctness one: it lives in
    ``benchmarks/cam_pointing.py`` (the model card has its numbers; the shipped model's peak
    rarely falls inside the fractured body). Not a DICOM test: the phantoms are rendered in
    memory (case_volumes gives the very volumes load_series reads back from the case's DICOM
    files) and predict_volumes aligns T2 and builds the six-channel input with the runtime's
    build_six_channel, as for a loaded study."""
    nonempty = 0
    for seed in range(2000, 2012):
        t1, t2, case = phantom_volumes(seed=seed, label="malignant", variation=0.0)
        p = bundled.predict_volumes(t1, t2, case.slice, box=case.box)
        x0, y0, x1, y1 = p.roi
        inside = np.zeros(p.cam_slice.shape, dtype=bool)
        inside[max(y0, 0):y1, max(x0, 0):x1] = True
        assert not p.cam_slice[~inside].any()
        assert p.cam_roi.shape == (x1 - x0, y1 - y0)
        if p.cam_roi.max() <= 0:
            continue
        nonempty += 1
        r, c = np.unravel_index(np.argmax(p.cam_roi), p.cam_roi.shape)
        if 0 <= y0 + r < p.cam_slice.shape[0] and 0 <= x0 + c < p.cam_slice.shape[1]:
            assert p.cam_slice[y0 + r, x0 + c] == pytest.approx(p.cam_slice.max(), abs=0.02)
    assert nonempty >= 9


def test_real_dzz_pair_end_to_end_with_the_bundled_model(real_spine, tmp_path, capsys) -> None:
    out = tmp_path / "dzz"
    rc = main(["predict", "--t1", str(real_spine / "dzz_t1.npz"),
               "--t2", str(real_spine / "dzz_t2.npz"), "--slice", "22",
               "--box", "150,230,189,267", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["probability"] <= 1.0 and result["synthetic_model"] is True
    assert result["slices"] == [21, 22, 23]
    assert str(real_spine) not in (out / "result.json").read_text()  # no paths leak
    assert (out / "overlay.png").stat().st_size > 10_000


def test_a_box_and_a_click_on_one_real_vertebra_give_one_answer(real_spine, tmp_path,
                                                                capsys) -> None:
    """Real DzZ pair: the CLI fits the box and the click to the body under them (result.json
    says so and keeps the given box); --keep-box gives the model the box as given."""
    args = ["predict", "--t1", str(real_spine / "dzz_t1.npz"), "--t2",
            str(real_spine / "dzz_t2.npz"), "--slice", "22", "--no-progress"]
    runs = {"box": ["--box", "150,230,189,267"], "click": ["--center", "170,248"],
            "kept": ["--box", "150,230,189,267", "--keep-box"]}
    results = {}
    printed = {}
    for name, roi in runs.items():
        assert main([*args, *roi, "--out", str(tmp_path / name)]) == 0
        results[name] = json.loads((tmp_path / name / "result.json").read_text())
        printed[name] = capsys.readouterr().out
    box, click, kept = results["box"], results["click"], results["kept"]
    assert box["roi_snap"]["snapped"] and box["roi_snap"]["box_given"] == [150, 230, 189, 267]
    assert click["roi_snap"]["box"] == box["roi_snap"]["box"]
    assert click["probability"] == pytest.approx(box["probability"], abs=1e-6)
    assert "roi_snap" not in kept and kept["roi"] != box["roi"]
    fitted = ",".join(f"{v:g}" for v in box["roi_snap"]["box"])
    assert f"box: 150,230,189,267 fitted to the vertebral body under its centre: {fitted}" \
        in printed["box"]
    assert "box:" not in printed["kept"]
