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


# ---------------------------------------------------------------------------------------------
# the second signal: is there a vertebral body in the ROI? (the localiser, runtime.segmentation)
# ---------------------------------------------------------------------------------------------
CENTRAL = (0.5, 0.25)    # the ROI's central area: these fractions of its width and height
# (a quarter of the height: a box slipped onto a disc keeps most of the endplates out; a thinner
# band, (0.3, 0.1), caught more disc boxes on 40 phantoms of seed 777 but left 5.5% of the 200
# gate phantoms under 0.05, so the 0.02-quantile threshold fell to 0 and the signal never fired)
CROP_MARGIN = 1.0        # the localiser sees the box plus this many box sides on each side
NEIGHBOURS = 1           # slices either side of the lesion slice segmented too
BODY_PROBABILITY = 0.5   # a pixel is vertebral body above this localiser probability
BODY_MEANING = ("fraction of the ROI's central area (middle {central[0]:.0%} of its width, "
                "{central[1]:.0%} of its height) that the vertebral-body localiser calls "
                "vertebral body, the highest over the lesion slice and its neighbours; below "
                "{threshold:.3f} there is no vertebral body where the box is")


def body_fraction(image: np.ndarray, spacing_mm: tuple[float, float, float], slice_index: int,
                  box: tuple[float, float, float, float], model_dir=None,
                  threads: int = 2) -> float:
    """The fraction of ``box``'s central area (:data:`CENTRAL`) that is vertebral body, the
    highest over the lesion slice and its :data:`NEIGHBOURS` (a box at the body's lateral edge
    still finds it on the next slice). Only those slices, cropped to the box plus
    :data:`CROP_MARGIN` box sides, are segmented: the localiser needs context, not the image."""
    data = np.asarray(image)
    n, rows, cols = data.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = x1 - x0, y1 - y0
    c0 = int(np.clip(np.floor(x0 - CROP_MARGIN * width), 0, cols - 1))
    c1 = int(np.clip(np.ceil(x1 + CROP_MARGIN * width), c0 + 1, cols))
    r0 = int(np.clip(np.floor(y0 - CROP_MARGIN * height), 0, rows - 1))
    r1 = int(np.clip(np.ceil(y1 + CROP_MARGIN * height), r0 + 1, rows))
    k0, k1 = max(0, slice_index - NEIGHBOURS), min(n, slice_index + NEIGHBOURS + 1)
    from .segmentation import segment_bodies

    prob = segment_bodies(data[k0:k1, r0:r1, c0:c1], spacing_mm, model_dir, threads)
    cx, cy = (x0 + x1) / 2 - c0, (y0 + y1) / 2 - r0
    half_w, half_h = max(CENTRAL[0] * width / 2, 0.5), max(CENTRAL[1] * height / 2, 0.5)
    a0, a1 = int(np.clip(round(cx - half_w), 0, c1 - c0 - 1)), int(round(cx + half_w))
    b0, b1 = int(np.clip(round(cy - half_h), 0, r1 - r0 - 1)), int(round(cy + half_h))
    central = prob[:, b0:max(b1, b0 + 1), a0:max(a1, a0 + 1)] > BODY_PROBABILITY
    return float(central.reshape(len(central), -1).mean(1).max())


def body_threshold(raw: Mapping) -> float | None:
    """model.json's ``ood.body_fraction_threshold`` (None: the feature score only)."""
    block = raw.get("ood")
    value = block.get("body_fraction_threshold") if isinstance(block, Mapping) else None
    try:
        return float(value) if value is not None and np.isfinite(float(value)) else None
    except (TypeError, ValueError):
        return None


def combine(feature_ood: dict, fraction: float | None, threshold: float) -> dict:
    """The combined rule: flagged when the feature score is over its threshold OR the body
    fraction is under its own (a fraction that could not be measured fires nothing)."""
    fired = ["feature score"] if feature_ood["flagged"] else []
    if fraction is not None and fraction < threshold:
        fired.append("no vertebral body")
    words = {(): "neither signal fired: the input looks like the training cases",
             ("feature score",): "the feature score is over its threshold (the input is unlike "
                                 "the training cases); a vertebral body is in the box",
             ("no vertebral body",): "no vertebral body in the box's centre (the localiser "
                                     "finds too little), although the feature score is under "
                                     "its threshold",
             ("feature score", "no vertebral body"): "both: the feature score is over its "
                                                     "threshold and there is no vertebral "
                                                     "body in the box's centre"}
    meaning = (f"{MEANING}. Also: {BODY_MEANING.format(central=CENTRAL, threshold=threshold)}. "
               f"Flagged when either fires. This input: {words[tuple(fired)]}")
    return {**feature_ood, "flagged": bool(fired),
            "body_fraction": None if fraction is None else round(fraction, 4),
            "body_fraction_threshold": round(threshold, 4), "fired": fired, "meaning": meaning}


def assess_ood(feature_ood: dict | None, raw: Mapping, t1, slice_index: int,
               box: tuple[float, float, float, float], localiser_dir=None,
               threads: int = 2) -> dict | None:
    """result.json's ``ood`` for one prediction: the feature score's ``feature_ood``
    (:meth:`OodScorer.assess`, None when the model has no OOD check) combined with the body
    fraction of ``box`` on T1 ``slice_index`` (``t1``: the aligned pair's T1 Volume), when
    model.json's ``ood`` block has ``body_fraction_threshold``; else ``feature_ood`` as it is.
    A missing localiser leaves the feature score alone and says so (never an error)."""
    threshold = body_threshold(raw)
    if feature_ood is None or threshold is None or "body_fraction" in feature_ood:
        return feature_ood  # nothing to add, or already combined (the Predictor does it)
    from .segmentation import LocaliserModelError

    spacing = (float(t1.slice_spacing), *t1.pixel_spacing)
    try:
        fraction: float | None = body_fraction(t1.data, spacing, slice_index, box,
                                               localiser_dir, threads)
    except (LocaliserModelError, ValueError) as exc:  # no localiser; implausible geometry
        fraction = None
        feature_ood = {**feature_ood, "body_fraction_note": f"not measured: {exc}"}
    return combine(feature_ood, fraction, threshold)
