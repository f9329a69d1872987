"""Report pictures as PNG files: data in, path out.

Each function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global state, no display needed) and returns the PNG's path. ``title`` and
``caption`` let callers add "SYNTHETIC data" / "SIMULATED readers" labels; the caption is
printed under the axes.
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from spinefx.runtime.files import atomic_write_bytes

from .metrics import (
    as_binary,
    auc_delong,
    confusion_counts,
    expected_calibration_error,
    reliability_bins,
)
from .oof import as_oof

DPI = 110
MALIGNANT_COLOUR = "#c0392b"
BENIGN_COLOUR = "#2e86c1"
#: under every training-report picture of synthetic data
SYNTHETIC_FIGURE_CAPTION = "SYNTHETIC data (phantom cohort) - not a clinical result"


def _figure(width: float = 5.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | PathLike, caption: str | None) -> Path:
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, color="#7f0000",
                 wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(out_png, buf.getvalue())


def roc_plot(y_true: Any, prob: Any, out_png: str | PathLike, *,
             readers: Sequence[Mapping] = (), title: str = "ROC curve",
             caption: str | None = None) -> Path:
    """ROC curve with its AUC (DeLong 95% CI) and optional reader operating points.

    ``readers``: ``[{"name", "sensitivity", "specificity"}]``, drawn as markers at
    (1 - specificity, sensitivity).
    """
    y = as_binary(y_true)
    p = np.asarray(prob, dtype=np.float64)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, p)
        auc = auc_delong(y, p)
        ax.plot(fpr, tpr, color="black", lw=2,
                label=f"model AUC {auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})")
    markers = "osD^vP*X"
    for i, r in enumerate(readers):
        if r.get("sensitivity") is None or r.get("specificity") is None:
            continue
        ax.plot(1 - r["specificity"], r["sensitivity"], markers[i % len(markers)], ms=9,
                label=f"{r['name']} ({r['sensitivity']:.2f} / {r['specificity']:.2f})")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 - specificity",
           ylabel="sensitivity (malignant)", title=title, aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_png, caption)


def reliability_plot(y_true: Any, prob: Any, out_png: str | PathLike, *, n_bins: int = 10,
                     title: str = "Reliability diagram", caption: str | None = None) -> Path:
    """Observed malignant rate vs mean predicted probability per equal-width bin + histogram."""
    bins = reliability_bins(y_true, prob, n_bins)
    ece = expected_calibration_error(y_true, prob, n_bins)
    fig = _figure(5.0, 6.0)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    full = [b for b in bins if b["n"]]
    ax.plot([b["mean_probability"] for b in full], [b["observed_rate"] for b in full], "o-",
            color="black", label=f"model (ECE {ece:.3f}, {n_bins} bins)")
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="observed malignant rate", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    width = 1.0 / n_bins
    hist.bar([b["bin_low"] for b in bins], [b["n"] for b in bins], width=width, align="edge",
             color="#999999", edgecolor="black")
    hist.set(xlabel="predicted probability of malignancy", ylabel="cases")
    return _save(fig, out_png, caption)


def confusion_plot(y_true: Any, prob: Any, threshold: float, out_png: str | PathLike, *,
                   title: str | None = None, caption: str | None = None) -> Path:
    """2x2 confusion matrix (rows truth, columns call) at ``prob >= threshold``."""
    y = as_binary(y_true)
    pred = (np.asarray(prob, dtype=np.float64) >= threshold).astype(int)
    return confusion_from_calls(y, pred, out_png,
                                title=title or f"Confusion matrix (threshold {threshold:.3f})",
                                caption=caption)


def confusion_from_calls(y_true: Any, y_pred: Any, out_png: str | PathLike, *,
                         title: str = "Confusion matrix", caption: str | None = None) -> Path:
    """2x2 confusion matrix of hard calls (rows truth, columns call: benign, malignant)."""
    counts = confusion_counts(y_true, y_pred)
    m = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
    names = ("benign", "malignant")
    for t in (0, 1):
        for c in (0, 1):
            share = m[t, c] / m[t].sum() if m[t].sum() else 0.0
            ax.text(c, t, f"{m[t, c]}\n({share:.0%})", ha="center", va="center", fontsize=12,
                    color="white" if m[t, c] > m.max() / 2 else "black")
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set(xlabel="call", ylabel="truth", title=title)
    return _save(fig, out_png, caption)


def feature_bars(rows: Sequence[Mapping], out_png: str | PathLike, *,
                 title: str = "Imaging features by class", caption: str | None = None) -> Path:
    """Horizontal bars: each feature's frequency in malignant and benign cases (* p <= 0.001).

    ``rows``: ``[{"title" (or "key"), "malignant_rate", "benign_rate", "p"}]``.
    """
    rows = list(rows)
    fig = _figure(7.5, 0.35 * max(len(rows), 1) + 1.6)
    ax = fig.add_subplot(1, 1, 1)
    ypos = np.arange(len(rows))[::-1]
    h = 0.38
    mal = [r.get("malignant_rate") or 0.0 for r in rows]
    ben = [r.get("benign_rate") or 0.0 for r in rows]
    ax.barh(ypos + h / 2, mal, height=h, color=MALIGNANT_COLOUR, label="malignant")
    ax.barh(ypos - h / 2, ben, height=h, color=BENIGN_COLOUR, label="benign")
    labels = [f"{r.get('title') or r.get('key')}" + (" *" if (r.get("p") is not None and
                                                              r["p"] <= 0.001) else "")
              for r in rows]
    ax.set_yticks(ypos, labels, fontsize=8)
    ax.set(xlim=(0, 1), xlabel="share of cases with the feature", title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="* Fisher p <= 0.001", title_fontsize=7)
    return _save(fig, out_png, caption)


def _fold_key(fold: Any) -> tuple:
    """Folds in numeric order (0, 1, ..., 10) even when they arrive as strings."""
    try:
        return (0, float(fold), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(fold))


def training_curves(log_rows: Iterable[Mapping], out_png: str | PathLike, *,
                    title: str = "Training curves", caption: str | None = None) -> Path:
    """Per-fold loss (train solid, validation dashed) and validation AUC vs epoch.

    ``log_rows``: ``[{"fold", "epoch", "train_loss", "val_loss", "val_auc"}]`` (missing or
    empty values are skipped). One colour per fold.
    """
    by_fold: dict[Any, list[Mapping]] = {}
    for r in log_rows:
        by_fold.setdefault(r.get("fold"), []).append(r)
    fig = _figure(9.0, 4.0)
    ax_loss, ax_auc = fig.subplots(1, 2)

    def series(rows: list[Mapping], key: str) -> tuple[list[float], list[float]]:
        pts = []
        for r in rows:
            v = r.get(key)
            if v is None or v == "":
                continue
            v = float(v)
            if np.isfinite(v):
                pts.append((float(r["epoch"]), v))
        pts.sort()
        return [e for e, _ in pts], [v for _, v in pts]

    colours = [f"C{i % 10}" for i in range(len(by_fold))]
    ordered = sorted(by_fold.items(), key=lambda kv: _fold_key(kv[0]))
    for colour, (fold, rows) in zip(colours, ordered):
        ax_loss.plot(*series(rows, "train_loss"), "-", color=colour, lw=1.2, label=f"fold {fold}")
        ax_loss.plot(*series(rows, "val_loss"), "--", color=colour, lw=1.2)
        ax_auc.plot(*series(rows, "val_auc"), "-o", color=colour, ms=3, lw=1.2,
                    label=f"fold {fold}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (solid train, dashed validation)")
    ax_auc.set(xlabel="epoch", ylabel="validation AUC", ylim=(0, 1.02), title="validation AUC")
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
    if len(by_fold) <= 10:
        ax_auc.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return _save(fig, out_png, caption)


def report_figures(oof: Any, threshold: float, out_dir: str | PathLike, *,
                   synthetic: bool = False, n_bins: int = 10) -> dict[str, Path]:
    """ROC, reliability diagram and confusion matrix of out-of-fold predictions.

    ``oof``: a path to ``oof_predictions.csv``, an
    :class:`~spinefx.train.oof.OOFPredictions`, a mapping of columns (``label``,
    ``probability``; a pandas DataFrame works) or a list of row dicts. Writes ``roc.png``,
    ``calibration.png`` and ``confusion.png`` into ``out_dir`` and returns
    ``{"roc", "calibration", "confusion"}`` -> path.
    """
    data = as_oof(oof)
    out = Path(out_dir)
    caption = SYNTHETIC_FIGURE_CAPTION if synthetic else None
    tag = " [SYNTHETIC]" if synthetic else ""
    return {
        "roc": roc_plot(data.y, data.prob, out / "roc.png",
                        title=f"ROC, out-of-fold{tag}", caption=caption),
        "calibration": reliability_plot(data.y, data.prob, out / "calibration.png",
                                        n_bins=n_bins, title=f"Reliability{tag}",
                                        caption=caption),
        "confusion": confusion_plot(data.y, data.prob, threshold, out / "confusion.png",
                                    title=f"Confusion at threshold {threshold:.3f}{tag}",
                                    caption=caption),
    }
