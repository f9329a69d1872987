"""Where the int8 gate's cases came from: in-sample for the final model when they are the run's
own training cases (recorded and warned), held-out with a fresh cohort (SYNTHETIC phantoms)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from spinefx.export.onnx_export import ort_session
from spinefx.export.variants import (
    HELD_OUT,
    IN_SAMPLE,
    NOT_STATED,
    UNKNOWN,
    Fp32Export,
    gate_provenance,
    int8_variant,
)
from spinefx.runtime.errors import SpineFXWarning


def _absolute_copy(source: Path, folder: Path) -> Path:
    """``source``'s rows in a new folder (no cohort.json), series as absolute paths."""
    with open(source, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("t1", "t2", "mask"):
            if row.get(key):
                row[key] = str((source.parent / row[key]).resolve())
    folder.mkdir(parents=True)
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_training_manifest_is_in_sample(cohort, phantom_cohorts, settings, tmp_path):
    assert gate_provenance(cohort, cohort)["cases"] == IN_SAMPLE
    # the same series listed elsewhere, and the same phantom seed re-written elsewhere
    moved = gate_provenance(_absolute_copy(cohort, tmp_path / "lists"), cohort)
    assert moved["cases"] == IN_SAMPLE and "series of the training manifest" in moved["reason"]
    copy = phantom_cohorts.private_copy(tmp_path / "copy", n_cases=settings.n_cases,
                                        n_malignant=settings.n_malignant,
                                        seed=settings.cohort_seed, variation=0.0)
    again = gate_provenance(copy, cohort)
    assert again["cases"] == IN_SAMPLE and f"seed {settings.cohort_seed}" in again["reason"]


def test_a_fresh_cohort_is_held_out_and_no_training_record_is_unknown(cohort, phantom_cohorts,
                                                                      settings):
    fresh = phantom_cohorts.manifest(n_cases=4, n_malignant=2, seed=settings.cohort_seed + 40,
                                     variation=0.0)
    held = gate_provenance(fresh, cohort)
    assert held["cases"] == HELD_OUT and "no gate case" in held["reason"]
    assert gate_provenance(fresh, None)["cases"] == UNKNOWN


def _fp32(out: Path) -> Fp32Export:
    path = out / "model.onnx"
    return Fp32Export(path=path, info={}, structure={}, session=ort_session(path),
                      probability=None, cam=None, cam_shape=[2, 2])  # type: ignore[arg-type]


def test_an_in_sample_gate_is_recorded_and_warns(exported, inputs, cohort, settings, tmp_path):
    out, _ = exported
    x, _, cases = inputs
    logged: list[str] = []
    with pytest.warns(SpineFXWarning, match="in-sample"):
        info, _ = int8_variant(_fp32(out), tmp_path / "q.onnx", x, cases, settings.calib_cases,
                               0.005, 0.03, logged.append,
                               provenance=gate_provenance(cohort, cohort))
    assert info["cases"] == IN_SAMPLE and "training manifest" in info["cases_reason"]
    assert any(line.startswith("warning:") and "in-sample" in line for line in logged)


def test_a_gate_whose_caller_says_nothing_is_unknown_not_held_out(exported, inputs, settings,
                                                                  tmp_path, recwarn):
    out, _ = exported
    x, _, cases = inputs
    info, _ = int8_variant(_fp32(out), tmp_path / "q.onnx", x, cases, settings.calib_cases,
                           0.005, 0.03, lambda *_: None)
    assert info["cases"] == UNKNOWN and info["cases_reason"] == NOT_STATED["reason"]
    assert not [w for w in recwarn if "in-sample" in str(w.message)]


def test_cli_gate_manifest_flag_and_in_sample_warning(run_dir, cohort, tmp_path, capsys):
    from spinefx.cli import build_parser
    from spinefx.cli.export import _report_gate_cases

    args = build_parser().parse_args(["export", str(run_dir), "--out", str(tmp_path / "m"),
                                      "--gate-manifest", str(cohort)])
    assert args.manifest == cohort
    _report_gate_cases(args, {"int8": {"cases": UNKNOWN}})   # the record does not say: work it out
    captured = capsys.readouterr()
    assert "int8 gate cases: in-sample" in captured.out
    assert "warning:" in captured.err and "--gate-manifest" in captured.err
    _report_gate_cases(args, {"int8": {"cases": HELD_OUT, "cases_reason": "fresh"}})
    captured = capsys.readouterr()
    assert "int8 gate cases: held-out" in captured.out and captured.err == ""
