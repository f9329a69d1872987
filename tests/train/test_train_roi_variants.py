"""ROI variants (``roi_variants`` K > 1): K inputs per case, built by the runtime, the way
users give the ROI — the manifest box, shifted/scaled boxes and centre clicks with the default
box size (SYNTHETIC phantoms, 32 px, no training)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from spinefx.runtime import PreprocessConfig, load_volume, prepare_case, read_manifest
from spinefx.runtime.service import resolve_roi
from spinefx.train.data import (
    Augment,
    CaseDataset,
    RoiJitter,
    cache_key,
    click_at_box_centre,
    draw_roi_variant,
    preprocess_cases,
    sample_generator,
)
from spinefx.train.errors import TrainingError

CONFIG = PreprocessConfig(image_size=32)
K = 6


@pytest.fixture(scope="module")
def cohort(phantom_cohorts):
    manifest = phantom_cohorts.manifest(4, 2, seed=3)
    return manifest, read_manifest(manifest)


@pytest.fixture(scope="module")
def stack(cohort, tmp_path_factory) -> np.ndarray:
    return preprocess_cases(cohort[1], CONFIG, tmp_path_factory.mktemp("cache"),
                            progress=False, roi_variants=K)


def test_variant_zero_is_the_default_input_and_the_others_differ(cohort, stack) -> None:
    cases = cohort[1]
    single = preprocess_cases(cases, CONFIG, progress=False)
    assert stack.shape == (len(cases), K, 6, 32, 32) and stack.dtype == np.float32
    assert stack[:, 0].tobytes() == single.tobytes()
    for i in range(len(cases)):
        for v in range(1, K):
            assert not np.array_equal(stack[i, v], stack[i, 0]), (i, v)


def test_the_draw_is_seeded_per_case_and_variant_and_keys_the_cache(cohort) -> None:
    cases = cohort[1]
    box = cases[0].box
    assert box is not None
    draws = [draw_roi_variant(cases[0].case_id, v, box) for v in range(1, 40)]
    assert draws == [draw_roi_variant(cases[0].case_id, v, box) for v in range(1, 40)]
    assert draws != [draw_roi_variant(cases[1].case_id, v, box) for v in range(1, 40)]
    clicks = sum(kind == "click" for kind, _ in draws)
    assert 6 <= clicks <= 20  # about a third of 39
    side = max(box[2] - box[0], box[3] - box[1])
    reach = max(3.0, 0.05 * side)
    for kind, b in draws:
        if kind == "box":
            assert abs((b[0] + b[2]) / 2 - (box[0] + box[2]) / 2) <= reach + 1e-9
            assert 0.8 - 1e-9 <= (b[2] - b[0]) / (box[2] - box[0]) <= 1.2 + 1e-9
    keys = {cache_key(cases, CONFIG), cache_key(cases, CONFIG, K),
            cache_key(cases, CONFIG, K + 1), cache_key(cases, CONFIG, K, RoiJitter(seed=1))}
    assert len(keys) == 4


def test_a_click_variant_is_what_the_runtime_builds_for_a_click(cohort, stack) -> None:
    cases = cohort[1]
    found = 0
    for i, case in enumerate(cases):
        assert case.box is not None
        for v in range(1, K):
            kind, where = draw_roi_variant(case.case_id, v, case.box)
            if kind != "click":
                continue
            cx, cy = (case.box[0] + case.box[2]) / 2, (case.box[1] + case.box[3]) / 2
            assert where == click_at_box_centre(case.box) == (np.floor(cx), np.floor(cy))
            # the runtime's click: resolve_roi with a centre and no size (the default size)
            roi = resolve_roi(load_volume(case.t1, "T1"), CONFIG, case.slice,
                              center=(where[0], where[1]))
            assert roi.size_mm == CONFIG.default_size_mm
            expected = prepare_case(replace(case, box=roi.box), CONFIG).array
            assert stack[i, v].tobytes() == expected.tobytes()
            found += 1
    assert found >= 1


def test_dataset_choice_is_deterministic_and_covers_the_variants(stack) -> None:
    arrays = torch.from_numpy(stack)
    ds = CaseDataset(arrays, [0, 1, 0, 1], [0, 1, 2, 3], None, seed=3, stream=1)
    twin = CaseDataset(arrays, [0, 1, 0, 1], [0, 1, 2, 3], None, seed=3, stream=1)
    other = CaseDataset(arrays, [0, 1, 0, 1], [0, 1, 2, 3], None, seed=3, stream=2)
    seen, choices, others = set(), [], []
    for epoch in range(24):
        for d in (ds, twin, other):
            d.set_epoch(epoch)
        for i in range(4):
            v = ds.variant_of(i)
            assert v == twin.variant_of(i) and 0 <= v < K
            x, _, idx = ds[i]
            assert idx == i and torch.equal(x, arrays[i, v])
            seen.add(v)
            choices.append(v)
            others.append(other.variant_of(i))
    assert len(seen) >= K - 1 and choices != others
    # with augmentation: the chosen variant, then the augmentation draws of a K = 1 run
    aug = CaseDataset(arrays, [0, 1, 0, 1], [0, 1, 2, 3], Augment(), seed=3, stream=1)
    aug.set_epoch(5)
    x, _, _ = aug[2]
    expected = Augment()(arrays[2, aug.variant_of(2)], sample_generator(3, 1, 5, 2))
    assert torch.equal(x, expected) and torch.equal(aug[2][0], x)


def _run_record(out, manifest, **settings) -> None:
    from spinefx.train.fitting import TrainSettings

    out.mkdir()
    record = {"settings": TrainSettings(**settings).to_dict(), "manifest": str(manifest)}
    (out / "run.json").write_text(json.dumps(record))


def test_resume_with_another_k_is_refused(cohort, tmp_path) -> None:
    from spinefx.train.cv import train_cv
    from spinefx.train.fitting import TrainSettings
    from spinefx.train.run_folder import check_run_folder

    manifest = cohort[0].resolve()
    assert "roi_variants" not in TrainSettings().to_dict()  # K = 1 records what it always did
    assert TrainSettings(roi_variants=3).to_dict()["roi_variants"] == 3
    for saved_k, asked_k in ((1, 3), (3, 1), (3, 4)):
        out = tmp_path / f"run-{saved_k}-{asked_k}"
        _run_record(out, manifest, roi_variants=saved_k)
        with pytest.raises(TrainingError, match=r"other settings \(roi_variants\)"):
            train_cv(manifest, out, resume=True, progress=False, roi_variants=asked_k,
                     **_defaults())
    # a run recorded before the setting existed resumes with K = 1, and with nothing else
    out = tmp_path / "older"
    _run_record(out, manifest)
    check_run_folder(out, TrainSettings().to_dict(), manifest, resume=True)
    with pytest.raises(TrainingError, match="roi_variants"):
        check_run_folder(out, TrainSettings(roi_variants=2).to_dict(), manifest, resume=True)
    with pytest.raises(TrainingError, match="roi_variants"):
        train_cv(manifest, tmp_path / "bad", roi_variants=0, progress=False)


def _defaults() -> dict:
    from spinefx.train.fitting import TrainSettings

    s = TrainSettings()
    return dict(folds=s.folds, epochs=s.epochs, batch_size=s.batch_size,
                image_size=s.image_size, lr=s.lr, seed=s.seed)


@pytest.mark.parametrize("k", ["0", "17", "-1"])
def test_cli_refuses_k_outside_1_to_16(k, tmp_path, capsys) -> None:
    from spinefx.cli import train as train_command

    assert train_command.main(["--manifest", "m.csv", "--out", str(tmp_path / "r"),
                               "--roi-variants", k]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--roi-variants" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_tiny_run_trains_on_variants_and_predicts_the_manifest_roi(phantom_cohorts, tmp_path,
                                                                      monkeypatch) -> None:
    from spinefx.train import fitting
    from spinefx.train.cv import train_cv

    manifest = phantom_cohorts.manifest(8, 4, seed=3)
    seen: dict[str, tuple] = {}
    original = fitting.TrainingRun.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen["train"], seen["eval"] = tuple(self.train_arrays.shape), tuple(self.arrays.shape)
        seen["same"] = torch.equal(self.arrays, self.train_arrays[:, 0])

    monkeypatch.setattr(fitting.TrainingRun, "__init__", spy)
    metrics = train_cv(manifest, tmp_path / "run", folds=2, epochs=1, batch_size=4,
                       image_size=32, seed=1, final=False, progress=False, roi_variants=3,
                       device="cpu")
    assert seen == {"train": (8, 3, 6, 32, 32), "eval": (8, 6, 32, 32), "same": True}
    assert metrics["n_cases"] == 8 and metrics["settings"]["roi_variants"] == 3
    record = json.loads((tmp_path / "run/run.json").read_text())
    assert record["settings"]["roi_variants"] == 3
