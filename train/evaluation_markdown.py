"""``evaluation.md``: the result of :func:`spinefx.train.evaluation.evaluate` as Markdown.

Rendering only: every number comes from the ``evaluation.json`` content passed in (model
metrics, per-fold table, readers and their McNemar tests, imaging features), and the PNGs it
names lie beside the Markdown file.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spinefx.runtime.provenance import NOT_A_DEVICE


def _pct(d: Mapping | None) -> str:
    if not d or d.get("value") is None:
        return "-"
    s = f"{100 * d['value']:.1f}%"
    if d.get("ci_low") is not None:
        s += f" ({100 * d['ci_low']:.1f}-{100 * d['ci_high']:.1f})"
    if "k" in d:
        s += f", {d['k']}/{d['n']}"
    return s


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    if v is None:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
           ["| " + " | ".join(r) + " |" for r in rows]


def _model_lines(r: Mapping) -> list[str]:
    pooled = r["model"]["pooled"]
    thr = r["threshold"]
    thr_s = thr["value"] if isinstance(thr["value"], str) else f"{thr['value']:.3f}"
    lines = [f"Cases: {pooled['n']} ({pooled['n_malignant']} malignant, {pooled['n_benign']} "
             f"benign). Positive class: malignant. Threshold {thr_s} "
             f"({thr['source']}); a case is called malignant when probability >= threshold.",
             "", "## Model (pooled out-of-fold predictions)", ""]
    auc = pooled["auc"]
    auc_s = "-" if auc["value"] is None else \
        f"{auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f}, DeLong)"
    if auc.get("bootstrap"):
        auc_s += f"; bootstrap {auc['bootstrap']['ci_low']:.3f}-{auc['bootstrap']['ci_high']:.3f}"

    def ci(d: Mapping) -> str:
        s = _num(d.get("value"))
        if d.get("ci_low") is not None:
            s += f" ({_num(d['ci_low'])}-{_num(d['ci_high'])}, bootstrap)"
        return s

    rows = [[name, _pct(pooled[key])] for key, name in (
        ("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
        ("ppv", "PPV"), ("npv", "NPV"))]
    rows += [["AUC", auc_s], ["Brier score", ci(pooled["brier"])],
             [f"ECE ({pooled['ece']['n_bins']} equal-width bins)", ci(pooled["ece"])]]
    lines += _table(["metric", "value (95% CI), counts"], rows)
    c = pooled["counts"]
    lines += ["", f"Confusion at the threshold: TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, "
              f"FP {c['fp']}. Proportions: Wilson 95% CI.", ""]

    per = r["model"]["per_fold"]
    lines += ["### Per fold", ""]
    keys = ("accuracy", "sensitivity", "specificity", "auc", "brier", "ece")
    rows = [[str(f["fold"]), str(f["n"]), str(f["n_malignant"]), _num(f["threshold"])] +
            [_num(f[k]) for k in keys] for f in per["folds"]]
    summ = per["summary"]
    rows.append(["**mean ± SD**", "", "", ""] + [
        "-" if summ[k]["mean"] is None else
        f"{summ[k]['mean']:.3f} ± {_num(summ[k]['sd'])}" for k in keys])
    lines += _table(["fold", "n", "malignant", "threshold", *keys], rows) + [""]
    figs = r["figures"]
    for key, caption in (("roc", "ROC curve"), ("calibration", "Reliability diagram"),
                         ("confusion", "Confusion matrix")):
        if key in figs:
            lines += [f"![{caption}]({figs[key]})", ""]
    return lines


def _reader_lines(r: Mapping) -> list[str]:
    if not r["readers"]:
        return []
    lines = ["## Readers" + (" (SIMULATED)" if r["readers_simulated"] else ""), ""]
    rows = [[x["reader"] + (" (simulated)" if x["simulated"] else ""), str(x["n"]),
             _pct(x["metrics"]["accuracy"]), _pct(x["metrics"]["sensitivity"]),
             _pct(x["metrics"]["specificity"])] for x in r["readers"]]
    lines += _table(["reader", "cases", "accuracy", "sensitivity", "specificity"], rows)
    lines += ["", "### Model vs reader on the same cases (exact McNemar)", "",
              "b = model right and reader wrong, c = model wrong and reader right; "
              "two-sided exact binomial test on the discordant pairs. Sensitivity = "
              "malignant cases only, specificity = benign cases only.", ""]
    if r.get("mcnemar_note"):
        lines += [f"**Note:** {r['mcnemar_note']}.", ""]
    rows = []
    for x in r["readers"]:
        model, rd = x["model_same_cases"], x["metrics"]
        for key, mk in (("overall", "accuracy"), ("sensitivity", "sensitivity"),
                        ("specificity", "specificity")):
            t = x["mcnemar"][key]
            rows.append([x["reader"], f"{key} ({t['cases']}, n={t['n']})",
                         _pct({"value": model[mk]["value"]}),
                         _pct({"value": rd[mk]["value"]}), str(t["b"]), str(t["c"]),
                         _p(t["p"])])
    lines += _table(["reader", "comparison", "model", "reader", "b", "c", "p"], rows)
    return lines + [""]


def _feature_lines(r: Mapping) -> list[str]:
    feats = r.get("features")
    if not feats or not feats["rows"]:
        return []
    mc = feats["multiple_comparisons"]
    lines = ["## Imaging features (Fisher's exact test)", "",
             f"{feats['n_cases']} labelled cases from the manifest.", ""]
    rows = [[f["title"], f["leaning"],
             f"{f['malignant_with']}/{f['malignant_n']} "
             f"({_pct({'value': f['malignant_rate']})})",
             f"{f['benign_with']}/{f['benign_n']} ({_pct({'value': f['benign_rate']})})",
             _num(f["odds_ratio"], 2), _p(f["p"]), _p(f["p_bonferroni"]), _p(f["p_holm"])]
            for f in feats["rows"]]
    lines += _table(["feature", "leaning", "malignant", "benign", "odds ratio", "p",
                     "p Bonferroni", "p Holm"], rows)
    lines += ["", f"Multiple comparisons: {mc['note']} Features with p <= 0.001: "
              f"{mc['raw_p_le_0.001']} of {mc['tests']}; below 0.05/{mc['tests']}: "
              f"{mc['raw_p_below_bonferroni_alpha']}; Holm-adjusted p < 0.05: "
              f"{mc['holm_p_below_0.05']}.", ""]
    if "features" in r["figures"]:
        lines += [f"![Imaging features by class]({r['figures']['features']})", ""]
    return lines


def render_markdown(r: Mapping) -> str:
    """The evaluation report as Markdown (tables + the PNGs beside it)."""
    lines = ["# spinefx evaluation" + (" — SYNTHETIC data" if r["synthetic"] else ""), ""]
    for label in r["labels"]:
        lines += [f"> **{label}**", ""]
    lines += _model_lines(r) + _reader_lines(r) + _feature_lines(r)
    if r["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    lines += ["---", NOT_A_DEVICE, ""]
    return "\n".join(lines)
