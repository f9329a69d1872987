"""T1 and T2 of different patients or exams are never paired silently; a folder of several
studies is described briefly, by an anonymous study index, never by an identifier."""
from __future__ import annotations

import json

import pytest

from spinefx.runtime import SeriesError
from spinefx.runtime.study import Study


@pytest.fixture(scope="module")
def two_patients(tmp_path_factory):
    """One folder with the phantom studies of two patients (both series numbered 3 and 4)."""
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("archive")
    write_phantom_study(root / "a", seed=3, label="malignant", t2_variant="T2", case_id="pa")
    write_phantom_study(root / "b", seed=4, label="benign", t2_variant="T2", case_id="pb")
    return root


def _no_identifiers(text: str) -> None:
    for value in ("SYN-pa", "SYN-pb", "PHANTOM_pa", "PHANTOM_pb"):
        assert value not in text


def test_several_studies_are_named_as_such_and_listed_briefly(two_patients):
    study = Study.open(two_patients)
    assert study.n_studies == 2 and study.n_patients == 2
    assert sorted({row["study"] for row in study.rows}) == [1, 2]
    with pytest.raises(SeriesError) as info:
        study.choose_pair()
    message = str(info.value)
    assert "the folder holds 2 studies of 2 patients" in message
    assert "(study 1)" in message and "(study 2)" in message and len(message) < 600
    _no_identifiers(message)


def test_a_series_number_shared_by_two_studies_is_ambiguous(two_patients):
    study = Study.open(two_patients)
    with pytest.raises(SeriesError, match="'3' matches several series"):
        study.choose_pair("3", "4")


def test_t1_and_t2_of_different_patients_are_refused_unless_forced(two_patients):
    study = Study.open(two_patients)
    t1 = next(e for e in study.usable if e.weighting == "T1" and e.row["study"] == 1)
    t2 = next(e for e in study.usable if e.weighting == "T2" and e.row["study"] == 2)
    with pytest.raises(SeriesError, match="come from different patients") as info:
        study.choose_pair(t1.series_uid, t2.series_uid)
    _no_identifiers(str(info.value))
    forced = study.choose_pair(t1.series_uid, t2.series_uid, allow_mixed=True)
    assert any("different patients (forced by the user)" in n for n in forced.notes)


def test_guess_takes_the_partner_from_the_same_exam(two_patients):
    study = Study.open(two_patients)
    pair = study.choose_pair(policy="guess")
    assert study.entries[pair.t1].row["study"] == study.entries[pair.t2].row["study"]


def test_one_study_folder_pairs_as_before(two_patients):
    pair = Study.open(two_patients / "a").choose_pair()
    assert pair.notes == ()


def test_inspect_shows_an_anonymous_study_column(two_patients, capsys):
    from spinefx.cli import main

    assert main(["inspect", str(two_patients)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[0] == "study"
    assert {line.split()[0] for line in lines[1:5]} == {"1", "2"}
    assert "2 studies in this folder" in out
    _no_identifiers(out)


def test_cli_refuses_a_cross_patient_pair_unless_forced(two_patients, tmp_path, capsys):
    from spinefx.cli import main
    from tests.helpers.onnx_model import write_tiny_model

    model = write_tiny_model(tmp_path / "model", image_size=64)
    study = Study.open(two_patients)
    t1 = next(e for e in study.usable if e.weighting == "T1" and e.row["study"] == 1)
    t2 = next(e for e in study.usable if e.weighting == "T2" and e.row["study"] == 2)
    args = ["predict", str(two_patients), "--t1", t1.series_uid, "--t2", t2.series_uid,
            "--center", "120,120", "--model", str(model), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "refused")]) == 2
    assert "come from different patients" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "result.json").exists()
    assert main(args + ["--out", str(tmp_path / "forced"), "--force-pairing"]) == 0
    notes = json.loads((tmp_path / "forced" / "result.json").read_text())["study_notes"]
    assert any("different patients (forced by the user)" in n for n in notes)
