"""`spinefx evaluate` on hand-made OOF predictions, readers and manifest; the plot helpers."""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
from scipy import stats  # noqa: E402

from spinefx.runtime.errors import ManifestError  # noqa: E402
from spinefx.runtime.features import FEATURE_KEYS  # noqa: E402
from spinefx.train import evaluation as E  # noqa: E402
from spinefx.train import plots  # noqa: E402

MIN_PNG = 5_000  # bytes: a drawn figure, not an empty canvas

# 4 malignant, 6 benign; model (threshold 0.5) wrong on m4 and b5.
OOF = [  # case_id, fold, label, probability
    ("m1", 0, "malignant", 0.9), ("m2", 0, "malignant", 0.8), ("m3", 1, "malignant", 0.7),
    ("m4", 1, "malignant", 0.3), ("b1", 0, "benign", 0.1), ("b2", 0, "benign", 0.2),
    ("b3", 0, "benign", 0.3), ("b4", 1, "benign", 0.4), ("b5", 1, "benign", 0.6),
    ("b6", 1, "benign", 0.05),
]
# reader r1: wrong on m2, m3 (malignant), b2, b3, b4 (benign); right on m4 and b5
R1 = {"m1": "malignant", "m2": "benign", "m3": "benign", "m4": "malignant", "b1": "benign",
      "b2": "malignant", "b3": "malignant", "b4": "malignant", "b5": "benign", "b6": "benign"}
# expected McNemar b (model right, reader wrong) / c (model wrong, reader right)
EXPECTED = {"sensitivity": (2, 1), "specificity": (3, 1), "overall": (5, 2)}
# features: convex_posterior_border in all malignant + one benign; fluid_sign in 5 benign
FEATURES = {**{f"m{i}": {"convex_posterior_border": 1} for i in range(1, 5)},
            "b1": {"convex_posterior_border": 1, "fluid_sign": 1},
            **{f"b{i}": {"fluid_sign": 1} for i in range(2, 6)}}


def _write_oof(folder: Path, rows=OOF) -> Path:
    path = folder / "oof_predictions.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "fold", "label", "probability"])
        w.writerows(rows)
    return path


def _write_manifest(folder: Path, synthetic: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "label", "t1", "t2", "slice", "box_x0", "box_y0", "box_x1",
                    "box_y1", *FEATURE_KEYS])
        for cid, _, label, _ in OOF:
            w.writerow([cid, label, "t1", "t2", 5, 1, 1, 20, 20,
                        *[FEATURES.get(cid, {}).get(k, 0) for k in FEATURE_KEYS]])
    if synthetic:
        (folder / "cohort.json").write_text(json.dumps({"synthetic": True}))
    return path


def _write_readers(folder: Path, simulated: bool) -> Path:
    path = folder / "readers.csv"
    lines = ["case_id,reader,call" + (",simulated" if simulated else "")]
    lines += [f"{c},r1,{call}" + (",yes" if simulated else "") for c, call in R1.items()]
    lines += ["m1,r2,malignant" + (",yes" if simulated else ""),
              "b1,r2,benign" + (",yes" if simulated else "")]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    oof = _write_oof(root)
    manifest = _write_manifest(root / "cohort", synthetic=True)
    readers = _write_readers(root, simulated=True)
    out = root / "out"
    result = E.evaluate(oof, out, readers_csv=readers, manifest=manifest, bootstrap=200)
    return result, out


def test_evaluation_json_has_expected_mcnemar_counts(evaluated) -> None:
    result, out = evaluated
    on_disk = json.loads((out / "evaluation.json").read_text())
    assert on_disk == result
    r1 = next(r for r in on_disk["readers"] if r["reader"] == "r1")
    for key, (b, c) in EXPECTED.items():
        t = r1["mcnemar"][key]
        assert (t["b"], t["c"]) == (b, c), key
        assert t["p"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)
    assert r1["mcnemar"]["sensitivity"]["n"] == 4 and r1["mcnemar"]["specificity"]["n"] == 6
    assert r1["metrics"]["sensitivity"]["value"] == 0.5   # m1, m4
    assert r1["metrics"]["specificity"]["value"] == 0.5   # b1, b5, b6
    assert r1["model_same_cases"]["sensitivity"]["value"] == 0.75
    r2 = next(r for r in on_disk["readers"] if r["reader"] == "r2")
    assert r2["n"] == 2 and r2["mcnemar"]["overall"]["p"] == 1.0


def test_model_metrics_threshold_and_labels(evaluated) -> None:
    result, _ = evaluated
    pooled = result["model"]["pooled"]
    assert result["threshold"] == {"value": 0.5, "source": "default 0.5"}
    assert pooled["counts"] == {"tp": 3, "fn": 1, "tn": 5, "fp": 1}
    assert pooled["accuracy"]["value"] == 0.8
    assert [f["fold"] for f in result["model"]["per_fold"]["folds"]] == [0, 1]
    assert result["synthetic"] and result["readers_simulated"]
    assert len(result["labels"]) == 2


def test_simulated_readers_mcnemar_is_labelled_as_fixed_by_the_chosen_rates(evaluated,
                                                                           tmp_path) -> None:
    result, out = evaluated
    assert "fixed by the sensitivity/specificity chosen" in result["mcnemar_note"]
    md = (out / "evaluation.md").read_text()
    mcnemar = md[md.index("### Model vs reader"):]
    assert result["mcnemar_note"] in mcnemar.split("\n\n| reader")[0]
    human = E.evaluate(_write_oof(tmp_path), tmp_path / "h",
                       readers_csv=_write_readers(tmp_path, simulated=False), bootstrap=0)
    assert human["mcnemar_note"] is None
    assert "fixed by" not in (tmp_path / "h" / "evaluation.md").read_text()


def test_feature_statistics(evaluated) -> None:
    result, _ = evaluated
    feats = result["features"]
    assert feats["n_features"] == 15 and feats["n_cases"] == 10
    row = {r["key"]: r for r in feats["rows"]}
    convex = row["convex_posterior_border"]
    assert (convex["malignant_with"], convex["benign_with"]) == (4, 1)
    assert convex["p"] == pytest.approx(stats.fisher_exact([[4, 0], [1, 5]]).pvalue)
    assert convex["commoner_in"] == "malignant"
    assert row["fluid_sign"]["commoner_in"] == "benign"
    assert convex["p_bonferroni"] == pytest.approx(min(1.0, 15 * convex["p"]))
    mc = feats["multiple_comparisons"]
    assert mc["tests"] == 15 and mc["bonferroni_alpha"] == pytest.approx(0.05 / 15)
    assert mc["raw_p_le_0.001"] == 0


def test_markdown_and_pictures(evaluated) -> None:
    result, out = evaluated
    md = (out / "evaluation.md").read_text()
    assert "SYNTHETIC" in md and "SIMULATED" in md
    assert "| r1 | sensitivity (malignant, n=4) |" in md
    assert "Holm" in md and "Fisher" in md
    assert set(result["figures"]) == {"roc", "calibration", "confusion", "features"}
    for name in result["figures"].values():
        assert f"]({name})" in md
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > MIN_PNG, name


def test_default_threshold_is_per_fold_when_training_wrote_the_column(tmp_path) -> None:
    oof = _write_oof(tmp_path)
    rows = list(csv.reader(open(oof)))
    with open(oof, "w", newline="") as fh:  # add training's per-fold threshold column
        w = csv.writer(fh)
        w.writerow(rows[0] + ["threshold"])
        w.writerows(r + ["0.99"] for r in rows[1:])
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": 0.25}))
    r = E.evaluate(oof, tmp_path / "a", bootstrap=0)
    assert r["threshold"]["value"] == "per-fold"
    assert r["model"]["pooled"]["counts"]["tp"] + r["model"]["pooled"]["counts"]["fp"] == 0


def test_threshold_from_metrics_json_and_argument(tmp_path) -> None:
    oof = _write_oof(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": 0.25, "synthetic": True}))
    r = E.evaluate(oof, tmp_path / "a", bootstrap=0)
    assert r["threshold"]["value"] == 0.25 and r["threshold"]["source"].endswith("metrics.json")
    assert r["model"]["pooled"]["counts"]["fp"] == 3  # b3 0.3, b4 0.4, b5 0.6
    assert r["synthetic"] and not r["readers_simulated"] and r["features"] is None
    r = E.evaluate(oof, tmp_path / "b", threshold=0.75, bootstrap=0)
    assert r["threshold"] == {"value": 0.75, "source": "argument"}
    assert r["model"]["pooled"]["counts"]["tp"] == 2


def test_per_fold_thresholds_from_the_oof_column(tmp_path) -> None:
    path = tmp_path / "oof_predictions.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "fold", "label", "probability", "threshold", "logit"])
        w.writerows([(*r, 0.25 if r[1] == 0 else 0.5, 0.0) for r in OOF])
    readers = _write_readers(tmp_path, simulated=False)
    r = E.evaluate(path, tmp_path / "pf", readers_csv=readers, threshold="per-fold", bootstrap=0)
    pooled = r["model"]["pooled"]
    assert pooled["threshold"] is None and r["threshold"]["value"] == "per-fold"
    assert pooled["counts"] == {"tp": 3, "fn": 1, "tn": 4, "fp": 2}  # b3 (0.3 >= 0.25) flips
    assert [f["threshold"] for f in r["model"]["per_fold"]["folds"]] == [0.25, 0.5]
    r1 = next(x for x in r["readers"] if x["reader"] == "r1")
    assert (r1["mcnemar"]["specificity"]["b"], r1["mcnemar"]["specificity"]["c"]) == (2, 1)
    assert "per-fold" in (tmp_path / "pf" / "evaluation.md").read_text()
    # without the option the column is the default (training's own calls); a number overrides
    assert E.evaluate(path, tmp_path / "d", bootstrap=0)["threshold"]["value"] == "per-fold"
    assert E.evaluate(path, tmp_path / "e", threshold=0.5, bootstrap=0)["threshold"]["value"] == 0.5
    with pytest.raises(ManifestError, match="needs a 'threshold' column"):
        E.evaluate(_write_oof(tmp_path / "d"), tmp_path / "x", threshold="per-fold", bootstrap=0)


def test_plain_readers_and_real_cohort_are_not_labelled(tmp_path) -> None:
    oof = _write_oof(tmp_path)
    manifest = _write_manifest(tmp_path / "real", synthetic=False)
    readers = _write_readers(tmp_path, simulated=False)
    r = E.evaluate(oof, tmp_path / "out", readers_csv=readers, manifest=manifest, bootstrap=0)
    assert not r["synthetic"] and not r["readers_simulated"] and r["labels"] == []
    md = (tmp_path / "out" / "evaluation.md").read_text()
    assert "SYNTHETIC" not in md and "SIMULATED" not in md


def test_bad_inputs_are_clear_errors(tmp_path) -> None:
    oof = _write_oof(tmp_path)
    bad_readers = tmp_path / "bad_readers.csv"
    bad_readers.write_text("case_id,reader,call\nm1,r1,malignant\nnobody,r1,benign\n")
    with pytest.raises(ManifestError, match="line 3: unknown case_id 'nobody'") as err:
        E.evaluate(oof, tmp_path / "o", readers_csv=bad_readers, bootstrap=0)
    assert str(bad_readers) in str(err.value)
    bad_call = tmp_path / "bad_call.csv"
    bad_call.write_text("case_id,reader,call\nm1,r1,maybe\n")
    with pytest.raises(ManifestError, match="line 2: call must be benign or malignant"):
        E.evaluate(oof, tmp_path / "o", readers_csv=bad_call, bootstrap=0)

    no_prob = tmp_path / "no_prob.csv"
    no_prob.write_text("case_id,fold,label\nm1,0,malignant\n")
    with pytest.raises(ManifestError, match="missing column"):
        E.read_oof(no_prob)
    bad_p = tmp_path / "bad_p.csv"
    bad_p.write_text("case_id,fold,label,probability\nm1,0,malignant,0.3\nm2,0,benign,1.7\n")
    with pytest.raises(ManifestError, match="line 3: probability"):
        E.read_oof(bad_p)
    with pytest.raises(ManifestError, match="no such"):
        E.read_oof(tmp_path / "missing.csv")

    rows = [(c, f, "benign" if c == "m1" else lab, p) for c, f, lab, p in OOF]
    (tmp_path / "mm").mkdir()
    mismatch = _write_oof(tmp_path / "mm", rows)
    manifest = _write_manifest(tmp_path / "cohort", synthetic=False)
    with pytest.raises(ManifestError, match="case m1: label malignant in the manifest"):
        E.evaluate(mismatch, tmp_path / "o", manifest=manifest, bootstrap=0)


def test_evaluate_cli_hook(tmp_path, capsys) -> None:
    from spinefx.cli import evaluate as evaluate_command

    oof = _write_oof(tmp_path)
    readers = _write_readers(tmp_path, simulated=True)
    parser = argparse.ArgumentParser(prog="spinefx")
    evaluate_command.register(parser.add_subparsers())
    out = tmp_path / "ev"
    args = parser.parse_args(["evaluate", "--oof", str(oof), "--readers", str(readers),
                              "--out", str(out), "--threshold", "0.5", "--bootstrap", "50"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert str(out / "evaluation.md") in printed and "SIMULATED" in printed
    assert "vs r1: McNemar" in printed
    assert (out / "evaluation.json").is_file()


def test_training_curves_and_report_figures(tmp_path) -> None:
    log = [{"fold": f, "epoch": e, "train_loss": 1 / (e + 1) + f * 0.01,
            "val_loss": 1.2 / (e + 1), "val_auc": 0.5 + 0.04 * e if e else ""}
           for f in range(3) for e in range(8)]
    png = plots.training_curves(log, tmp_path / "curves.png")
    assert png.stat().st_size > MIN_PNG
    oof = _write_oof(tmp_path)
    figs = plots.report_figures(oof, 0.5, tmp_path / "report", synthetic=True)
    assert set(figs) == {"roc", "calibration", "confusion"}
    assert all(p.stat().st_size > MIN_PNG for p in figs.values())
    # a column mapping (e.g. a DataFrame) works as well as a path
    cols = {"label": [r[2] for r in OOF], "probability": [r[3] for r in OOF]}
    figs2 = plots.report_figures(cols, 0.5, tmp_path / "report2")
    assert figs2["roc"].is_file()


def test_evaluation_and_readers_import_nothing_heavy() -> None:
    """The paper's analysis runs without torch: readers needs numpy only, evaluation adds the
    statistics and plotting libraries but never torch (fresh interpreters)."""
    def loaded(statement: str) -> str:
        code = (f"import sys; {statement}; print(','.join(m for m in "
                "('sklearn', 'scipy', 'matplotlib', 'torch', 'torchvision') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, cwd="/")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert loaded("import spinefx.train, spinefx.train.readers") == ""
    assert "torch" not in loaded("import spinefx.train.evaluation").split(",")
