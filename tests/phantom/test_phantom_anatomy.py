"""Phantom v2 anatomy: real lumbar shape statistics, posture and per-level shape variation."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.phantom import real_anatomy as ra
from spinefx.phantom.anatomy import Canvas, Grid
from spinefx.phantom.fields import lattice
from spinefx.phantom.spine import (
    DEGENERATE_RATES,
    LORDOSIS_DEG,
    NARROWING,
    draw_spine,
)

FOV = (320.0, 320.0)
LUMBAR = ["L1", "L2", "L3", "L4", "L5"]


@pytest.fixture
def real_env(real_spine, monkeypatch) -> tuple[ra.RealShape, ...]:
    """The real subjects (skips cleanly through ``real_spine`` without ../shared)."""
    monkeypatch.setenv(ra.ENV_VAR, str(real_spine))
    shapes = ra.real_shapes()
    if not shapes:
        pytest.skip(f"no vb3 subject under {real_spine}")
    return shapes


@pytest.fixture
def no_real(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ra.ENV_VAR, str(tmp_path))  # an empty folder: procedural only


def _theta_at(spec, name: str) -> float:
    lv = spec.levels
    return float(np.interp(lv.u_mid[lv.index(name)], spec.curve_u, spec.curve_theta))


# --- real shape extraction ----------------------------------------------------------------
def _box_volume(heights, gap: float, depth: int, width: int) -> np.ndarray:
    """Label volume of upright boxes (row = superior->inferior, column = anterior->posterior)."""
    vol = np.zeros((200, 80, 60), np.uint8)
    row = 10
    for label, h in enumerate(heights, start=1):
        vol[row:row + h, 20:20 + depth, 10:10 + width] = label
        row += h + gap
    return vol


def test_measure_recovers_known_boxes():
    vol = _box_volume([25, 26, 27, 27, 26], gap=10, depth=35, width=40)
    shape = ra.measure(vol, ra.LUMBAR, [1, 2, 3, 4, 5], "boxes")
    assert shape is not None
    np.testing.assert_allclose(shape.height_mid, [25, 26, 27, 27, 26], atol=0.01)
    np.testing.assert_allclose(shape.height_ant, shape.height_post, atol=0.01)
    np.testing.assert_allclose(shape.depth, 35, atol=0.01)
    np.testing.assert_allclose(shape.width, 40, atol=0.01)
    np.testing.assert_allclose(shape.disc, 10, atol=1.0)
    np.testing.assert_allclose(shape.wedge_deg, 0, atol=0.01)
    assert abs(shape.lordosis_deg) < 0.01


def test_measure_sees_an_anterior_wedge():
    vol = _box_volume([25, 26, 27, 27, 26], gap=10, depth=35, width=40)
    body = vol == 1
    rows = np.nonzero(body.any(axis=(1, 2)))[0]
    for c in range(20, 55):          # lower the top endplate towards the front: anterior short
        vol[rows[0]:rows[0] + int(round(6 * (55 - c) / 35)), c, :] = 0
    shape = ra.measure(vol, ra.LUMBAR, [1, 2, 3, 4, 5], "wedge")
    assert shape is not None
    assert shape.height_ant[0] < shape.height_post[0] - 3
    assert shape.wedge_deg[0] > 5          # + = anterior shorter
    assert abs(shape.wedge_deg[2]) < 0.01


def test_real_shapes_are_plausible(real_env):
    assert len(real_env) >= 50   # 54 vb3 subjects, a broken trace may be dropped
    l3 = np.array([s.lumbar(s.height_mid)[2] for s in real_env])
    assert np.all((l3 > 20) & (l3 < 35))
    lordosis = np.array([s.lordosis_deg for s in real_env])
    assert np.all(np.abs(lordosis) < 70) and 0 < np.median(lordosis) < 45
    for s in real_env:
        assert np.all((s.lumbar(s.depth) > 25) & (s.lumbar(s.depth) < 55))
        assert np.all((s.lumbar(s.width) > 35) & (s.lumbar(s.width) < 85))
        assert all(3 < g < 20 for g in s.disc)
    # L1 is wedged anteriorly and L5 posteriorly on average (a known lumbar pattern)
    wedge = np.array([s.lumbar(s.wedge_deg) for s in real_env]).mean(axis=0)
    assert wedge[0] > 0 > wedge[4]


def test_real_marrow_texture(real_env):
    tex = ra.real_marrow_texture(np.random.default_rng(3), (120, 90), 1.25)
    again = ra.real_marrow_texture(np.random.default_rng(3), (120, 90), 1.25)
    other = ra.real_marrow_texture(np.random.default_rng(4), (120, 90), 1.25)
    assert tex is not None and again is not None and other is not None
    assert tex.shape == (120, 90) and tex.dtype == np.float32 and np.isfinite(tex).all()
    assert abs(float(tex.mean())) < 1e-3 and abs(float(tex.std()) - 1) < 1e-3
    np.testing.assert_array_equal(tex, again)
    assert not np.array_equal(tex, other)
    # low-frequency trend removed: the halves of the field have about the same mean
    assert abs(float(tex[:60].mean() - tex[60:].mean())) < 0.5


def test_real_shape_sets_lumbar_proportions_and_curve(real_env):
    shape = real_env[0]
    spec = draw_spine(np.random.default_rng(0), FOV, "L1", shape_source=shape)
    lv = spec.levels
    assert spec.real_subject == shape.subject
    lum = [lv.index(n) for n in LUMBAR]
    ratio = lv.height[lum] / np.maximum(shape.lumbar(shape.height_ant),
                                        shape.lumbar(shape.height_post))
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    assert 0.93 < ratio[0] < 1.07
    np.testing.assert_allclose(lv.depth[lum] / shape.lumbar(shape.depth), ratio[0], rtol=1e-9)
    # the drawn curve bends by the subject's L1 -> L5 body tilt change (25 mm smoothing)
    expected = np.clip(np.diff(shape.lumbar(shape.tilt_deg)), -10, 20).sum()
    bend = np.degrees(_theta_at(spec, "L5") - _theta_at(spec, "L1"))
    assert abs(bend - expected) < 4.0


def test_auto_uses_real_shapes_in_about_the_documented_share(real_env):
    from spinefx.phantom.spine import REAL_SHAPE_SHARE
    real = [draw_spine(np.random.default_rng(s), FOV, "L2").real_subject is not None
            for s in range(150)]
    assert abs(np.mean(real) - REAL_SHAPE_SHARE) < 0.13


# --- procedural generation ----------------------------------------------------------------
def test_procedural_only_without_real_data(no_real):
    assert ra.real_spine_root() is None and ra.real_shapes() == ()
    assert ra.draw_real_shape(np.random.default_rng(0)) is None
    assert ra.real_marrow_texture(np.random.default_rng(0), (10, 10), 1.0) is None
    assert all(draw_spine(np.random.default_rng(s), FOV, "T12").real_subject is None
               for s in range(20))
    with pytest.raises(RuntimeError, match="no real spine data"):
        draw_spine(np.random.default_rng(0), FOV, "T12", shape_source="real")
    from spinefx.phantom import render_case
    case = render_case(5, "benign")
    assert case.t1.ndim == 3 and np.isfinite(case.t1).all() and case.t1.max() > 0


def test_posture_covers_flat_to_hyperlordotic(no_real):
    specs = [draw_spine(np.random.default_rng(s), FOV, "L1") for s in range(200)]
    lordosis = np.array([s.lordosis_deg for s in specs])
    kyphosis = np.array([s.kyphosis_deg for s in specs])
    assert lordosis.min() < LORDOSIS_DEG[0] + 5 and lordosis.max() > LORDOSIS_DEG[1] - 5
    assert kyphosis.max() - kyphosis.min() > 40
    bend = np.array([np.degrees(_theta_at(s, "L5") - _theta_at(s, "L1")) for s in specs])
    # the curve bends as drawn; the L4-L5 segment ends past L5's centre (smoothing)
    assert np.corrcoef(bend, lordosis)[0, 1] > 0.95
    tilt = np.array([_theta_at(s, "T12") for s in specs])
    assert tilt.max() - tilt.min() > 0.3


def test_sizes_vary_by_level_and_case(no_real):
    specs = [draw_spine(np.random.default_rng(s), FOV, "L1") for s in range(60)]
    h = np.array([s.levels.height for s in specs])
    lv = specs[0].levels
    assert h[:, lv.index("L3")].mean() > h[:, lv.index("T6")].mean() + 4
    assert (h.std(axis=0)[: lv.index("S1")] > 0.5).all()
    wedge = np.array([s.levels.phys_wedge for s in specs]).mean(axis=0)
    assert wedge[lv.index("T7")] > 1.0 and wedge[lv.index("L5")] < -1.0
    flat = [draw_spine(np.random.default_rng(s), FOV, "L1", variation=0.0,
                       shape_source="procedural").levels for s in range(3)]
    for other in flat[1:]:   # variation 0: every case gets the average shape
        np.testing.assert_allclose(other.height, flat[0].height)
        np.testing.assert_allclose(other.phys_wedge, flat[0].phys_wedge)


def test_same_seed_same_spine(no_real):
    a = draw_spine(np.random.default_rng(7), FOV, "L3")
    b = draw_spine(np.random.default_rng(7), FOV, "L3")
    np.testing.assert_array_equal(a.curve_a, b.curve_a)
    np.testing.assert_array_equal(a.levels.u_top, b.levels.u_top)


def test_degenerate_discs_are_narrowed(no_real):
    specs = [draw_spine(np.random.default_rng(s), FOV, "L1", variation=0.0) for s in range(300)]
    lv = specs[0].levels
    i = lv.index("L4")
    deg = np.array([s.levels.degenerate[i] for s in specs])
    disc = np.array([s.levels.disc[i] for s in specs])
    assert abs(deg.mean() - DEGENERATE_RATES["L4"]) < 0.1
    loss = 1 - disc[deg].mean() / disc[~deg].mean()
    assert NARROWING[0] < loss < NARROWING[1]
    assert not any(s.levels.degenerate[lv.index("S2")] for s in specs)


def test_physiological_wedge_is_painted(no_real):
    spec = draw_spine(np.random.default_rng(1), FOV, "L1", variation=0.0)
    lv = spec.levels
    k = lv.index("T8")
    lv.phys_wedge[k], lv.concavity[k] = 4.0, 0.0
    cv = Canvas(spec, Grid(256, 256, 1.25), lattice(np.random.default_rng(0), FOV, 5.0))
    d = lv.depth[k]
    here = cv.k == k
    front = here & (np.abs(cv.v + d / 2 - 1) < 0.5)
    back = here & (np.abs(cv.v - d / 2 + 1) < 0.5)
    h_front, h_back = 2 * cv.hu[front].mean(), 2 * cv.hu[back].mean()
    assert h_back - h_front == pytest.approx(4.0 * (1 - 2 / d), abs=0.3)
