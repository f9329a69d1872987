"""Simulated readers hit their targets exactly; the readers CSV parses strictly and clearly."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest

from spinefx.runtime import Case, read_manifest
from spinefx.runtime.errors import ManifestError
from spinefx.runtime.features import FEATURE_KEYS
from spinefx.train import readers as R


def _labels(n_mal: int, n_ben: int) -> dict[str, str]:
    return {**{f"m{i:03d}": "malignant" for i in range(n_mal)},
            **{f"b{i:03d}": "benign" for i in range(n_ben)}}


def write_manifest(folder: Path, labels: dict[str, str], features: dict | None = None) -> Path:
    """A hand-made manifest (series paths need not exist to read it)."""
    path = folder / "manifest.csv"
    cols = ["case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1", "box_y1",
            *FEATURE_KEYS]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for cid, lab in labels.items():
            flags = [(features or {}).get(cid, {}).get(k, 0) for k in FEATURE_KEYS]
            w.writerow([cid, lab, f"{cid}/t1", f"{cid}/t2", 7, 10, 10, 40, 40, *flags])
    return path


def test_paper_defaults_hit_their_rates_exactly() -> None:
    labels = _labels(50, 140)  # the paper's cohort
    calls = R.simulate_readers(labels, seed=0)
    assert len(calls) == 3 * 190 and all(c.simulated for c in calls)
    rates = R.achieved_rates(calls, labels)
    assert set(rates) == {"senior", "resident_4th_year", "resident_1st_year"}
    assert (rates["senior"]["tp"], rates["senior"]["tn"]) == (49, 137)  # 0.98*140 = 137.2
    assert (rates["resident_4th_year"]["tp"], rates["resident_4th_year"]["tn"]) == (48, 134)
    first = rates["resident_1st_year"]
    assert first["sensitivity"] == 0.78 and (first["tp"], first["tn"]) == (39, 85)
    assert round(first["accuracy"], 2) == 0.65  # paper: 66% (0.78*50 + 0.61*140 = 124.4 / 190)


@pytest.mark.parametrize("n_mal,n_ben,sens,spec", [(10, 10, 0.7, 0.9), (7, 13, 0.5, 0.5),
                                                   (3, 0, 1.0, 0.2), (33, 71, 0.0, 1.0)])
def test_custom_readers_hit_rounded_targets(n_mal, n_ben, sens, spec) -> None:
    labels = _labels(n_mal, n_ben)
    calls = R.simulate_readers(labels, {"x": (sens, spec)}, seed=5)
    r = R.achieved_rates(calls, labels)["x"]
    assert r["tp"] == int(sens * n_mal + 0.5)
    assert r["tn"] == int(spec * n_ben + 0.5)


def test_simulation_is_seeded_and_readers_independent() -> None:
    labels = _labels(20, 40)
    a = R.simulate_readers(labels, {"p": (0.8, 0.7), "q": (0.6, 0.6)}, seed=1)
    b = R.simulate_readers(labels, {"p": (0.8, 0.7), "q": (0.6, 0.6)}, seed=1)
    c = R.simulate_readers(labels, {"p": (0.8, 0.7), "q": (0.6, 0.6)}, seed=2)
    alone = R.simulate_readers(labels, {"q": (0.6, 0.6)}, seed=1)
    assert a == b and a != c
    assert [x for x in a if x.reader == "q"] == alone  # adding reader p did not move q's calls
    with pytest.raises(ValueError, match="sensitivity"):
        R.simulate_readers(labels, {"bad": (1.2, 0.5)})
    with pytest.raises(ValueError, match="label"):
        R.simulate_readers({"x": "unknown"})


def test_roundtrip_and_plain_instructor_csv(tmp_path) -> None:
    labels = _labels(4, 6)
    calls = R.simulate_readers(labels, seed=3)
    path = R.write_readers_csv(calls, tmp_path / "r.csv")
    assert path.read_text().splitlines()[0] == "case_id,reader,call,simulated"
    table = R.read_readers_csv(path, known_cases=labels)
    assert table.simulated and table.calls == calls
    assert table.readers == list(R.DEFAULT_READERS)

    plain = tmp_path / "plain.csv"
    plain.write_text("case_id,reader,call\nm000,dr_a,Malignant\nb000,dr_a, benign\n")
    t = R.read_readers_csv(plain)
    assert not t.simulated
    assert t.calls_of("dr_a") == {"m000": "malignant", "b000": "benign"}

    commented = tmp_path / "commented.csv"
    commented.write_text("# SIMULATED reader calls\ncase_id,reader,call\nm000,dr_a,malignant\n")
    assert R.read_readers_csv(commented).simulated


@pytest.mark.parametrize("content,line,message", [
    ("case_id,reader,call\nm000,a,malignant\nb000,a,tumour\n", 3,
     "call must be benign or malignant"),
    ("case_id,reader,call\nzzz,a,benign\n", 2, "unknown case_id 'zzz'"),
    ("case_id,reader,call\nm000,a,benign\nm000,a,benign\n", 3, "already called"),
    ("case_id,reader,call\n,a,benign\n", 2, "empty case_id"),
    ("case_id,call\nm000,benign\n", 1, "missing column(s) reader"),
    ("case_id,reader,call,simulated\nm000,a,benign,maybe\n", 2, "simulated must be yes or no"),
])
def test_bad_readers_csv_names_file_and_line(tmp_path, content, line, message) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ManifestError) as err:
        R.read_readers_csv(path, known_cases=["m000", "b000"])
    text = str(err.value)
    assert str(path) in text and f"line {line}" in text and message in text


def test_missing_and_empty_readers_files(tmp_path) -> None:
    with pytest.raises(ManifestError, match="no such readers file"):
        R.read_readers_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        R.read_readers_csv(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("case_id,reader,call\n")
    with pytest.raises(ManifestError, match="no calls"):
        R.read_readers_csv(tmp_path / "header.csv")


def test_readers_cli_hook(tmp_path, capsys) -> None:
    from spinefx.cli import readers as readers_command

    labels = _labels(10, 20)
    manifest = write_manifest(tmp_path, labels)
    parser = argparse.ArgumentParser(prog="spinefx")
    readers_command.register(parser.add_subparsers())
    out = tmp_path / "readers.csv"
    args = parser.parse_args(["readers", "--manifest", str(manifest), "--out", str(out),
                              "--seed", "4", "--reader", "a=0.9,0.8", "--reader", "b=0.5,0.5"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "SIMULATED" in printed and str(out) in printed
    table = R.read_readers_csv(out, known_cases=labels)
    assert table.readers == ["a", "b"] and table.simulated
    rates = R.achieved_rates(table.calls, labels)
    assert (rates["a"]["tp"], rates["a"]["tn"]) == (9, 16)
    with pytest.raises(SystemExit):
        parser.parse_args(["readers", "--manifest", "m", "--out", "o", "--reader", "a=2"])


def _cases(labels: dict[str, str], flags: dict[str, dict[str, int]]):
    return [Case(case_id=c, label=lab, t1=Path("t1"), t2=Path("t2"), slice=0,
                 features={k: flags[c].get(k, 0) for k in FEATURE_KEYS})
            for c, lab in labels.items()]


def test_oracle_caps_a_reader_above_what_the_features_permit() -> None:
    from spinefx.train.oracle import cap_readers, feature_oracle_roc

    rng = np.random.default_rng(0)
    labels = _labels(30, 30)
    noise = {c: {k: int(rng.random() < 0.5) for k in FEATURE_KEYS} for c in labels}
    fpr, tpr = feature_oracle_roc(_cases(labels, noise))
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    capped, notes = cap_readers({"senior": (0.98, 0.98), "weak": (0.05, 0.5)}, (fpr, tpr))
    assert capped["senior"][0] < 0.6 and capped["senior"][1] == 0.98 and len(notes) == 1
    assert "senior" in notes[0] and capped["weak"] == (0.05, 0.5)   # below the ROC: kept
    telling = {c: {"fluid_sign": int(lab == "benign"), "epidural_mass": int(lab == "malignant")}
               for c, lab in labels.items()}
    roc = feature_oracle_roc(_cases(labels, telling))
    assert cap_readers({"senior": (0.98, 0.98)}, roc) == ({"senior": (0.98, 0.98)}, [])
    assert feature_oracle_roc(_cases(labels, noise)[:1]) is None


def test_readers_on_a_phantom_cohort_are_held_to_its_features(phantom_cohorts, tmp_path,
                                                              capsys) -> None:
    """At difficulty 2 the flags carry no label information, so the paper's 98% senior is more
    than the phantom permits and is lowered; a hand-made manifest (not a cohort) is not."""
    from spinefx.cli import main

    manifest = phantom_cohorts.manifest(n_cases=12, n_malignant=6, seed=3, difficulty=2.0)
    assert main(["readers", "--manifest", str(manifest), "--out",
                 str(tmp_path / "r.csv")]) == 0
    printed = capsys.readouterr().out
    assert "held to what the phantom permits: senior: sensitivity 0.980 ->" in printed
    labels = {c.case_id: str(c.label) for c in read_manifest(manifest)}
    rates = R.achieved_rates(R.read_readers_csv(tmp_path / "r.csv").calls, labels)
    assert rates["senior"]["sensitivity"] < 0.98
