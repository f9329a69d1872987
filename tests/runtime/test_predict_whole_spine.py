"""``spinefx predict STUDY`` with no box and no slice: every vertebra localised (the bundled
localiser), graded and classified (the bundled model), in one result.json and one picture."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spinefx.cli import main
from spinefx.runtime import localise
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.inference import Predictor
from spinefx.runtime.predict import open_inputs
from spinefx.runtime.segmentation import SpineMaps
from spinefx.runtime.service import analyse, resolve_roi
from spinefx.runtime.study_analysis import analyse_spine, most_suspicious

ENTRY_KEYS = {"level", "level_confidence", "slice", "box", "centroid", "heights_mm",
              "height_loss", "grade", "shape", "probability", "label", "ood"}
# what result.json held before the whole-spine mode (readers of one prediction rely on them)
SINGLE_PREDICTION_KEYS = {"status", "probability", "label", "threshold", "roi", "slices",
                          "model", "model_sha256", "slice", "box", "synthetic_model",
                          "disclaimer", "series", "warnings", "files", "ood", "timings_ms"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """One SYNTHETIC phantom study (seed 102: T12..S3 drawn, a crush fracture at L3) as T1 and
    T2 DICOM series, and ``spinefx predict`` run on it with no box."""
    from spinefx.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("whole") / "study"
    _, _, case = write_phantom_study(root, seed=102, label="benign", t2_variant="T2",
                                     case_id="p102")
    out = root.parent / "out"
    return root, case, out


@pytest.fixture(scope="module")
def predicted(phantom):
    root, _, out = phantom
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["predict", str(root), "--out", str(out), "--no-progress"])
    assert rc == 0
    return json.loads((out / "result.json").read_text()), stdout.getvalue()


def test_every_vertebra_classified_and_the_fracture_found(phantom, predicted):
    _, case, _ = phantom
    doc, _ = predicted
    entries = doc["vertebrae"]
    assert len(entries) >= 5 and doc["classified"] == "all"
    for e in entries:
        assert ENTRY_KEYS <= set(e)
        assert 0.0 <= e["probability"] <= 1.0
        assert e["label"] == ("malignant" if e["probability"] >= doc["threshold"] else "benign")
        assert 0 <= e["slice"] < case.n_slices
    # the fractured body (by the phantom's own mask) is one of them
    bodies = case.masks("t1")["bodies"]
    fractured_value = case.level_names.index(case.level) + 1
    hits = [e for e in entries
            if bodies[tuple(int(round(c)) for c in e["centroid"][::-1])] == fractured_value]
    assert len(hits) == 1, [e["centroid"] for e in entries]


def test_top_level_is_the_most_suspicious_vertebra(predicted):
    doc, _ = predicted
    assert SINGLE_PREDICTION_KEYS <= set(doc) and doc["status"] == "ok"
    entries = doc["vertebrae"]
    graded = ([e for e in entries if (e["grade"] or 0) >= 1]
              or [e for e in entries if not e["truncated"]] or entries)
    top = max(graded, key=lambda e: e["probability"])
    chosen = entries[doc["most_suspicious"]["index"]]
    assert chosen is top and doc["most_suspicious"]["level"] == top["level"]
    assert doc["probability"] == top["probability"] and doc["slice"] == top["slice"]
    assert doc["box"] == [float(v) for v in top["box"]]
    assert isinstance(doc["levels_uncertain"], bool) and doc["level_reason"]
    assert doc["synthetic_model"] is True


def test_files_and_cli_lines(phantom, predicted):
    _, _, out = phantom
    doc, stdout = predicted
    assert set(doc["files"]) == {"mask", "overview", "vertebrae", "overlay"}
    located = json.loads((out / "vertebrae.json").read_text())      # as `spinefx localise`
    assert [e["box"] for e in located["vertebrae"]] == [e["box"] for e in doc["vertebrae"]]
    assert "probability" not in located["vertebrae"][0]
    assert (out / "vertebrae_mask.nii.gz").stat().st_size > 100
    overview, overlay = Image.open(out / "overview.png"), Image.open(out / "overlay.png")
    assert overview.width > overlay.width * overview.height / overlay.height  # both panels
    lines = [line for line in stdout.splitlines() if " P = " in line]
    assert len(lines) == len(doc["vertebrae"])
    for line, e in zip(lines, doc["vertebrae"]):
        assert line.split()[0] == e["level"] and f"{e['probability']:.3f}" in line
    assert "not for diagnosis" in stdout


def test_fractured_only_classifies_the_graded_ones(phantom, tmp_path):
    root, _, _ = phantom
    assert main(["predict", str(root), "--out", str(tmp_path), "--fractured-only",
                 "--level", "T12", "--level", "C2", "--dicom", "--no-progress"]) == 0
    doc = json.loads((tmp_path / "result.json").read_text())
    # the capture is the most suspicious vertebra's overlay, in the source study
    assert doc["files"]["dicom"] == "overlay_sc.dcm" and (tmp_path / "overlay_sc.dcm").is_file()
    assert any("level C2 was asked for" in note for note in doc["localise_notes"])
    entries = doc["vertebrae"]
    graded = [e for e in entries if (e["grade"] or 0) >= 1]
    if not graded:  # none graded: every vertebra is classified, and the result says so
        assert doc["classified"] == "all" and doc["localise_notes"]
        return
    assert doc["classified"] == "graded >= 1"
    for e in entries:
        assert (e["probability"] is not None) == ((e["grade"] or 0) >= 1 or e["level"] == "T12")
    assert entries[doc["most_suspicious"]["index"]]["grade"] >= 1


def test_anchor_corrects_the_levels_before_fractured_only_chooses(phantom, predicted,
                                                                   tmp_path):
    from spinefx.runtime.vertebrae import LEVELS

    root, _, _ = phantom
    auto = [e["level"] for e in predicted[0]["vertebrae"]]
    # the user says the top body is one level higher than the count made it
    higher = LEVELS[LEVELS.index(auto[0]) - 1]
    target = LEVELS[LEVELS.index(auto[2]) - 1]      # the third body, by its corrected name
    assert main(["predict", str(root), "--out", str(tmp_path), "--anchor", f"1={higher}",
                 "--fractured-only", "--level", target, "--no-progress"]) == 0
    doc = json.loads((tmp_path / "result.json").read_text())
    levels = [e["level"] for e in doc["vertebrae"]]
    assert levels == [LEVELS[LEVELS.index(name) - 1] for name in auto]
    assert doc["level_confidence"] == 1.0 and not doc["levels_uncertain"]
    assert "set by the user" in doc["level_reason"]
    assert doc["vertebrae"][2]["probability"] is not None     # --level took the new name
    files = json.loads((tmp_path / "vertebrae.json").read_text())
    assert [e["level"] for e in files["vertebrae"]] == levels


def test_anchor_errors_are_clear(phantom, tmp_path, capsys):
    root, case, _ = phantom
    assert main(["predict", str(root), "--out", str(tmp_path / "a"), "--anchor", "99=L1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "there is no body 99 to name" in err and "Traceback" not in err
    assert main(["predict", str(root), "--out", str(tmp_path / "b"), "--anchor", "2=X9",
                 "--no-progress"]) == 2
    assert "unknown level 'X9'" in capsys.readouterr().err
    box = ",".join(str(v) for v in case.box)
    assert main(["predict", str(root), "--out", str(tmp_path / "c"), "--slice",
                 str(case.slice), "--box", box, "--anchor", "1=L1"]) == 2
    assert "--anchor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(root), "--out", str(tmp_path / "d"), "--anchor", "0=L1"])
    assert "N >= 1" in capsys.readouterr().err


def test_t2_when_t1_gives_nothing_and_an_error_when_neither(phantom, monkeypatch):
    root, case, _ = phantom
    truth = (case.masks("t1")["bodies"] > 0).astype(np.float32)
    monkeypatch.setattr(localise, "localiser_maps", lambda volume, model_dir=None: SpineMaps(
        truth if volume.weighting == "T2" else np.zeros_like(volume.data)))
    predictor = Predictor()
    study = open_inputs(root)
    pair = study.choose_pair(policy="strict")
    spine = analyse_spine(predictor, study, pair)
    assert spine.localised_on == "T2" and "localised on the T2" in spine.notes[0]
    assert spine.primary.spine is not None and spine.primary.spine["localised_on"] == "T2"
    assert len(spine.primary.spine["vertebrae"]) >= 8      # the true bodies, on the T1 grid
    monkeypatch.setattr(localise, "localiser_maps",
                        lambda volume, model_dir=None: SpineMaps(np.zeros_like(volume.data)))
    with pytest.raises(SpineFXError, match="no vertebra found on T1") as info:
        analyse_spine(predictor, study, pair)
    assert "nor on T2" in str(info.value) and "--box" in str(info.value)


def _truth_localiser(monkeypatch, case):
    truth = (case.masks("t1")["bodies"] > 0).astype(np.float32)
    monkeypatch.setattr(localise, "localiser_maps",
                        lambda volume, model_dir=None: SpineMaps(truth))


def test_batched_vertebrae_equal_one_by_one_analyse(phantom, monkeypatch):
    root, case, _ = phantom
    _truth_localiser(monkeypatch, case)
    # the spine's boxes are the localiser's already (never re-fitted): compare with the same
    # boxes as given, not re-fitted to the single-slice localiser one by one
    predictor = Predictor(snap_roi=False)
    study = open_inputs(root)
    pair = study.choose_pair(policy="strict")
    spine = analyse_spine(predictor, study, pair)
    entries = spine.localisation.document["vertebrae"]
    t1 = study.volume(pair.t1)
    assert len(entries) >= 5 and all(r is not None for r in spine.results)
    for entry, result in zip(entries, spine.results):
        assert result is not None
        roi = resolve_roi(t1, predictor.config, entry["slice"], tuple(entry["box"]))
        alone = analyse(predictor, study, pair, roi)
        assert result.prediction.probability == pytest.approx(alone.prediction.probability,
                                                              abs=1e-5)
        assert result.roi == alone.roi and result.prediction.ood == alone.prediction.ood
        # the primary (most suspicious) result also carries every other vertebra's warnings
        assert set(alone.warnings) <= set(result.warnings)
        if result is not spine.primary:
            assert result.warnings == alone.warnings
        assert result.series == alone.series and result.study_notes == alone.study_notes


def test_batch_failure_falls_back_to_one_by_one(phantom, monkeypatch):
    root, case, _ = phantom
    _truth_localiser(monkeypatch, case)
    predictor = Predictor()
    study = open_inputs(root)
    pair = study.choose_pair(policy="strict")
    entries = analyse_spine(predictor, study, pair).localisation.document["vertebrae"]
    # the phantom's bodies share their centre slice: the second one is told apart by its box
    bad = (entries[1]["slice"], tuple(entries[1]["box"]))
    one_by_one = predictor.predict_pair

    def refuse_batch(*args, **kwargs):
        raise SpineFXError("stand-in: one input could not be built")

    def refuse_one(aligned, slice_index, **kwargs):
        if (slice_index, tuple(kwargs.get("box") or ())) == bad:
            raise SpineFXError("stand-in: this vertebra's input could not be built")
        return one_by_one(aligned, slice_index, **kwargs)

    monkeypatch.setattr(predictor, "predict_rois", refuse_batch)
    monkeypatch.setattr(predictor, "predict_pair", refuse_one)
    spine = analyse_spine(predictor, study, pair)
    for e, result, error in zip(entries, spine.results, spine.errors):
        failed = (e["slice"], tuple(e["box"])) == bad
        assert (result is None) == failed and (error is not None) == failed
    assert sum(r is None for r in spine.results) == 1      # that one, and only it, failed
    assert any(r is not None for r in spine.results)


def test_truncated_body_is_never_most_suspicious_by_grade():
    def result(p):
        return type("R", (), {"prediction": type("P", (), {"probability": p})()})()

    entries = [{"grade": 0, "truncated": False}, {"grade": 1, "truncated": False},
               {"grade": None, "truncated": True}]
    results = [result(0.2), result(0.3), result(0.9)]
    assert most_suspicious(entries, results) == 1         # graded >= 1 first
    entries[1]["grade"] = 0
    assert most_suspicious(entries, results) == 1         # then the bodies not cut
    for e in entries:
        e["truncated"] = True
    assert most_suspicious(entries, results) == 2         # all cut: the highest P


def test_missing_localiser_names_its_folder(phantom, tmp_path, capsys):
    root, _, _ = phantom
    missing = tmp_path / "no_localiser"
    code = main(["predict", str(root), "--out", str(tmp_path / "o"), "--localiser",
                 str(missing), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "localiser model not found" in err and str(missing) in err
    assert "Traceback" not in err
    assert localise.DEFAULT_MODEL_DIR.parts[-2:] == ("weights", "localiser")


def test_slice_without_a_box_is_a_usage_error(phantom, tmp_path, capsys):
    root, _, _ = phantom
    assert main(["predict", str(root), "--slice", "4", "--out", str(tmp_path)]) == 2
    assert "--slice needs --box" in capsys.readouterr().err


def test_explicit_box_keeps_the_single_prediction(phantom, tmp_path):
    root, case, _ = phantom
    box = ",".join(str(v) for v in case.box)
    assert main(["predict", str(root), "--slice", str(case.slice), "--box", box,
                 "--out", str(tmp_path), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "result.json").read_text())
    assert "vertebrae" not in doc and set(doc["files"]) == {"overlay"}
    assert not (tmp_path / "overview.png").exists()


def test_real_dzz_pair_every_vertebra_has_a_probability(real_spine, tmp_path):
    t1, t2 = real_spine / "dzz_t1.npz", real_spine / "dzz_t2.npz"
    if not (t1.is_file() and t2.is_file()):
        pytest.skip("the DzZ pair is absent")
    assert main(["predict", "--t1", str(t1), "--t2", str(t2), "--out", str(tmp_path),
                 "--no-progress"]) == 0
    doc = json.loads((tmp_path / "result.json").read_text())
    assert len(doc["vertebrae"]) >= 5 and doc["localised_on"] == "T1"
    assert all(0.0 <= e["probability"] <= 1.0 for e in doc["vertebrae"])
    # the lowest body runs into the image's bottom rows (its box to row 349 of 351 before
    # the truncation rule, graded 3 "crush" there): cut, not graded, not the chosen one
    rows = json.loads((tmp_path / "vertebrae.json").read_text())["series"]["matrix"][0]
    at_edge = [e for e in doc["vertebrae"] if e["box"][1] <= 2 or e["box"][3] >= rows - 2]
    assert at_edge
    for e in doc["vertebrae"]:
        assert e["truncated"] or e not in at_edge
        # cut bodies are not graded; the lowest may be read as the sacrum (also ungraded)
        assert not e["truncated"] or (e["grade"] is None and (
            "truncated" in e["grade_note"] or "sacral" in e["grade_note"]))
    assert not doc["vertebrae"][doc["most_suspicious"]["index"]]["truncated"]
    assert str(real_spine) not in (tmp_path / "result.json").read_text()  # no paths leak


def test_whole_spine_predict_imports_no_torch(phantom, tmp_path):
    root, _, _ = phantom
    code = ("import sys\n"
            "from spinefx.cli import main\n"
            "assert main(['predict', sys.argv[1], '--out', sys.argv[2], '--fractured-only',"
            " '--no-progress']) == 0\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
