"""Class-conditional drawing of the 15 imaging features.

Each phantom case draws the 15 features of :mod:`spinefx.runtime.features` from the table
below. The probabilities **overlap** on purpose: a benign fracture may show a convex posterior
border, a metastasis may keep spared marrow, so atypical cases of both classes exist and no
single feature decides the label. At ``difficulty=1`` (the default) the draw uses the table as
written:

| feature                  | leaning   | P(benign) | P(malignant) |
|--------------------------|-----------|-----------|--------------|
| convex_posterior_border  | malignant | 0.10      | 0.70         |
| posterior_element_signal | malignant | 0.08      | 0.55         |
| epidural_mass            | malignant | 0.10      | 0.60         |
| encasing_epidural_mass   | malignant | 0.02      | 0.25         |
| paraspinal_mass          | malignant | 0.08      | 0.45         |
| skip_lesions             | malignant | 0.10      | 0.55         |
| diffuse_low_t1           | malignant | 0.20      | 0.75         |
| heterogeneous_high_t2    | malignant | 0.25      | 0.65         |
| low_signal_band          | benign    | 0.60      | 0.10         |
| spared_marrow            | benign    | 0.65      | 0.15         |
| retropulsed_fragment     | benign    | 0.35      | 0.08         |
| multiple_fractures       | benign    | 0.45      | 0.15         |
| fluid_sign               | benign    | 0.35      | 0.05         |
| vacuum_cleft             | benign    | 0.20      | 0.02         |
| smooth_paraspinal        | benign    | 0.40      | 0.15         |

The numbers are the *marginal* probabilities of each flag; three groups are drawn jointly so
that the flags stay anatomically consistent and the marginals stay exact:

- marrow pattern: ``diffuse_low_t1`` (whole body dark) and ``spared_marrow`` exclude each
  other; neither = a large patchy lesion with small irregular marrow remnants.
- epidural: ``encasing_epidural_mass`` implies ``epidural_mass`` (it is its encasing form).
- paraspinal: ``paraspinal_mass`` (focal mass) and ``smooth_paraspinal`` (thin smooth rim)
  exclude each other.

Difficulty: with ``m = (P(benign) + P(malignant)) / 2`` each class probability becomes
``m + (p - m) * max(0, 2 - difficulty)``, clipped to [0, 1]. So ``difficulty=0`` doubles the
class gap (easy, nearly deterministic features), ``1`` is the table, ``2`` or more gives both
classes the same feature distribution, and then one distribution of cases: the 15 flags are
the **only** class-dependent draws of the phantom (see :func:`class_gap`). The lesion's own
parameters (its signal included) depend on the flags, never on the label, and the benign
confounders are drawn from :data:`spinefx.phantom.confounders.CONFOUNDER_RATES`, identical for
both classes; ``tests/phantom/test_phantom_table.py`` checks both structurally and by the draws.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from spinefx.runtime.features import FEATURE_KEYS, FEATURES_BY_KEY

# key -> (P(feature | benign), P(feature | malignant)) at difficulty 1.
PROBABILITIES: dict[str, tuple[float, float]] = {
    "convex_posterior_border": (0.10, 0.70),
    "posterior_element_signal": (0.08, 0.55),
    "epidural_mass": (0.10, 0.60),
    "encasing_epidural_mass": (0.02, 0.25),
    "paraspinal_mass": (0.08, 0.45),
    "skip_lesions": (0.10, 0.55),
    "diffuse_low_t1": (0.20, 0.75),
    "heterogeneous_high_t2": (0.25, 0.65),
    "low_signal_band": (0.60, 0.10),
    "spared_marrow": (0.65, 0.15),
    "retropulsed_fragment": (0.35, 0.08),
    "multiple_fractures": (0.45, 0.15),
    "fluid_sign": (0.35, 0.05),
    "vacuum_cleft": (0.20, 0.02),
    "smooth_paraspinal": (0.40, 0.15),
}
assert tuple(PROBABILITIES) == FEATURE_KEYS

LABELS = ("benign", "malignant")
# Pairs that cannot both be 1 (drawn as one categorical variable).
EXCLUSIVE = (("diffuse_low_t1", "spared_marrow"), ("paraspinal_mass", "smooth_paraspinal"))
# (subset, superset): the subset flag implies the superset flag.
IMPLIES = (("encasing_epidural_mass", "epidural_mass"),)


def class_gap(difficulty: float) -> float:
    """Factor on the class difference of the feature table (the only class difference):
    2 at difficulty 0, 1 at 1, 0 from 2 on."""
    if not np.isfinite(difficulty) or difficulty < 0:
        raise ValueError(f"difficulty must be a finite number >= 0, got {difficulty!r}")
    return max(0.0, 2.0 - float(difficulty))


def feature_probabilities(label: str, difficulty: float = 1.0) -> dict[str, float]:
    """Marginal probability of each feature for one class at a given difficulty."""
    _check_label(label)
    gap = class_gap(difficulty)
    column = LABELS.index(label)
    probs = {}
    for key, pair in PROBABILITIES.items():
        mid = (pair[0] + pair[1]) / 2
        probs[key] = float(np.clip(mid + (pair[column] - mid) * gap, 0.0, 1.0))
    # Keep the joint groups drawable: exclusive pairs must sum to <= 1, subsets <= supersets.
    for a, b in EXCLUSIVE:
        total = probs[a] + probs[b]
        if total > 1.0:
            probs[a], probs[b] = probs[a] / total, probs[b] / total
    for sub, sup in IMPLIES:
        probs[sub] = min(probs[sub], probs[sup])
    return probs


def draw_features(rng: np.random.Generator, label: str, difficulty: float = 1.0,
                  overrides: Mapping[str, int | bool] | None = None) -> dict[str, int]:
    """Draw the 15 flags for one case; ``overrides`` force chosen flags to 0/1.

    Always consumes the same random numbers whatever the overrides, so forcing one feature
    leaves every other flag of the same seed unchanged (unless the consistency rules in the
    module docstring require otherwise, e.g. forcing ``diffuse_low_t1`` clears
    ``spared_marrow``).
    """
    probs = feature_probabilities(label, difficulty)
    u = rng.random(len(FEATURE_KEYS))
    draws = dict(zip(FEATURE_KEYS, u))
    flags: dict[str, int] = {}
    for a, b in EXCLUSIVE:  # one uniform number -> three outcomes: a, b or neither
        x = draws[a]
        flags[a] = int(x < probs[a])
        flags[b] = int(probs[a] <= x < probs[a] + probs[b])
    for sub, sup in IMPLIES:  # one uniform number -> none / superset only / both
        x = draws[sup]
        flags[sub] = int(x < probs[sub])
        flags[sup] = int(x < probs[sup])
    for key in FEATURE_KEYS:
        flags.setdefault(key, int(draws[key] < probs[key]))
    if overrides:
        flags = apply_overrides(flags, overrides)
    return {key: flags[key] for key in FEATURE_KEYS}


def apply_overrides(flags: Mapping[str, int],
                    overrides: Mapping[str, int | bool]) -> dict[str, int]:
    """Force flags, then restore consistency; contradictory forced values are an error."""
    forced = {}
    for key, value in overrides.items():
        if key not in FEATURE_KEYS:
            raise KeyError(f"unknown feature {key!r}; known: {', '.join(FEATURE_KEYS)}")
        if value not in (0, 1, True, False):
            raise ValueError(f"feature {key!r} must be 0/1 or a bool, got {value!r}")
        forced[key] = int(value)
    out = dict(flags)
    out.update(forced)
    for a, b in EXCLUSIVE:
        if forced.get(a) == 1 and forced.get(b) == 1:
            raise ValueError(f"{a} and {b} cannot both be forced on")
        if out[a] and out[b]:  # the forced one wins
            out[b if a in forced else a] = 0
    for sub, sup in IMPLIES:
        if forced.get(sub) == 1 and forced.get(sup) == 0:
            raise ValueError(f"{sub}=1 implies {sup}=1")
        if out[sub] and not out[sup]:
            if sup in forced:
                out[sub] = 0
            else:
                out[sup] = 1
    return out


def probability_table_markdown() -> str:
    """The table above, generated from :data:`PROBABILITIES` (for the README and cohort.json)."""
    lines = ["| feature | leaning | P(benign) | P(malignant) |", "|---|---|---|---|"]
    for key, (pb, pm) in PROBABILITIES.items():
        lines.append(f"| {key} | {FEATURES_BY_KEY[key].leaning} | {pb:.2f} | {pm:.2f} |")
    return "\n".join(lines)


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be 'benign' or 'malignant', got {label!r}")
