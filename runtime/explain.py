"""The plain words of one result: what the threshold means, what it gives (sensitivity and
specificity with their CIs from ``model.json``), how far the probability can be taken at face
value (calibration), the out-of-distribution verdict and what the Grad-CAM map means.

Only numbers ``model.json`` holds are quoted. Where it has a proportion's counts but no interval
the Wilson interval is computed from them; where it has neither, the words say what is missing
(never an invented number). The demo shows these words and its API adds them to its JSON as
``explanation``; ``spinefx predict``'s result.json can carry the same object.
"""
from __future__ import annotations

from typing import Any, Mapping

from .stats import wilson_ci

MAP_MEANING = (
    "The map (Grad-CAM of the last convolutional block) marks the parts of the box that pushed "
    "the score the most. It is normalised per case: it shows where the model looked, not how "
    "sure it is, and it is bright somewhere even when the probability is low. It is not a "
    "segmentation of tumour or fracture and does not prove the model used the right reason; "
    "the model never sees anything outside the box.")
#: which count of the confusion table is the numerator and which the rest of the denominator
_COUNTS = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp")}


def evaluation_block(metrics: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The block of ``metrics`` holding the operating point (a validation or cross-validation
    sub-block, else the top level) and the words for where it was measured."""
    for key in ("cross_validation", "validation", "held_out", "test"):
        block = metrics.get(key)
        if isinstance(block, Mapping):
            where = str(metrics.get("source") or metrics.get("mode") or key.replace("_", " "))
            return block, where
    return metrics, str(metrics.get("source") or metrics.get("mode") or "")


def proportion_of(block: Mapping[str, Any], name: str,
                  confidence: float = 0.95) -> dict[str, Any] | None:
    """``{"value", "ci_low", "ci_high", "k", "n", "ci_from"}`` for sensitivity/specificity
    from ``block``: as stored; the Wilson interval of its counts where it has counts but no
    interval; None where neither the value nor the counts are there."""
    item = block.get(name)
    stored = item if isinstance(item, Mapping) else ({"value": item}
                                                     if isinstance(item, (int, float)) else {})
    k, n = stored.get("k"), stored.get("n")
    counts = block.get("counts")
    if (k is None or n is None) and isinstance(counts, Mapping):
        hit, miss = _COUNTS[name]
        if isinstance(counts.get(hit), int) and isinstance(counts.get(miss), int):
            k, n = counts[hit], counts[hit] + counts[miss]
    value = stored.get("value")
    if value is None and k is not None and n:
        value = k / n
    if value is None:
        return None
    out = {"value": float(value), "ci_low": stored.get("ci_low"),
           "ci_high": stored.get("ci_high"), "k": k, "n": n, "ci_from": "model.json"}
    if out["ci_low"] is None and k is not None and n:
        out["ci_low"], out["ci_high"] = wilson_ci(int(k), int(n), confidence)
        out["ci_from"] = "Wilson interval computed from model.json's counts"
    elif out["ci_low"] is None:
        out["ci_from"] = "none: model.json has neither an interval nor the counts"
    return out


def _percent(p: dict[str, Any]) -> str:
    """"86% (95% CI 77-92%; 74 of 86)", with what is missing said instead."""
    inside = []
    if p["ci_low"] is not None and p["ci_high"] is not None:
        inside.append(f"95% CI {100 * p['ci_low']:.0f}-{100 * p['ci_high']:.0f}%")
    else:
        inside.append("no confidence interval: model.json has no interval or counts")
    if p["k"] is not None and p["n"]:
        inside.append(f"{p['k']} of {p['n']}")
    return f"{100 * p['value']:.0f}% ({'; '.join(inside)})"


def operating_point(raw: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), Mapping) else {}
    block, where = evaluation_block(metrics or {})
    sens, spec = proportion_of(block, "sensitivity"), proportion_of(block, "specificity")
    missing = [name for name, p in (("sensitivity", sens), ("specificity", spec)) if p is None]
    parts = []
    if sens is not None:
        parts.append(f"finds {_percent(sens)} of the malignant fractures (sensitivity)")
    if spec is not None:
        parts.append(f"calls {_percent(spec)} of the benign fractures benign "
                     "(specificity)")
    if parts:
        statement = (f"At this threshold the model {' and '.join(parts)}"
                     + (f", measured on: {where}" if where else "") + ".")
    else:
        statement = ""
    if missing:
        statement += (f" model.json records no {' or '.join(missing)} for this threshold, so "
                      "what the threshold gives is not known.")
    return {"sensitivity": sens, "specificity": spec, "evaluated_on": where or None,
            "missing": missing, "statement": statement.strip()}


def calibration(raw: Mapping[str, Any]) -> dict[str, Any]:
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), Mapping) else {}
    block, _ = evaluation_block(metrics or {})

    def value(name: str) -> float | None:
        item = block.get(name)
        item = item.get("value") if isinstance(item, Mapping) else item
        return float(item) if isinstance(item, (int, float)) else None

    ece, brier = value("ece"), value("brier")
    if ece is None and brier is None:
        statement = ("model.json has no calibration figures (ECE or Brier score): read the "
                     "probability as a ranking score, not as a frequency.")
    else:
        known = [f"expected calibration error {ece:.3f}" if ece is not None else "",
                 f"Brier score {brier:.3f}" if brier is not None else ""]
        statement = (f"Calibration on the same cases: {', '.join(k for k in known if k)}. "
                     + (f"Among cases given a similar probability, the observed rate of "
                        f"malignancy differs from it by about {100 * ece:.0f} percentage points "
                        "on average; " if ece is not None else "")
                     + "the probability is a model score, not a patient's risk.")
    return {"ece": ece, "brier": brier, "statement": statement}


def ood_verdict(ood: Mapping[str, Any] | None, reason: str = "") -> dict[str, Any]:
    if not ood:
        return {"verdict": "not checked", "flagged": None,
                "statement": "No out-of-distribution check for this model"
                             + (f" ({reason})" if reason else "") + ": nothing says whether the "
                             "input resembles its training data."}
    if ood.get("flagged"):
        fired = ", ".join(ood.get("fired") or ["feature score"])
        return {"verdict": "out of distribution", "flagged": True,
                "statement": f"This input is unlike the model's training data ({fired}): the "
                             "probability is not meaningful here."}
    return {"verdict": "in distribution", "flagged": False,
            "statement": "The input resembles the model's training data by its features"
                         + (" and a vertebral body fills the box" if "body_fraction" in ood
                            else "") + "; this does not make the probability correct."}


def explain(probability: float, threshold: float, label: str, raw: Mapping[str, Any],
            ood: Mapping[str, Any] | None = None, ood_reason: str = "",
            synthetic_model: bool = False) -> dict[str, Any]:
    """The ``explanation`` object of one result (see the module doc)."""
    side = "at or above" if probability >= threshold else "below"
    source = raw.get("threshold_source")
    meaning = (f"P(malignant) = {probability:.2f} is {side} the operating threshold "
               f"{threshold:.2f}, so the call is {label}. The threshold is fixed with the model"
               + (f" ({source})" if source else "") + "; it trades missed malignant fractures "
               "against benign ones called malignant.")
    out = {"threshold": threshold, "threshold_meaning": meaning,
           "operating_point": operating_point(raw, threshold),
           "calibration": calibration(raw), "ood": ood_verdict(ood, ood_reason),
           "map": MAP_MEANING, "synthetic_model": synthetic_model}
    if synthetic_model:
        out["synthetic_note"] = ("The model was trained on SYNTHETIC phantoms: these figures "
                                 "describe phantoms, not patients.")
    return out


def explain_prediction(prediction: Any, raw: Mapping[str, Any],
                       synthetic_model: bool) -> dict[str, Any]:
    """:func:`explain` of a :class:`~spinefx.runtime.inference.Prediction`."""
    return explain(float(prediction.probability), float(prediction.threshold),
                   str(prediction.label), raw, prediction.ood,
                   getattr(prediction, "ood_reason", ""), synthetic_model)
