"""Tiny end-to-end cross-validation on SYNTHETIC phantoms: outputs, patient grouping, resume,
DDP with two CPU processes, and the CLI hook. (64 px, 16 cases, 2 folds, 1-2 epochs.)"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from spinefx.runtime import read_manifest

TINY_CASES = 16  # tests/train/conftest.py: tiny_cohort


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _oof(run: Path) -> dict[str, tuple[int, float]]:
    return {r["case_id"]: (int(r["fold"]), float(r["probability"]))
            for r in _rows(run / "oof_predictions.csv")}


# ---------------------------------------------------------------------------------------------
def test_make_folds_never_splits_a_patient() -> None:
    from spinefx.train.cv import inner_split, make_folds

    rng = np.random.default_rng(0)
    groups = np.array([f"p{i}" for i in rng.integers(0, 60, size=190)])  # 1-8 cases each
    y = (rng.random(190) < 0.27).astype(int)
    for folds in (2, 5, 10):
        fold_of = make_folds(y, groups, folds, seed=1)
        assert set(fold_of.tolist()) == set(range(1, folds + 1))
        for g in set(groups.tolist()):
            assert len(set(fold_of[groups == g].tolist())) == 1, g
        # stratified: every fold holds malignant cases
        assert all(y[fold_of == k].sum() > 0 for k in range(1, folds + 1))
        rest = np.flatnonzero(fold_of != 1)
        train, val = inner_split(rest, y, groups, 0.15, seed=3)
        assert set(groups[train].tolist()).isdisjoint(groups[val].tolist())
        assert sorted(np.concatenate([train, val]).tolist()) == rest.tolist()


def test_tiny_cross_validation_writes_every_output(tiny_cohort, tiny_run) -> None:
    run, metrics = tiny_run
    expected = ["config.json", "model.safetensors", "oof_predictions.csv", "metrics.json",
                "training_log.csv", "report.md", "splits.json", "run.json",
                "figures/roc.png", "figures/calibration.png", "figures/confusion.png",
                "figures/training_curves.png"]
    for k in (1, 2):
        expected += [f"folds/{k}/{name}" for name in ("checkpoint.safetensors", "state.json",
                                                       "best.safetensors", "metrics.json",
                                                       "predictions.csv")]
    missing = [name for name in expected if not (run / name).is_file()]
    assert not missing, missing
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.pkl"))
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pth"))

    # out-of-fold predictions: every case exactly once, sane values, labels from the manifest
    cases = {c.case_id: c for c in read_manifest(tiny_cohort)}
    rows = _rows(run / "oof_predictions.csv")
    assert list(rows[0])[:4] == ["case_id", "fold", "label", "probability"]
    assert sorted(r["case_id"] for r in rows) == sorted(cases) and len(rows) == TINY_CASES
    for r in rows:
        assert 0.0 <= float(r["probability"]) <= 1.0
        assert r["fold"] in ("1", "2")
        assert r["label"] == cases[r["case_id"]].label

    # no patient in two folds; within a fold, train / validation / test are patient-disjoint
    folds_of_patient = defaultdict(set)
    for r in rows:
        folds_of_patient[cases[r["case_id"]].patient_id].add(r["fold"])
    assert any(sum(c.patient_id == p for c in cases.values()) == 2 for p in folds_of_patient)
    assert all(len(f) == 1 for f in folds_of_patient.values()), folds_of_patient
    for k in (1, 2):
        fm = json.loads((run / f"folds/{k}/metrics.json").read_text())
        test = {r["case_id"] for r in rows if r["fold"] == str(k)}
        parts = [set(fm["train_cases"]), set(fm["val_cases"]), test]
        patients = [{cases[c].patient_id for c in part} for part in parts]
        assert all(patients[i].isdisjoint(patients[j]) for i in range(3) for j in range(i))
        assert set().union(*parts) == set(cases)
        assert 0.0 < fm["threshold"] < 1.0

    # metrics.json: pooled metrics with CIs, per-fold summary, the chosen threshold
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["synthetic"] is True and saved["n_cases"] == TINY_CASES
    assert 0.0 < saved["threshold"] < 1.0 and len(saved["fold_thresholds"]) == 2
    auc = saved["pooled"]["auc"]
    assert 0.0 <= auc["value"] <= 1.0 and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        assert {"value", "ci_low", "ci_high"} <= set(saved["pooled"][key])
    assert [f["fold"] for f in saved["per_fold"]] == [1, 2]
    assert "mean" in saved["per_fold_summary"]["auc"]

    # the per-epoch log: one row per fold and epoch, then the final model's epochs
    log = _rows(run / "training_log.csv")
    assert {"fold", "epoch", "train_loss", "val_loss", "val_auc", "lr", "time_s"} <= set(log[0])
    assert [(r["fold"], r["epoch"]) for r in log if r["fold"] != "final"] == \
        [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert all(np.isfinite(float(r["train_loss"])) for r in log)

    report = (run / "report.md").read_text()
    assert "SYNTHETIC phantom cohort" in report
    for png in ("roc", "calibration", "confusion", "training_curves"):
        assert f"figures/{png}.png" in report
        assert (run / "figures" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_final_model_loads_and_predicts(tiny_run) -> None:
    import torch

    from spinefx.train.model import load_model

    run, metrics = tiny_run
    model = load_model(run)
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess"]["image_size"] == 64
    assert config["training"]["threshold"] == pytest.approx(metrics["threshold"])
    arrays = np.load(next((run / "cache").glob("inputs-*.npy")), allow_pickle=False)
    with torch.no_grad():
        p = model.predict_proba(torch.from_numpy(arrays[:4]))
    assert p.shape == (4,) and torch.all((p >= 0) & (p <= 1))


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_cohort, tiny_run, tiny_settings,
                                                        tmp_path) -> None:
    from spinefx.train.cv import SimulatedKill, train_cv

    out = tmp_path / "run"
    # "kill" after 3 finished epochs: fold 1 complete, fold 2 after its first epoch
    with pytest.raises(SimulatedKill):
        train_cv(tiny_cohort, out, final=False, _interrupt_after=3, **tiny_settings)
    assert (out / "folds/1/metrics.json").is_file()
    assert json.loads((out / "folds/2/state.json").read_text())["epoch"] == 1
    assert not (out / "oof_predictions.csv").exists()

    with pytest.raises(FileExistsError):  # never overwrite a run without --resume
        train_cv(tiny_cohort, out, final=False, **tiny_settings)
    from spinefx.train.cv import TrainingError
    with pytest.raises(TrainingError, match="other settings"):
        train_cv(tiny_cohort, out, final=False, resume=True, **{**tiny_settings, "epochs": 3})

    train_cv(tiny_cohort, out, final=False, resume=True, **tiny_settings)
    reference, resumed = _oof(tiny_run[0]), _oof(out)
    assert resumed == reference  # bitwise equal probabilities (CPU, same seed)
    log = _rows(out / "training_log.csv")
    assert [(r["fold"], r["epoch"]) for r in log] == [("1", "1"), ("1", "2"), ("2", "1"),
                                                      ("2", "2")]
    assert not (out / "model.safetensors").exists()  # final=False


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tiny_cohort, tmp_path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "spinefx.cli.train", "--manifest", str(tiny_cohort), "--out", str(out),
           "--folds", "2", "--epochs", "1", "--batch-size", "4", "--image-size", "64",
           "--device", "cpu", "--no-final", "--no-progress", "--seed", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("out-of-fold AUC") == 1  # rank 0 alone reports
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    rows = _rows(out / "oof_predictions.csv")
    assert sorted(r["case_id"] for r in rows) == sorted(c.case_id
                                                        for c in read_manifest(tiny_cohort))
    log = _rows(out / "training_log.csv")
    assert [(r["fold"], r["epoch"]) for r in log] == [("1", "1"), ("2", "1")]
    assert (out / "report.md").is_file() and not list(out.rglob("*.tmp"))


def test_cli_hook(tiny_run, tmp_path, capsys) -> None:
    import argparse

    from spinefx.cli import train as train_command

    parser = argparse.ArgumentParser(prog="spinefx")
    train_command.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--manifest", "m.csv", "--out", str(tmp_path / "r"),
                              "--epochs", "3", "--no-final", "--max-cases", "20"])
    assert args.run is train_command.run and args.folds == 10 and args.image_size == 224
    assert args.no_final and args.max_cases == 20 and args.device == "auto"
    # a non-empty run folder is refused without --resume, as one clean line
    assert train_command.main(["--manifest", "m.csv", "--out", str(tiny_run[0])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--resume" in err and "Traceback" not in err
