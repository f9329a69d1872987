"""The out-of-distribution (OOD) check of one model input, numpy only (no torch).

A model exported with a ``features`` output (the pooled layer4 features) and an ``ood`` block in
``model.json`` (fitted by :mod:`spinefx.export.ood` on its training cases) says how far an input
lies from what the network was trained on::

    d = f - mean;  z = components @ d;  r = |d|^2 - |z|^2
    score = sqrt(sum_j z_j^2 / variances_j + r / residual_scale);  flagged = score > threshold

A model without the output or the block (e.g. older exports, the bundled v1 model) gets no
score: :meth:`OodScorer.from_spec` returns the reason instead, and results carry ``ood: null``
with that reason. Never an error: the check adds information, it does not gate prediction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np

METHOD = "gaussian-pca-mahalanobis+residual"
FORMULA = ("d = f - mean; z = components @ d; r = |d|^2 - |z|^2; "
           "score = sqrt(sum_j z_j^2 / variances_j + r / residual_scale); "
           "flagged = score > threshold")
MEANING = ("distance of this input's pooled layer4 features from those of the model's training "
           "cases (Mahalanobis in the top principal directions + scaled residual); above the "
           "threshold the input is unlike the training data")
OOD_WARNING = ("this input is unlike the model's training data; the probability is not "
               "meaningful")
_REQUIRED = ("mean", "components", "variances", "residual_scale", "threshold")


def ood_score(block: Mapping, features: np.ndarray) -> np.ndarray:
    """Scores (N,) of features (N, D) (or one (D,) vector -> (1,)) under ``block``'s Gaussian."""
    f = np.atleast_2d(np.asarray(features, np.float64))
    mean = np.asarray(block["mean"], np.float64)
    components = np.atleast_2d(np.asarray(block["components"], np.float64))
    variances = np.asarray(block["variances"], np.float64)
    d = f - mean
    z = d @ components.T
    residual = np.maximum((d * d).sum(1) - (z * z).sum(1), 0.0)  # >= 0 up to rounding
    squared = (z * z / variances).sum(1) + residual / float(block["residual_scale"])
    return np.sqrt(squared)


@dataclass(frozen=True)
class OodScorer:
    """The ``ood`` block of a model.json, ready to score the ``features`` output."""
    block: dict
    threshold: float
    output: str

    @classmethod
    def from_spec(cls, raw: Mapping, graph_outputs: list[str]) -> tuple[OodScorer | None, str]:
        """(scorer, "") or (None, why there is no OOD score for this model)."""
        outputs = raw.get("outputs") or {}
        name = outputs.get("features") if isinstance(outputs, Mapping) else None
        if not name or name not in graph_outputs:
            return None, ("this model's ONNX graph has no 'features' output (exported before "
                          "the OOD check existed): no out-of-distribution score")
        block = raw.get("ood")
        if not isinstance(block, Mapping):
            return None, "this model's model.json has no 'ood' block: no out-of-distribution score"
        missing = [key for key in _REQUIRED if key not in block]
        if missing:
            return None, f"model.json's 'ood' block lacks {', '.join(missing)}: no score"
        try:
            parsed = {key: np.asarray(block[key], np.float64) for key in _REQUIRED}
        except (TypeError, ValueError):
            return None, "model.json's 'ood' block is malformed: no out-of-distribution score"
        k, dim = np.atleast_2d(parsed["components"]).shape
        if parsed["mean"].shape != (dim,) or parsed["variances"].shape != (k,) \
                or not all(np.isfinite(v).all() for v in parsed.values()) \
                or (parsed["variances"] <= 0).any() or float(parsed["residual_scale"]) <= 0:
            return None, "model.json's 'ood' block is inconsistent: no out-of-distribution score"
        return cls(block=parsed, threshold=float(parsed["threshold"]), output=str(name)), ""

    def scores(self, features: np.ndarray) -> np.ndarray:
        return ood_score(self.block, features)

    def assess(self, features: np.ndarray) -> dict:
        """result.json's ``ood`` for one input's features (D,)."""
        score = float(self.scores(features)[0])
        flagged = not np.isfinite(score) or score > self.threshold
        return {"flagged": bool(flagged), "score": round(score, 4) if np.isfinite(score) else None,
                "threshold": round(self.threshold, 4), "meaning": MEANING}


# ---------------------------------------------------------------------------------------------
# inputs the model never saw, from the headers (no features needed)
# ---------------------------------------------------------------------------------------------
SPACING_FACTOR = 1.5     # "far from the training range": beyond min / 1.5 .. max * 1.5
_FAT_SUPPRESSED = re.compile(r"(?<![A-Z])(FS|FAT ?SAT|FATSAT|SPIR|SPAIR|FAT ?SUP\w*)(?![A-Z])")


def spacing_warning(raw: Mapping, spacing_mm: float, what: str = "T1") -> str | None:
    """A plain-words warning when a series' slice spacing lies far outside the training
    cases' (model.json ``training_data.slice_spacing_mm``; no range recorded: no warning)."""
    recorded = (raw.get("training_data") or {}).get("slice_spacing_mm") \
        if isinstance(raw.get("training_data"), Mapping) else None
    if not isinstance(recorded, Mapping) or not spacing_mm or spacing_mm <= 0:
        return None
    try:
        lo, hi = float(recorded["min"]), float(recorded["max"])
    except (KeyError, TypeError, ValueError):
        return None
    if lo / SPACING_FACTOR <= spacing_mm <= hi * SPACING_FACTOR:
        return None
    return (f"{what} slices are {spacing_mm:.1f} mm apart, far from the {lo:.1f}-{hi:.1f} mm "
            "of the model's training cases: the neighbouring-slice channels show other anatomy "
            "than the model learned from")


def t2_kind(description: str, weighting: str = "") -> str:
    """'STIR', 'T2 fat-suppressed' or 'T2' from a T2 channel's weighting and description."""
    text = (description or "").upper().replace("_", " ").replace("-", " ")
    if weighting == "STIR" or re.search(r"STIR|TIRM", text):
        return "STIR"
    return "T2 fat-suppressed" if _FAT_SUPPRESSED.search(text) else "T2"


def t2_kind_warning(raw: Mapping, kind: str) -> str | None:
    """A warning when the T2 channel's kind is not among the training cases' (model.json
    ``training_data.t2_kinds``). Without that record: a fat-suppressed T2 is warned about here
    and a STIR by ``runtime.service.pair_warnings``."""
    data = raw.get("training_data")
    seen = data.get("t2_kinds") if isinstance(data, Mapping) else None
    if isinstance(seen, Mapping) and seen:
        if kind in seen:
            return None
        return (f"T2 channel is a {kind} series, but the model's training cases had only "
                f"{', '.join(sorted(seen))} as T2: the result may not be meaningful")
    return fat_suppressed_warning("FS") if kind == "T2 fat-suppressed" else None


def fat_suppressed_warning(description: str) -> str | None:
    """The warning for a T2 channel whose description says fat-suppressed (FS, fat sat,
    SPIR/SPAIR), for models that record no training T2 kinds."""
    if t2_kind(description) != "T2 fat-suppressed":
        return None
    return ("T2 channel is a fat-suppressed series (its description says so): the model's "
            "T2 channel expects plain T2-weighted contrast; the result may not be meaningful")


def trained_on_kind(raw: Mapping, kind: str) -> bool:
    """Whether model.json records ``kind`` among its training cases' T2 kinds."""
    data = raw.get("training_data")
    seen = data.get("t2_kinds") if isinstance(data, Mapping) else None
    return isinstance(seen, Mapping) and kind in seen
