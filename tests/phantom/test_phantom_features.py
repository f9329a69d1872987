"""The class-conditional feature table and its draw (no images: fast)."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.phantom import PROBABILITIES, draw_features, feature_probabilities
from spinefx.phantom.appearance import EXCLUSIVE, IMPLIES, probability_table_markdown
from spinefx.runtime.features import FEATURE_KEYS, FEATURES_BY_KEY


def _rates(label: str, n: int = 400, difficulty: float = 1.0) -> dict[str, float]:
    rng = np.random.default_rng(123)
    draws = [draw_features(rng, label, difficulty) for _ in range(n)]
    return {k: float(np.mean([d[k] for d in draws])) for k in FEATURE_KEYS}


def test_table_covers_the_15_features_in_order_and_leans_the_documented_way() -> None:
    assert tuple(PROBABILITIES) == FEATURE_KEYS
    for key, (p_benign, p_malignant) in PROBABILITIES.items():
        assert 0 < p_benign < 1 and 0 < p_malignant < 1, key  # overlap: never certain
        if FEATURES_BY_KEY[key].leaning == "malignant":
            assert p_malignant > p_benign, key
        else:
            assert p_benign > p_malignant, key
    assert probability_table_markdown().count("\n") == 16


def test_draws_differ_by_class_as_the_table_says() -> None:
    benign, malignant = _rates("benign"), _rates("malignant")
    for key in FEATURE_KEYS:
        if FEATURES_BY_KEY[key].leaning == "malignant":
            assert malignant[key] > benign[key], key
        else:
            assert benign[key] > malignant[key], key
        # empirical rates near the documented marginals (400 draws: sd <= 0.025)
        assert abs(benign[key] - PROBABILITIES[key][0]) < 0.09, key
        assert abs(malignant[key] - PROBABILITIES[key][1]) < 0.09, key


def test_atypical_cases_exist_in_both_classes() -> None:
    rng = np.random.default_rng(5)
    benign = [draw_features(rng, "benign") for _ in range(200)]
    malignant = [draw_features(rng, "malignant") for _ in range(200)]
    assert any(d["diffuse_low_t1"] and d["convex_posterior_border"] for d in benign)
    assert any(d["spared_marrow"] and d["low_signal_band"] for d in malignant)


def test_joint_rules_hold_on_every_draw() -> None:
    rng = np.random.default_rng(9)
    for label in ("benign", "malignant"):
        for _ in range(300):
            d = draw_features(rng, label)
            assert set(d.values()) <= {0, 1}
            for a, b in EXCLUSIVE:
                assert not (d[a] and d[b])
            for sub, sup in IMPLIES:
                assert d[sup] >= d[sub]


def test_difficulty_moves_the_classes_together() -> None:
    for key in FEATURE_KEYS:
        easy = [feature_probabilities(c, 0.0)[key] for c in ("benign", "malignant")]
        table = [feature_probabilities(c, 1.0)[key] for c in ("benign", "malignant")]
        hard = [feature_probabilities(c, 2.0)[key] for c in ("benign", "malignant")]
        assert abs(easy[0] - easy[1]) >= abs(table[0] - table[1]) - 1e-9
        assert hard[0] == pytest.approx(hard[1])
    table_p = PROBABILITIES["diffuse_low_t1"][1]
    assert feature_probabilities("malignant", 1.0)["diffuse_low_t1"] == table_p
    with pytest.raises(ValueError):
        feature_probabilities("benign", -1)
    with pytest.raises(ValueError):
        feature_probabilities("maybe", 1)


def test_overrides_force_flags_and_keep_the_rest() -> None:
    base = draw_features(np.random.default_rng(3), "benign")
    forced = draw_features(np.random.default_rng(3), "benign",
                           overrides={"fluid_sign": 1 - base["fluid_sign"]})
    assert forced["fluid_sign"] != base["fluid_sign"]
    assert {k: v for k, v in forced.items() if k != "fluid_sign"} == \
        {k: v for k, v in base.items() if k != "fluid_sign"}
    d = draw_features(np.random.default_rng(3), "benign",
                      overrides={"diffuse_low_t1": 1, "encasing_epidural_mass": 1})
    assert d["spared_marrow"] == 0 and d["epidural_mass"] == 1
    with pytest.raises(ValueError):
        draw_features(np.random.default_rng(3), "benign",
                      overrides={"diffuse_low_t1": 1, "spared_marrow": 1})
    with pytest.raises(KeyError):
        draw_features(np.random.default_rng(3), "benign", overrides={"not_a_feature": 1})
