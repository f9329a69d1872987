"""``report.md`` of a training run and its pictures, from what the run wrote.

Inputs are the run's own records: ``metrics.json``'s content, ``oof_predictions.csv`` and the
per-epoch log, so the report says nothing the files do not. Pictures land in ``figures/``.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinefx.runtime.files import atomic_write_text
from spinefx.runtime.provenance import NOT_A_DEVICE

from .oof import read_oof
from .plots import (
    SYNTHETIC_FIGURE_CAPTION,
    confusion_from_calls,
    reliability_plot,
    roc_plot,
    training_curves,
)

FIGURES = (("roc", "ROC curve"), ("calibration", "Reliability diagram"),
           ("confusion", "Confusion matrix"), ("training_curves", "Training curves"))


def write_report(out: Path, manifest: Path, metrics: Mapping,
                 log_rows: Sequence[Mapping]) -> Path:
    """Draw ``out/figures/*.png`` and write ``out/report.md``; return the report's path."""
    draw_figures(out, log_rows, synthetic=bool(metrics["synthetic"]))
    return atomic_write_text(out / "report.md", render_report(manifest, metrics))


def draw_figures(out: Path, log_rows: Sequence[Mapping], synthetic: bool) -> None:
    """ROC, reliability and confusion of ``out/oof_predictions.csv`` (each case called at its
    own fold's threshold) and the training curves."""
    caption = SYNTHETIC_FIGURE_CAPTION if synthetic else None
    tag = " [SYNTHETIC]" if synthetic else ""
    oof = read_oof(out / "oof_predictions.csv")
    calls = (oof.prob >= oof.threshold).astype(np.int64)
    figs = out / "figures"
    with warnings.catch_warnings():  # matplotlib's layout notes are not the reader's concern
        warnings.simplefilter("ignore")
        roc_plot(oof.y, oof.prob, figs / "roc.png", title=f"ROC, out-of-fold{tag}",
                 caption=caption)
        reliability_plot(oof.y, oof.prob, figs / "calibration.png",
                         title=f"Reliability, out-of-fold{tag}", caption=caption)
        confusion_from_calls(oof.y, calls, figs / "confusion.png",
                             title=f"Confusion, each fold at its own threshold{tag}",
                             caption=caption)
        training_curves(log_rows, figs / "training_curves.png",
                        title=f"Training curves per fold{tag}", caption=caption)


def _fmt_ci(m: Mapping | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    v = m["value"]
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        return f"{v:.3f} ({m['ci_low']:.3f}-{m['ci_high']:.3f})"
    return f"{v:.3f}"


def _f3(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _selection_text(metrics: Mapping) -> str:
    patience = metrics["settings"]["patience"]
    rules = sorted({str(f.get("selection")) for f in metrics["per_fold"]})
    selection = {"loss": f"model selection on validation loss, early stopping patience {patience}",
                 "auc": f"model selection on validation AUC, early stopping patience {patience}",
                 "last": "last epoch kept (validation split too small to select on)"}
    return "; ".join(selection.get(r, r) for r in rules)


def _method_lines(manifest: Path, metrics: Mapping) -> list[str]:
    s = metrics["settings"]
    init = f"pretrained: {s['pretrained']}" if s["pretrained"] else "random initialisation"
    return [
        f"- manifest: `{manifest}` ({metrics['n_cases']} cases, {metrics['n_malignant']} "
        f"malignant)",
        f"- {s['folds']}-fold cross-validation, stratified by label and grouped by patient; "
        f"validation split {s['val_fraction']:.0%} of each training fold "
        f"({_selection_text(metrics)}; threshold by {s['threshold_rule']} on validation data "
        f"only)",
        f"- ResNet50 after a 1x1 convolution 6 -> 3, one malignancy logit; {init}",
        f"- {s['epochs']} epochs max, batch {s['batch_size']}, {s['image_size']} px, AdamW lr "
        f"{s['lr']:g} (cosine), weight decay {s['weight_decay']:g}, class-weighted BCE, seed "
        f"{s['seed']}, device {metrics['device']} x {metrics['world_size']}",
        ""]


def _pooled_lines(metrics: Mapping) -> list[str]:
    pooled = metrics["pooled"]
    lines = [
        "## Out-of-fold performance (every case predicted once, by the model that did not see "
        "it)", "",
        "Each test fold is called at the threshold chosen on its own training fold's validation "
        "split. 95% CIs: Wilson (proportions), DeLong (AUC).", "",
        "| metric | value (95% CI) |", "|---|---|"]
    for key in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"):
        lines.append(f"| {key.upper() if key in ('auc', 'ppv', 'npv') else key} | "
                     f"{_fmt_ci(pooled.get(key))} |")
    fold_thresholds = ", ".join(f"{t:.3f}" for t in metrics["fold_thresholds"])
    return lines + [
        f"| Brier score | {_fmt_ci(pooled.get('brier'))} |",
        f"| ECE (10 bins) | {_fmt_ci(pooled.get('ece'))} |", "",
        f"Operating threshold of the final model: **{metrics['threshold']:.3f}** (median of "
        f"the fold thresholds {fold_thresholds}).", ""]


def _per_fold_lines(metrics: Mapping) -> list[str]:
    lines = ["## Per fold", "",
             "| fold | n | malignant | threshold | kept epoch | AUC | accuracy | sensitivity | "
             "specificity |", "|---|---|---|---|---|---|---|---|---|"]
    for r in metrics["per_fold"]:
        lines.append(f"| {r['fold']} | {r['n']} | {r['n_malignant']} | {_f3(r['threshold'])} | "
                     f"{r['best_epoch']} | {_f3(r.get('auc'))} | {_f3(r.get('accuracy'))} | "
                     f"{_f3(r.get('sensitivity'))} | {_f3(r.get('specificity'))} |")
    summ = metrics["per_fold_summary"]
    spread = ", ".join(f"{k} {summ[k]['mean']:.3f} +/- {summ[k]['sd']:.3f}"
                       for k in ("auc", "accuracy", "sensitivity", "specificity")
                       if summ[k]["mean"] is not None and summ[k]["sd"] is not None)
    lines += ["", "Mean +/- SD over folds: " + spread, ""]
    cal = metrics.get("calibration")
    if cal:
        oof = cal["out_of_fold"]
        temps = oof.get("temperatures") or [oof["temperature"]]
        lines += [f"Temperature scaling (fitted per fold on its validation split, median T = "
                  f"{oof['temperature']:.2f}, range {min(temps):.2f}-{max(temps):.2f}): "
                  f"out-of-fold ECE {oof['before']['ece']:.3f} -> "
                  f"{oof['after']['ece']:.3f}, Brier {oof['before']['brier']:.3f} -> "
                  f"{oof['after']['brier']:.3f} (the probabilities in oof_predictions.csv are "
                  f"uncalibrated).", ""]
    return lines


def _final_model_lines(metrics: Mapping) -> list[str]:
    fm = metrics.get("final_model")
    if not fm:
        return []
    return ["## Final model", "",
            f"`model.safetensors` + `config.json`: trained on all {fm['n_cases']} cases "
            f"for {fm['epochs']} epoch(s); threshold {fm['threshold']:.3f}. Its own "
            "performance is estimated by the cross-validation above.", ""]


def render_report(manifest: Path, metrics: Mapping) -> str:
    """The Markdown of ``report.md``."""
    synthetic = bool(metrics["synthetic"])
    lines = ["# spinefx training report", ""]
    if synthetic:
        lines += ["> **SYNTHETIC phantom cohort.** These numbers describe the pipeline on "
                  "procedurally generated phantoms, not diagnostic performance on patients.", ""]
    lines += _method_lines(manifest, metrics) + _pooled_lines(metrics)
    lines += _per_fold_lines(metrics)
    lines += ["## Figures", ""]
    for name, title in FIGURES:
        lines += [f"![{title}](figures/{name}.png)", ""]
    lines += _final_model_lines(metrics)
    lines += ["---", ("*SYNTHETIC phantom cohort.* " if synthetic else "") + NOT_A_DEVICE, ""]
    return "\n".join(lines)
