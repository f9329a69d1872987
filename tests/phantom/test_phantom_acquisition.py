"""Phantom v2: acquisition ranges, sequence variants and their rates, artefacts, masks for every
level, patient seeds and determinism. Parameter streams are drawn without rendering where
possible; the few rendered cases are shared."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from spinefx.phantom import render_case, write_phantom_study
from spinefx.phantom.artefacts import (
    GHOST_RATE,
    GIBBS_RATE,
    WRAP_RATE,
    Artefacts,
    apply_artefacts,
    draw_artefacts,
)
from spinefx.phantom.contrast import T1_VARIANTS, T2_VARIANTS, draw_contrast, variant_rates
from spinefx.phantom.physics import FOV_RANGE, MATRIX_RANGE, draw_acquisition, draw_physics
from spinefx.phantom.tissues import Tissue as T
from spinefx.runtime.features import FEATURE_KEYS

RNG_DRAWS = 3000


def _rngs(n: int, seed: int = 0) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _physics_of(seed: int):
    """What render_case's physics stream (index 4 of 9) draws for ``seed``, without pixels."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(9)[4])
    return draw_physics(rng, 0.45, 1.1, 2.2, 1.0)


def test_variation_zero_is_v1_and_one_is_wide() -> None:
    nominal = [draw_acquisition(r, 0.0, {}) for r in _rngs(300)]
    assert {a.matrix for a in nominal} == {256} and {a.n_sub for a in nominal} == {1}
    assert all(3.0 <= a.thickness <= 4.0 and 1.1 <= a.ps <= 1.4 and 12 <= a.n <= 16
               for a in nominal)
    wide = [draw_acquisition(r, 1.0, {}) for r in _rngs(300)]
    thick = np.array([a.thickness for a in wide])
    assert thick.min() < 1.5 and thick.max() > 4.5 and thick.min() >= 1.0 and thick.max() <= 5.0
    assert min(a.gap for a in wide) < 0.1 and max(a.gap for a in wide) <= 1.0
    for a in wide:
        assert MATRIX_RANGE[0] <= a.matrix <= MATRIX_RANGE[1] and 0.5 <= a.ps <= 1.5
        assert FOV_RANGE[0] - 1 <= a.matrix * a.ps <= FOV_RANGE[1] + 1
    assert len({a.matrix for a in wide}) > 50 and {a.n_sub for a in wide} >= {1, 2}
    phys0 = [draw_physics(r, 0.45, 1.1, 2.2, 0.0) for r in _rngs(200)]
    assert {(p.t1.variant, p.t2.variant) for p in phys0} == {("T1", "T2")}
    assert not any(p.t1.extreme or p.t2.extreme for p in phys0)
    assert not any(draw_artefacts(r, 0.0).any for r in _rngs(200))


@pytest.mark.parametrize("variation", [1.0, 0.5])
def test_variants_appear_at_their_rates(variation: float) -> None:
    draws = [draw_contrast(r, variation, 0.45, 1.1, 2.2) for r in _rngs(RNG_DRAWS)]
    for i, table in ((0, T1_VARIANTS), (1, T2_VARIANTS)):
        seen = [d[i].variant for d in draws]
        for name, rate in variant_rates(table, variation).items():
            assert abs(seen.count(name) / RNG_DRAWS - rate) < 0.035, (name, rate)
    extreme = np.mean([d[1].extreme for d in draws])
    assert 0.0 < extreme < 0.08 * variation + 0.03


def test_artefacts_appear_at_their_rates() -> None:
    arts = [draw_artefacts(r, 1.0) for r in _rngs(RNG_DRAWS)]
    for name, rate in (("ghost", GHOST_RATE), ("gibbs", GIBBS_RATE), ("wrap", WRAP_RATE)):
        assert abs(np.mean([name in a.names() for a in arts]) - rate) < 0.03, name


def test_stir_and_fat_saturation_follow_the_physics() -> None:
    """Fat (and fat-like confounders) dark, CSF and oedema bright, in every drawn case."""
    draws = [draw_contrast(r, 1.0, 0.45, 1.1, 2.2) for r in _rngs(RNG_DRAWS)]
    stir = [d[1] for d in draws if d[1].variant == "STIR"]
    fs = [d[1] for d in draws if d[1].variant == "T2_FS"]
    plain = [d[1].lut for d in draws if d[1].variant == "T2" and not d[1].extreme]
    assert len(stir) > 500 and len(fs) > 500
    for c in stir + fs:
        lut, marrow = c.lut, c.lut[T.MARROW]
        if not c.extreme:  # fat, fatty marrow and fat-like confounders suppressed
            for t in (T.FAT, T.FOCAL_FAT, T.MODIC2):
                assert lut[t] < 0.75 * np.median([p[t] for p in plain]), t
            if c.variant == "STIR":  # inversion nulls fat almost completely
                assert lut[T.FAT] < 0.1 * np.median([p[T.FAT] for p in plain])
        assert lut[T.LESION] > 1.3 * marrow and lut[T.LESION_BRIGHT] > lut[T.LESION]
        assert lut[T.MODIC1] > marrow and lut[T.HAEMANGIOMA] > marrow
        assert lut[T.MODIC3] < 0.6 * marrow
        assert c.extreme or lut[T.MODIC2] < lut[T.MODIC1]  # random fat may outshine oedema
    for d, lut in ((d, d[1].lut) for d in draws if d[1].variant == "STIR" and not d[1].extreme):
        soft = [T.FAT, T.MUSCLE, T.MARROW, T.EPIDURAL_FAT]  # suppressed or dark
        assert lut[T.CSF] > max(lut[t] for t in soft)
    for d in draws:
        t1 = d[0].lut
        assert t1[T.LESION] < t1[T.MARROW] and t1[T.MODIC1] < t1[T.MARROW]
        assert t1[T.FOCAL_FAT] > 0.9 * t1[T.FAT] and t1[T.HAEMANGIOMA] > t1[T.MARROW]


def test_artefacts_do_what_they_say() -> None:
    img = np.zeros((64, 64), np.float32)
    img[24:40, 24:40] = 100.0
    ghost = np.abs(apply_artefacts(img, Artefacts(0, (0.4, 8.0, 0.3), None, None)))
    assert ghost[:20, 24:40].mean() > 1.0 and ghost[:, :20].max() < 1e-3  # along rows only
    gibbs = apply_artefacts(img, Artefacts(0, None, 0.5, None))
    assert gibbs.max() > 105 and gibbs.min() < -5  # overshoot and ringing at the edges
    band = img.copy()
    band[:6] = 50.0
    wrapped = apply_artefacts(band, Artefacts(0, None, None, (0.1, 0.5)))
    assert wrapped[-6:].mean() > 20 and wrapped[6:-6].sum() == band[6:-6].sum()


@pytest.fixture(scope="module")
def stir_seed() -> int:
    return next(s for s in range(500) if _physics_of(s).t2.variant == "STIR")


@pytest.fixture(scope="module")
def case_pair():
    """One patient, two cases (distinct seeds, same level), T2 on its own grid."""
    a = render_case(3, "benign", patient_seed=9001, level="L2", t2_scale=1.2)
    b = render_case(4, "malignant", patient_seed=9001, level="L2", t2_scale=1.2)
    return a, b


def test_headers_record_acquisition_and_variant(tmp_path, stir_seed) -> None:
    t1_dir, t2_dir, case = write_phantom_study(tmp_path / "s", seed=stir_seed, label="benign")
    assert case.t2_variant == "STIR"
    for folder, vol, ps in ((t1_dir, case.t1, case.pixel_spacing),
                            (t2_dir, case.t2, case.t2_pixel_spacing)):
        ds = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        assert str(ds.SeriesDescription).startswith("SYNTHETIC")
        assert float(ds.SliceThickness) == pytest.approx(case.slice_thickness)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(case.spacing_between_slices)
        assert (ds.Rows, ds.Columns) == vol.shape[1:]
        assert float(ds.PixelSpacing[0]) == pytest.approx(ps[0], abs=1e-6)
        assert len(list(folder.glob("*.dcm"))) == case.n_slices
    t2 = pydicom.dcmread(next(t2_dir.glob("*.dcm")), stop_before_pixels=True)
    assert "STIR" in t2.SeriesDescription and "IR" in t2.ScanningSequence
    assert 80 <= float(t2.InversionTime) <= 300


def test_every_body_and_disc_is_labelled_where_it_is_drawn() -> None:
    c = render_case(12, "malignant", variation=0.0)  # nominal contrast: marrow bright on T1
    m = c.masks("t1")
    bodies, discs, i = m["bodies"], m["discs"], c.slice
    assert np.array_equal(bodies == c.level_names.index(c.level) + 1, m["vertebra"] > 0)
    assert not (bodies.astype(bool) & discs.astype(bool)).any()
    levels = [v for v in np.unique(bodies[i]) if v]
    assert len(levels) >= 5   # five or more vertebrae in view
    rows = [np.nonzero(bodies[i] == v)[0].mean() for v in levels]
    assert np.all(np.diff(rows) > 0)   # numbered superior to inferior
    for v in levels[:-1]:  # the disc below body v lies between bodies v and v + 1
        d = np.nonzero(discs[i] == v)[0]
        below = np.nonzero(bodies[i] == v + 1)[0]
        if len(d) and len(below):
            assert rows[levels.index(v)] < d.mean() < below.mean()
    body_px = (bodies[i] > 0) & (m["lesion"][i] == 0)
    assert c.t1[i][body_px].mean() > 1.5 * c.t1[i][discs[i] > 0].mean()


def test_t2_masks_are_on_the_t2_grid(case_pair) -> None:
    c = case_pair[0]
    t1m, t2m = c.masks("t1"), c.masks("t2")
    assert not c.t2_same_grid
    for key in ("lesion", "vertebra", "bodies", "discs"):
        assert t2m[key].shape == c.t2.shape and t1m[key].shape == c.t1.shape
    area = [m["vertebra"].sum() * ps[0] ** 2
            for m, ps in ((t1m, c.pixel_spacing), (t2m, c.t2_pixel_spacing))]
    assert area[1] == pytest.approx(area[0], rel=0.15)  # one body, two grids
    same = render_case(3, "benign", t2_scale=1.0, variation=0.0)
    for key, arr in same.masks("t1").items():
        assert np.array_equal(arr, same.masks("t2")[key])
    with pytest.raises(ValueError):
        same.masks("stir")


def test_one_patient_shares_spine_and_protocol_not_lesion(case_pair) -> None:
    a, b = case_pair
    assert a.spine is not None and b.spine is not None
    for name in ("depth", "half_width", "canal_ap", "sp_len"):
        assert np.array_equal(getattr(a.spine.levels, name), getattr(b.spine.levels, name))
    assert np.array_equal(a.spine.curve_theta, b.spine.curve_theta) or a.lesion.posterior_loss \
        != b.lesion.posterior_loss
    assert (a.t1.shape, a.pixel_spacing, a.slice_thickness) == \
        (b.t1.shape, b.pixel_spacing, b.slice_thickness)
    assert (a.t1_variant, a.t2_variant) == (b.t1_variant, b.t2_variant)
    assert a.lesion.x_c != b.lesion.x_c and not np.array_equal(a.lesion_mask, b.lesion_mask)
    other = render_case(3, "benign", patient_seed=9002, level="L2", t2_scale=1.2)
    assert not np.array_equal(other.spine.levels.depth, a.spine.levels.depth)


def test_same_seed_same_bytes_and_the_label_reaches_only_the_features(tmp_path) -> None:
    a = render_case(21, "benign", variation=0.7, patient_seed=5)
    b = render_case(21, "benign", variation=0.7, patient_seed=5)
    assert a.t1.tobytes() == b.t1.tobytes() and a.t2.tobytes() == b.t2.tobytes()
    for key, arr in a.masks("t2").items():
        assert arr.tobytes() == b.masks("t2")[key].tobytes()
    flags = dict(a.features)
    other = render_case(21, "malignant", difficulty=0.3, variation=0.7, patient_seed=5, **flags)
    assert other.t1.tobytes() == a.t1.tobytes() and other.t2.tobytes() == a.t2.tobytes()
    assert set(flags) == set(FEATURE_KEYS)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), "x", None])
def test_variation_is_validated(bad) -> None:
    with pytest.raises(ValueError, match="variation"):
        render_case(1, "benign", variation=bad)
