"""``folds=1``: no cross-validation, one model on a patient-grouped training/validation split
(pre-training); another run starts from it with ``pretrained=RUN`` (SYNTHETIC phantoms)."""
from __future__ import annotations

import json

import pytest
from safetensors.numpy import load_file

from spinefx.cli import main
from spinefx.train.cv import train_cv

SETTINGS = dict(epochs=1, batch_size=4, image_size=32, seed=5, progress=False)


@pytest.fixture(scope="module")
def single_run(tiny_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    return out, train_cv(tiny_cohort, out, folds=1, **SETTINGS)


def test_one_split_trains_one_model_and_records_its_validation(single_run) -> None:
    out, metrics = single_run
    assert metrics["n_train"] + metrics["n_val"] == metrics["n_cases"] == 16
    assert metrics["n_malignant"] == 6 and metrics["synthetic"] is True
    assert metrics["n_val"] >= 2 and "not a test result" in metrics["note"]
    assert json.loads((out / "metrics.json").read_text())["threshold"] == metrics["threshold"]
    assert not (out / "folds").exists() and not (out / "oof_predictions.csv").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["folds"] == 1
    assert len(load_file(str(out / "model.safetensors"))) > 100


def test_a_cross_validation_starts_from_the_single_split_model(single_run, tiny_cohort,
                                                                tmp_path) -> None:
    out, _ = single_run
    metrics = train_cv(tiny_cohort, tmp_path / "cv", folds=2, final=False,
                       pretrained=str(out), **SETTINGS)
    report = json.loads((tmp_path / "cv" / "folds" / "1" / "metrics.json").read_text())
    assert report["pretrained"]["kind"] == "spinefx" and report["pretrained"]["loaded"] > 100
    assert metrics["n_cases"] == 16


def test_the_cli_refuses_zero_folds_and_explains_one(tiny_cohort, tmp_path, capsys) -> None:
    assert main(["train", "--manifest", str(tiny_cohort), "--out", str(tmp_path / "r"),
                 "--folds", "0"]) != 0
    assert "1 = no cross-validation" in capsys.readouterr().err
