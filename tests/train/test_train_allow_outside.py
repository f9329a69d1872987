"""`--allow-outside` on train and evaluate: a manifest whose series lie outside its folder
(absolute paths, as an institution's own manifest has them) is refused naming its line
without the permission, and read with it; the run records the permission for the stages that
read its manifest again."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spinefx.cli import main
from spinefx.runtime.errors import ManifestError
from spinefx.train import evaluation as E
from spinefx.train.run_folder import manifest_permission

OOF = [("m1", 0, "malignant", 0.9), ("m2", 1, "malignant", 0.4),
       ("b1", 0, "benign", 0.2), ("b2", 1, "benign", 0.6)]


def _outside_manifest(source: Path, folder: Path) -> Path:
    """``source``'s cases in ``folder``/manifest.csv, their series as absolute paths into the
    source's folder (outside the new manifest's folder)."""
    with open(source, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("t1", "t2", "mask"):
            if row.get(key):
                row[key] = str((source.parent / row[key]).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _hand_made(tmp_path: Path) -> tuple[Path, Path]:
    """(OOF CSV, manifest of the same 4 cases naming absent series under another folder)."""
    oof = tmp_path / "run" / "oof_predictions.csv"
    oof.parent.mkdir()
    oof.write_text("case_id,fold,label,probability\n"
                   + "".join(f"{c},{f},{label},{p}\n" for c, f, label, p in OOF))
    archive = tmp_path / "archive"
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("case_id,label,t1,t2,slice,box_x0,box_y0,box_x1,box_y1\n" + "".join(
        f"{c},{label},{archive / c / 't1'},{archive / c / 't2'},3,1,1,20,20\n"
        for c, _, label, _ in OOF))
    return oof, manifest


def test_evaluate_refuses_outside_series_unless_allowed(tmp_path, capsys) -> None:
    oof, manifest = _hand_made(tmp_path)
    with pytest.raises(ManifestError, match=rf"{manifest} line 2: .*outside"):
        E.evaluate(oof, tmp_path / "e0", manifest=manifest, bootstrap=0)
    argv = ["evaluate", "--oof", str(oof), "--out", str(tmp_path / "e1"), "--manifest",
            str(manifest), "--bootstrap", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{manifest} line 2" in err and "--allow-outside" in err
    assert main(argv + ["--allow-outside"]) == 0
    assert json.loads((tmp_path / "e1" / "evaluation.json").read_text())["model"]


def test_evaluate_inherits_the_runs_recorded_permission(tmp_path) -> None:
    oof, manifest = _hand_made(tmp_path)
    record = {"settings": {}, "manifest": str(manifest.resolve()), "allow_outside": True}
    (oof.parent / "run.json").write_text(json.dumps(record))
    result = E.evaluate(oof, tmp_path / "e", manifest=manifest, bootstrap=0)
    assert result["model"]["pooled"]["accuracy"]["value"] == pytest.approx(0.5)
    # the permission belongs to that manifest: a copy elsewhere needs the flag again
    other = tmp_path / "elsewhere" / "manifest.csv"
    other.parent.mkdir()
    other.write_text(manifest.read_text())
    with pytest.raises(ManifestError, match="outside"):
        E.evaluate(oof, tmp_path / "e2", manifest=other, bootstrap=0)


@pytest.mark.parametrize("record, allowed", [
    (None, False), ({"allow_outside": False}, False), ({"allow_outside": True}, True),
    ({"allow_outside": "yes"}, False), ("not json", False)])
def test_manifest_permission_reads_only_a_clear_record(tmp_path, record, allowed) -> None:
    manifest = tmp_path / "m.csv"
    if isinstance(record, dict):
        (tmp_path / "run.json").write_text(json.dumps({**record, "manifest": str(manifest)}))
    elif record is not None:
        (tmp_path / "run.json").write_text(record)
    assert manifest_permission(tmp_path, manifest) is allowed
    assert manifest_permission(tmp_path, manifest, allow_outside=True) is True
    assert manifest_permission(None, manifest) is False


def test_train_refuses_outside_series_before_training(phantom_cohorts, tmp_path,
                                                      capsys) -> None:
    manifest = _outside_manifest(phantom_cohorts.manifest(4, 2, seed=3), tmp_path / "lists")
    out = tmp_path / "run"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--folds", "2",
                 "--epochs", "1", "--image-size", "32", "--no-progress",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{manifest.resolve()} line 2" in err and "--allow-outside" in err
    assert not (out / "cache").exists()  # stopped before preprocessing


def test_train_cli_passes_the_permission(monkeypatch, tmp_path) -> None:
    import spinefx.train.cv as cv

    seen: dict = {}

    def fake_train_cv(manifest, out, **kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(cv, "train_cv", fake_train_cv)
    argv = ["train", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "r")]
    assert main(argv + ["--allow-outside"]) == 0
    assert seen.get("allow_outside") is True
    seen.clear()
    assert main(argv) == 0
    assert not seen.get("allow_outside")


def test_prepare_inputs_reads_and_records_the_permission(phantom_cohorts, tmp_path) -> None:
    import torch

    from spinefx.train.distributed import Dist
    from spinefx.train.run_folder import prepare_inputs

    manifest = _outside_manifest(phantom_cohorts.manifest(4, 2, seed=3), tmp_path / "lists")
    settings = {"max_cases": None, "seed": 0, "image_size": 32}
    cpu = torch.device("cpu")
    with pytest.raises(ManifestError, match=rf"{manifest} line 2: .*outside"):
        prepare_inputs(tmp_path / "r0", manifest, settings, Dist(), cpu, False)
    out = tmp_path / "r1"
    cases, arrays = prepare_inputs(out, manifest, settings, Dist(), cpu, False,
                                   allow_outside=True)
    assert len(cases) == 4 and arrays.shape[0] == 4 and arrays.shape[-1] == 32
    record = json.loads((out / "run.json").read_text())
    assert record["allow_outside"] is True and record["manifest"] == str(manifest)
    # a resumed run reads the manifest with the recorded permission, without the flag again
    again, _ = prepare_inputs(out, manifest, settings, Dist(), cpu, False)
    assert [c.case_id for c in again] == [c.case_id for c in cases]
