"""`spinefx export --allow-outside`: a gate manifest whose series lie outside its folder
(absolute paths) is refused naming its line without the permission and used with it; the
training manifest of a run trained with the permission needs no flag (run.json records it)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from spinefx.cli import main
from spinefx.runtime.errors import ManifestError


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


class ReachedTheExport(Exception):
    """Raised in place of the ONNX export: the gate cases were read and preprocessed."""


@pytest.fixture
def no_onnx_export(monkeypatch):
    import spinefx.export.exporter as exporter

    def stop(*args, **kwargs):
        raise ReachedTheExport
    monkeypatch.setattr(exporter, "export_fp32", stop)


def test_cli_refuses_outside_series_unless_allowed(run_dir, cohort, tmp_path, capsys):
    manifest = _outside_manifest(cohort, tmp_path / "lists")
    argv = ["export", str(run_dir), "--out", str(tmp_path / "m"), "--manifest", str(manifest),
            "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{manifest} line 2" in err and "outside" in err and "--allow-outside" in err
    assert not (tmp_path / "m").exists()
    assert main(argv + ["--allow-outside"]) == 0
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "fp32" in spec["files"]


def test_recorded_permission_covers_the_training_manifest_only(run_dir, cohort, tmp_path,
                                                               no_onnx_export):
    from spinefx.export import export_model

    manifest = _outside_manifest(cohort, tmp_path / "lists")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "manifest": str(manifest)}))
    with pytest.raises(ManifestError, match=rf"{manifest} line 2: .*outside"):
        export_model(run, tmp_path / "m0", log=None)  # no record yet: refused
    (run / "run.json").write_text(json.dumps(
        {"settings": {}, "manifest": str(manifest.resolve()), "allow_outside": True}))
    with pytest.raises(ReachedTheExport):  # the training manifest: granted by the record
        export_model(run, tmp_path / "m1", log=None)
    other = _outside_manifest(cohort, tmp_path / "other")
    with pytest.raises(ManifestError, match="outside"):  # another manifest: not granted
        export_model(run, tmp_path / "m2", manifest=other, log=None)
    with pytest.raises(ReachedTheExport):
        export_model(run, tmp_path / "m3", manifest=other, allow_outside=True, log=None)
