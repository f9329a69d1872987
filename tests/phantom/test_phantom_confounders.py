"""Benign confounders: documented rates in both classes, visible, never over the lesion."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.phantom import case
from spinefx.phantom import confounders as cf
from spinefx.phantom.anatomy import SUPER
from spinefx.phantom.confounders import (
    CONFOUNDER_RATES,
    Blob,
    Confounders,
    EndplateChange,
    Osteophyte,
    confounder_table_markdown,
    draw_confounders,
)
from spinefx.phantom.spine import draw_spine
from spinefx.phantom.tissues import Tissue as T

LESION_TISSUES = (T.LESION, T.LESION_BRIGHT, T.BAND, T.FLUID, T.VACUUM, T.MASS, T.HAEMATOMA,
                  T.SKIP)
EVERY_KIND = ("haemangioma", "focal_fat", "modic", "schmorl_node", "osteophyte")


class _Captured(Exception):
    def __init__(self, scene) -> None:
        self.scene = scene


@pytest.fixture(scope="module")
def scenes():
    """render_case's draws without its pixels, 400 cases per class."""
    def stop(scene, *rest):
        raise _Captured(scene)

    out: dict[str, list] = {"benign": [], "malignant": []}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(case, "_render", stop)
        mp.setattr(case, "lattice", lambda rng, extent, cell: np.zeros((2, 2), np.float32))
        for label in out:
            for seed in range(400):
                try:
                    case.render_case(50_000 + seed, label)
                except _Captured as got:
                    out[label].append(got.scene)
    return out


def _within(hits: int, n: int, p: float, name: str) -> None:
    sd = np.sqrt(max(p * (1 - p), 1e-12) / n)
    assert n > 200, name
    assert abs(hits / n - p) < 4.5 * sd + 1e-9, f"{name}: {hits}/{n} = {hits / n:.4f}, rate {p}"


def _endplates(scene, tissues) -> set[tuple[int, bool]]:
    return {(it.level, it.top) for it in scene.confounders.of(EndplateChange)
            if it.tissue in tissues}


@pytest.mark.parametrize("label", ["benign", "malignant"])
def test_body_rates_match_the_table(scenes, label) -> None:
    bodies = haem = fat = 0
    for sc in scenes[label]:
        blobs = sc.confounders.of(Blob)
        bodies += len(sc.spec.levels.names)
        haem += len({b.level for b in blobs if b.tissue == T.HAEMANGIOMA})
        fat += len({b.level for b in blobs if b.tissue == T.FOCAL_FAT})
    _within(haem, bodies, CONFOUNDER_RATES["haemangioma"][0], "haemangioma")
    _within(fat, bodies, CONFOUNDER_RATES["focal_fat"][0], "focal_fat")


@pytest.mark.parametrize("label", ["benign", "malignant"])
def test_disc_rates_match_the_table_and_follow_degeneration(scenes, label) -> None:
    counts = {key: [0, 0] for key in ("modic_normal_disc", "modic_degenerate_disc",
                                      "osteophyte_normal_disc", "osteophyte_degenerate_disc")}
    types = {t: 0 for t in cf.MODIC_TYPES}
    schmorl = endplates = 0
    for sc in scenes[label]:
        lv = sc.spec.levels
        modic = _endplates(sc, cf.MODIC_TYPES)
        spurs = {(o.level, o.top) for o in sc.confounders.of(Osteophyte)}
        schmorl += len(_endplates(sc, (T.SCHMORL,)))
        for e in sc.confounders.of(EndplateChange):
            types[e.tissue] = types.get(e.tissue, 0) + (e.tissue != T.SCHMORL)
        for j in np.nonzero(~lv.sacral[:-1])[0]:
            sides = {(int(j), False), (int(j) + 1, True)}
            state = "degenerate" if lv.degenerate[j] else "normal"
            c = counts[f"modic_{state}_disc"]
            c[0] += bool(sides & modic)
            c[1] += 1
            c = counts[f"osteophyte_{state}_disc"]
            c[0] += len(sides & spurs)
            c[1] += 2  # two anterior corners per disc
            endplates += 2
    for key, (hits, n) in counts.items():
        _within(hits, n, CONFOUNDER_RATES[key][0], key)
    _within(schmorl, endplates, CONFOUNDER_RATES["schmorl_node"][0], "schmorl_node")
    # Modic types: shares of the Modic bands (a band on both endplates counts twice)
    total = sum(types[t] for t in cf.MODIC_TYPES)
    for i, t in enumerate(cf.MODIC_TYPES, start=1):
        share = CONFOUNDER_RATES[f"modic_type{i}"][0]
        assert abs(types[t] / total - share) < 0.08, (t.name, types[t] / total, share)
    # Modic change and spurs really are more common next to a degenerate disc
    assert CONFOUNDER_RATES["modic_degenerate_disc"][0] > CONFOUNDER_RATES["modic_normal_disc"][0]


@pytest.mark.parametrize("label", ["benign", "malignant"])
def test_disc_degeneration_matches_the_table(scenes, label) -> None:
    rows = {k: v[0] for k, v in CONFOUNDER_RATES.items() if k.startswith("degenerate_disc_")}
    if not rows:
        pytest.skip("spine.py does not expose its degeneration rates (listed when it does)")
    counts: dict[str, list[int]] = {}
    for sc in scenes[label]:
        lv = sc.spec.levels
        for j in np.nonzero(~lv.sacral[:-1])[0]:
            key = f"degenerate_disc_{lv.names[j]}"
            c = counts.setdefault(key if key in rows else "degenerate_disc_other", [0, 0])
            c[0] += bool(lv.degenerate[j])
            c[1] += 1
    assert set(counts) == set(rows)
    for key, (hits, n) in counts.items():
        _within(hits, n, rows[key], key)


@pytest.mark.parametrize("label", ["benign", "malignant"])
def test_no_old_fracture_besides_the_multiple_fractures_flag(scenes, label) -> None:
    assert CONFOUNDER_RATES["old_healed_fracture"][0] == 0.0
    for sc in scenes[label]:
        lv, les = sc.spec.levels, sc.lesion
        deformed = {lv.names[i] for i in range(len(lv.names))
                    if lv.wedge_top[i] or lv.wedge_bot[i] or lv.concave_top[i]
                    or lv.concave_bot[i]}
        expected = {les.level} | ({les.other_fracture[0]} if les.flags["multiple_fractures"]
                                  else set())
        assert deformed == expected


def test_rates_scale_with_variation_and_draws_are_deterministic() -> None:
    spec = draw_spine(np.random.default_rng(1), (320.0, 320.0), "L1")
    base = draw_confounders(np.random.default_rng(2), spec, None, 1.0)  # type: ignore[arg-type]
    again = draw_confounders(np.random.default_rng(2), spec, None, 1.0)  # type: ignore[arg-type]
    assert base == again
    assert draw_confounders(np.random.default_rng(2), spec, None, 0.0).items == []  # type: ignore[arg-type]
    many = draw_confounders(np.random.default_rng(2), spec, None, 20.0)  # type: ignore[arg-type]
    assert len(many.of(Blob)) > len(base.of(Blob))
    with pytest.raises(ValueError):
        draw_confounders(np.random.default_rng(2), spec, None, -1.0)  # type: ignore[arg-type]


def test_forcing_adds_one_confounder_and_keeps_the_others() -> None:
    spec = draw_spine(np.random.default_rng(1), (320.0, 320.0), "L1")
    base = draw_confounders(np.random.default_rng(3), spec, None)  # type: ignore[arg-type]
    forced = draw_confounders(np.random.default_rng(3), spec, None,  # type: ignore[arg-type]
                              force={"haemangioma": "L3"})
    added = [it for it in forced.items if it not in base.items]
    assert set(base.items) <= set(forced.items)
    lv = spec.levels
    assert all(isinstance(b, Blob) and b.tissue == T.HAEMANGIOMA and b.level == lv.index("L3")
               for b in added)
    assert any(b.level == lv.index("L3") for b in forced.of(Blob) if b.tissue == T.HAEMANGIOMA)
    with pytest.raises(KeyError):
        draw_confounders(np.random.default_rng(3), spec, None,  # type: ignore[arg-type]
                         force={"bone_island": "L3"})


def test_table_markdown_lists_every_rate() -> None:
    table = confounder_table_markdown()
    assert table.count("\n") == len(CONFOUNDER_RATES) + 1
    for name, (value, what) in CONFOUNDER_RATES.items():
        assert 0.0 <= value <= 1.0 and what
        assert f"| {name} | {value:.2f} |" in table
    shares = sum(CONFOUNDER_RATES[f"modic_type{i}"][0] for i in (1, 2, 3))
    assert shares == pytest.approx(1.0)


def _render(monkeypatch, seed: int, keep, force=None, **overrides):
    """render_case with the confounders ``force``d, filtered by ``keep(item)``."""
    original = cf.draw_confounders

    def draw(rng, spec, lesion, variation=1.0):
        conf = original(rng, spec, lesion, variation, force=force)
        return Confounders([it for it in conf.items if keep(it)])

    monkeypatch.setattr(case, "draw_confounders", draw)
    return case.render_case(seed, "malignant", **overrides)


def _painted_pixels(monkeypatch) -> list[tuple[int, np.ndarray]]:
    """Record, per slice and grid, the image pixels whose every sub-pixel a confounder
    painted: (grid rows, bool image) in call order."""
    original_paint = cf.paint_confounders
    painted: list[tuple[int, np.ndarray]] = []

    def paint(strip, cv, geo, conf):
        before = strip.copy()
        original_paint(strip, cv, geo, conf)
        changed = cv.to_image((strip != before).astype(np.uint8), np.zeros(cv.shape, np.uint8))
        r, c = cv.grid.rows, cv.grid.cols
        painted.append((r, changed.reshape(r, SUPER, c, SUPER).all(axis=(1, 3))))

    monkeypatch.setattr(case, "paint_confounders", paint)
    return painted


def test_a_forced_haemangioma_is_bright_on_t1_and_t2(monkeypatch) -> None:
    force = {"haemangioma": "L3"}
    only = lambda it: isinstance(it, Blob) and it.tissue == T.HAEMANGIOMA  # noqa: E731
    painted = _painted_pixels(monkeypatch)
    with_h = _render(monkeypatch, 7, only, force, level="L1")
    calls = list(painted)
    without = _render(monkeypatch, 7, lambda it: False, force, level="L1")
    for series in ("t1", "t2"):
        img, ref = getattr(with_h, series), getattr(without, series)
        masks = [m for rows, m in calls if rows == img.shape[1]][:len(img)]
        where = np.stack(masks)
        assert where.sum() > 20, series  # the haemangioma is on the pictures
        ratio = img[where].mean() / ref[where].mean()
        assert ratio > 1.1, (series, ratio)  # brighter than the marrow it replaced


@pytest.mark.parametrize("seed, overrides", [
    (21, {"spared_marrow": 1, "skip_lesions": 1, "paraspinal_mass": 1, "low_signal_band": 1}),
    (22, {"diffuse_low_t1": 1, "smooth_paraspinal": 1, "fluid_sign": 1, "epidural_mass": 1}),
])
def test_painting_never_touches_the_lesion(monkeypatch, seed, overrides) -> None:
    force = {kind: "L1" for kind in EVERY_KIND}  # all of them at the fractured level
    original_paint = cf.paint_confounders
    touched = []

    def paint(strip, cv, geo, conf):
        before = strip.copy()
        original_paint(strip, cv, geo, conf)
        lesion = np.isin(before, LESION_TISSUES)
        touched.append((int((strip[lesion] != before[lesion]).sum()),
                        int((strip != before).sum())))

    monkeypatch.setattr(case, "paint_confounders", paint)
    every = _render(monkeypatch, seed, lambda it: True, force, level="L1", **overrides)
    none = _render(monkeypatch, seed, lambda it: False, force, level="L1", **overrides)
    assert sum(t[0] for t in touched) == 0  # no lesion tissue overwritten
    assert sum(t[1] for t in touched) > 500  # ... while plenty was painted
    assert np.array_equal(every.lesion_mask, none.lesion_mask)
    assert np.array_equal(every.vertebra_mask, none.vertebra_mask)
    assert not np.array_equal(every.t1, none.t1)
