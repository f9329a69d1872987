"""In-memory rendering: shapes, masks, box, 3-D extent, visibility of every feature.

At the default (full) variation: the acquisition is randomised (phantom v2), so shapes and
spacings are checked against their ranges and the box in millimetres, not v1's fixed 256 px.
"""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.phantom import render_case
from spinefx.phantom.physics import MAX_SLICES
from spinefx.runtime.features import FEATURE_KEYS


@pytest.fixture(scope="module")
def cases():
    return [render_case(seed, label) for seed in (11, 12, 13) for label in ("benign", "malignant")]


def test_shapes_types_and_value_range(cases) -> None:
    for c in cases:
        n, rows, cols = c.t1.shape
        assert 5 <= n <= MAX_SLICES and rows == cols and 192 <= rows <= 448
        assert c.t1.dtype == c.t2.dtype == np.float32
        assert c.t2.shape[0] == n
        assert c.lesion_mask.shape == c.vertebra_mask.shape == c.t1.shape
        assert c.lesion_mask.dtype == c.vertebra_mask.dtype == np.uint8
        for vol in (c.t1, c.t2):
            assert vol.min() >= 0 and vol.max() <= 4095
            assert np.array_equal(vol, np.rint(vol))  # integer-valued, as written to DICOM
        assert 0.5 <= c.pixel_spacing[0] <= 1.5 and 1.0 <= c.slice_thickness <= 5.0
        assert 220 <= rows * c.pixel_spacing[0] <= 380  # field of view, mm
        assert c.spacing_between_slices >= c.slice_thickness  # a gap of 0 mm or more
        assert set(c.features) == set(FEATURE_KEYS) and set(c.features.values()) <= {0, 1}
        assert c.level in ("T11", "T12", "L1", "L2", "L3", "L4")
        assert np.all(np.diff(c.slice_x) < 0)  # loaded order: patient left (largest x) first


def test_box_is_inside_the_image_and_holds_the_lesion(cases) -> None:
    for c in cases:
        x0, y0, x1, y1 = c.box
        assert 0 <= x0 < x1 <= c.t1.shape[2] and 0 <= y0 < y1 <= c.t1.shape[1]
        ps = c.pixel_spacing[0]
        assert 15 <= (x1 - x0) * ps <= 55 and 9 <= (y1 - y0) * ps <= 50  # a body, in mm
        lesion = c.lesion_mask[c.slice]
        assert lesion.sum() > 20
        outside = lesion.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.sum() == 0
        assert np.all(c.lesion_mask <= c.vertebra_mask)
        assert 1 <= c.slice <= c.n_slices - 2  # both neighbours exist


def test_neighbouring_slices_differ_and_the_lesion_spans_several(cases) -> None:
    for c in cases:
        i = c.slice
        for vol in (c.t1, c.t2):
            assert np.abs(vol[i] - vol[i - 1]).mean() > 5
            assert np.abs(vol[i] - vol[i + 1]).mean() > 5
        per_slice = c.lesion_mask.reshape(c.n_slices, -1).sum(axis=1)
        assert (per_slice > 0).sum() > 1
        assert per_slice[i] > 0


def test_spared_marrow_stays_brighter_than_the_lesion_on_t1() -> None:
    for seed in (41, 42):
        c = render_case(seed, "benign", spared_marrow=1)
        i = c.slice
        lesion = c.lesion_mask[i].astype(bool)
        spared = c.vertebra_mask[i].astype(bool) & ~lesion  # spared marrow (and cortex)
        assert np.percentile(c.t1[i][spared], 75) > 1.4 * c.t1[i][lesion].mean()


def test_same_seed_same_case_other_seed_other_case() -> None:
    a, b = render_case(7, "malignant"), render_case(7, "malignant")
    assert np.array_equal(a.t1, b.t1) and np.array_equal(a.t2, b.t2)
    assert a.box == b.box and a.features == b.features
    c = render_case(8, "malignant")
    assert a.t1.shape != c.t1.shape or not np.array_equal(a.t1, c.t1)


def test_diffuse_low_t1_darkens_the_whole_body() -> None:
    ratios = []
    for seed in (20, 21, 22):
        for label in ("benign", "malignant"):
            on = render_case(seed, label, diffuse_low_t1=1)
            off = render_case(seed, label, diffuse_low_t1=0)
            assert on.box[:2] == off.box[:2]  # same anatomy: only the feature changed
            body = (on.vertebra_mask[on.slice] & off.vertebra_mask[off.slice]).astype(bool)
            ratios.append(on.t1[on.slice][body].mean() / off.t1[off.slice][body].mean())
    assert max(ratios) < 0.95 and np.mean(ratios) < 0.85, ratios


def test_heterogeneous_high_t2_brightens_the_lesion_on_t2() -> None:
    on = render_case(22, "malignant", heterogeneous_high_t2=1, diffuse_low_t1=1)
    off = render_case(22, "malignant", heterogeneous_high_t2=0, diffuse_low_t1=1)
    body = on.masks("t2")["vertebra"][on.slice].astype(bool)  # T2 may have its own grid
    assert on.t2[on.slice][body].mean() > 1.15 * off.t2[off.slice][body].mean()


@pytest.mark.parametrize("key", FEATURE_KEYS)
def test_every_feature_is_visible(key: str) -> None:
    """Forcing a feature on vs off (same seed) changes the images near the lesion."""
    label = "malignant" if key in ("spared_marrow", "low_signal_band") else "benign"
    on = render_case(31, label, **{key: 1})
    off = render_case(31, label, **{key: 0})
    # per series: T2 may have its own grid
    changed = [np.abs(on.t1 - off.t1) > 100, np.abs(on.t2 - off.t2) > 100]
    total = sum(int(c.sum()) for c in changed)
    assert total > 30, f"{key}: {total} pixels changed"
    if key == "posterior_element_signal":  # para-sagittal only: not on the lesion's mid slice
        assert sum(int(c[on.slice].sum()) for c in changed) == 0


def test_t2_on_its_own_grid_covers_the_same_field_of_view() -> None:
    c = render_case(5, "benign", t2_scale=1.2)
    assert c.t2.shape[1:] != c.t1.shape[1:] and not c.t2_same_grid
    fov1 = c.t1.shape[1] * c.pixel_spacing[0]
    fov2 = c.t2.shape[1] * c.t2_pixel_spacing[0]
    assert fov1 == pytest.approx(fov2, abs=0.01)
    same = render_case(5, "benign", t2_scale=1.0)
    assert same.t2_same_grid


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        render_case(1, "unknown")
    with pytest.raises(TypeError):
        render_case(1, "benign", not_a_setting=3)
    with pytest.raises(ValueError):
        render_case(1, "benign", level="C5")
