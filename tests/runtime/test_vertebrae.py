"""Vertebral-body instances and levels from body masks (spinefx.runtime.vertebrae).

Synthetic box spines built in numpy (milliseconds), one phantom render with the sacrum in
view (levels known), and the real vb3 / DzZ masks (skipped cleanly when ../shared is absent).
"""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.runtime.vertebrae import (
    find_vertebrae,
    label_components,
    relabel,
    sacrum_by_look,
)

SPACING = (3.0, 1.0, 1.0)   # slice, row, col mm


def box_spine(heights, gaps, depths=None, n_slices=9, cols=80, top=5,
              widths=None) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A (slices, rows, cols) mask of bodies stacked top -> bottom: body i is ``heights[i]``
    rows tall and ``depths[i]`` columns deep, ``gaps[i]`` empty rows below it."""
    depths = depths or [30] * len(heights)
    widths = widths or [n_slices - 2] * len(heights)
    rows = top + sum(heights) + sum(gaps) + 10
    mask = np.zeros((n_slices, rows, cols), dtype=np.uint8)
    boxes, r = [], top
    for h, g, d, w in zip(heights, list(gaps) + [0], depths, widths):
        k0 = (n_slices - w) // 2
        mask[k0:k0 + w, r:r + h, 20:20 + d] = 1
        boxes.append((20, r, 20 + d, r + h))
        r += h + g
    return mask, boxes


def test_label_components_six_connected_in_raster_order():
    m = np.zeros((3, 6, 6), dtype=bool)
    m[0, 0, 0:3] = True          # component 1
    m[1, 1, 1] = True            # touches (0,0,1)? no: (0,1,1) is empty -> diagonal only
    m[2, 4:6, 4:6] = True        # component 3
    m[1, 0, 2] = True            # joins component 1 through the slice axis
    labels, n = label_components(m)
    assert n == 3
    assert labels[0, 0, 0] == labels[1, 0, 2] == 1
    assert labels[1, 1, 1] == 2 and labels[2, 5, 5] == 3
    assert (labels > 0).sum() == m.sum()


def test_label_components_u_shape_is_one_component():
    m = np.zeros((1, 5, 5), dtype=bool)
    m[0, :, 0] = m[0, :, 4] = m[0, 4, :] = True   # two arms joined only at the bottom
    labels, n = label_components(m)
    assert n == 1 and labels[0, 0, 0] == labels[0, 0, 4]


def test_bodies_found_in_order_with_box_centroid_and_widest_slice():
    mask, boxes = box_spine([20, 22, 24], [8, 8], widths=[7, 5, 7])
    mask[1, 35:40, 20:50] = 0            # body 2 is widest on its central slices only
    vl = find_vertebrae(mask, SPACING)
    assert len(vl) == 3 and vl.reason == ""
    for v, box in zip(vl.vertebrae, boxes):
        assert v.box == box
        assert v.centroid[0] == pytest.approx((box[0] + box[2] - 1) / 2)
        assert v.centroid[1] == pytest.approx((box[1] + box[3] - 1) / 2, abs=0.6)
    assert vl.vertebrae[0].centroid[1] < vl.vertebrae[1].centroid[1] < vl.vertebrae[2].centroid[1]
    assert vl.vertebrae[1].slice in (2, 3, 4, 5, 6)
    assert np.array_equal(vl.mask(0), (vl.labels == vl.vertebrae[0].value))
    assert vl.gaps_mm == pytest.approx([8.0, 8.0], abs=1.0)


def test_thin_bridge_is_cut_and_grown_back():
    mask, _ = box_spine([20, 20], [6])
    mask[:, 25:31, 34:36] = 1            # a 2 px bridge through the disc (a leaky map)
    vl = find_vertebrae(mask, SPACING)
    assert len(vl) == 2
    assert (vl.labels > 0).sum() >= mask.sum() - 12   # the bridge joins a body, not lost
    assert len(find_vertebrae(mask, SPACING, label_levels=False)) == 2


def test_fragments_dropped_by_physical_volume():
    mask, _ = box_spine([20, 20, 20], [8, 8])        # bodies 20 x 30 px x 7 slices: 12600 mm3
    mask[3:6, 2:12, 60:70] = 1           # 300 voxels x 3 mm3 = 900 mm3: under 1000 mm3
    assert len(find_vertebrae(mask, SPACING)) == 3
    mask[3:6, 2:22, 55:75] = 1           # 3600 mm3: over 20% of the median body: kept
    assert len(find_vertebrae(mask, SPACING)) == 4


def test_no_spine_gives_empty_list_with_reason():
    vl = find_vertebrae(np.zeros((5, 40, 40), np.float32), SPACING)
    assert len(vl) == 0 and "no spine" in vl.reason
    vl = find_vertebrae(np.pad(np.ones((1, 2, 2)), 3), SPACING)   # one tiny speck
    assert len(vl) == 0 and "no spine" in vl.reason
    with pytest.raises(ValueError, match="3-D"):
        find_vertebrae(np.zeros((40, 40)), SPACING)


def test_probability_threshold():
    mask, _ = box_spine([20, 20], [8])
    prob = mask * 0.4
    assert len(find_vertebrae(prob, SPACING)) == 0
    assert len(find_vertebrae(prob, SPACING, threshold=0.3)) == 2


def test_levels_counted_up_from_the_sacrum():
    # five lumbar bodies, discs 8-10 mm; then S1, S2, S3 shrinking with 1 mm rudimentary discs
    mask, _ = box_spine([24, 25, 26, 26, 25, 22, 14, 10], [8, 9, 10, 10, 9, 1, 1],
                        depths=[32, 33, 34, 35, 35, 33, 24, 18])
    vl = find_vertebrae(mask, SPACING)
    assert [v.level for v in vl.vertebrae] == ["L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3"]
    assert vl.level_confidence >= 0.8 and "S1" in vl.level_reason


def test_narrow_lumbar_disc_is_not_taken_for_the_sacrum():
    # a 1 mm L4/L5 gap but L5 as large as L4: no sacrum, so lumbar-by-default, said so
    mask, _ = box_spine([24, 25, 26, 26, 25], [8, 9, 10, 1])
    vl = find_vertebrae(mask, SPACING)
    assert [v.level for v in vl.vertebrae] == ["L1", "L2", "L3", "L4", "L5"]
    assert vl.level_confidence < 0.5 and "lumbar-by-default" in vl.level_reason


def test_bodies_joined_by_a_bridge_too_wide_to_erode_are_cut_at_the_waist():
    # five 24 x 32 bodies, 8-row discs; the 2nd and 3rd joined across their disc by an 18-column
    # bridge (the map filled part of a disc): erosion cannot cut it, the cross-section can
    mask, boxes = box_spine([24] * 5, [8] * 4, depths=[32] * 5)
    x0, _, x1, _ = boxes[1]
    mask[1:-1, boxes[1][3]:boxes[2][1], x0 + 7:x0 + 25] = 1
    vl = find_vertebrae(mask, SPACING, label_levels=False)
    assert len(vl) == 5
    for v, (bx0, by0, bx1, by1) in zip(vl.vertebrae, boxes):
        assert abs(v.centroid[1] - (by0 + by1) / 2) < 4     # each body its own piece
    assert vl.gaps_mm[1] == 0.0                               # they still touch there


def test_small_bodies_joined_through_a_disc_are_cut_though_no_larger_than_a_typical_one():
    # two 14 x 24 thoracic bodies over four 26 x 36 lumbar ones; a 6-column bridge fills the
    # thoracic disc: the pair (2 x 14 x 24 + bridge) is smaller than 1.5 lumbar bodies, so the
    # size rule never looks at it, and erosion leaves it joined; its cross-section there is a
    # quarter of the bodies'
    mask, boxes = box_spine([14, 14, 26, 26, 26, 26], [6, 8, 8, 8, 8], cols=90,
                            depths=[24, 24, 36, 36, 36, 36])
    x0 = boxes[0][0]
    mask[1:-1, boxes[0][3]:boxes[1][1], x0 + 9:x0 + 15] = 1
    vl = find_vertebrae(mask, SPACING, label_levels=False)
    assert len(vl) == 6
    for v, (_, by0, _, by1) in zip(vl.vertebrae, boxes):
        assert abs(v.centroid[1] - (by0 + by1) / 2) < 3       # each body its own piece
    # a whole body with no waist is never cut
    whole, _ = box_spine([14, 26, 26], [8, 8], cols=90, depths=[24, 36, 36])
    assert len(find_vertebrae(whole, SPACING, label_levels=False)) == 3


def test_a_cut_s1_is_found_by_the_sacrum_map_where_the_gaps_cannot():
    # six bodies, lumbar-size discs all the way down; the lowest is cut by the image's edge
    mask, boxes = box_spine([24, 25, 26, 26, 25, 14], [8, 9, 10, 10, 9], top=5)
    mask = mask[:, :boxes[-1][3]]                       # the field of view ends inside S1
    gaps_only = find_vertebrae(mask, SPACING)
    assert gaps_only.vertebrae[-1].level == "L5" and gaps_only.level_confidence < 0.5
    sacrum = np.zeros(mask.shape, np.float32)
    x0, y0, x1, y1 = boxes[-1]
    sacrum[:, y0:y1, x0:x1] = 0.9
    vl = find_vertebrae(mask, SPACING, sacrum=sacrum)
    assert [v.level for v in vl.vertebrae] == ["L1", "L2", "L3", "L4", "L5", "S1"]
    assert vl.vertebrae[-1].sacral == pytest.approx(0.9) and vl.vertebrae[0].sacral == 0
    assert vl.level_confidence == 0.8 and "reads bodies 6-6 of 6 as sacrum" in vl.level_reason


def test_the_sacrum_map_and_the_gaps_agreeing_and_a_map_that_says_nothing():
    mask, boxes = box_spine([24, 25, 26, 26, 25, 22, 14, 10], [8, 9, 10, 10, 9, 1, 1],
                            depths=[32, 33, 34, 35, 35, 33, 24, 18])
    sacrum = np.zeros(mask.shape, np.float32)
    for x0, y0, x1, y1 in boxes[5:]:
        sacrum[:, y0:y1, x0:x1] = 1.0
    vl = find_vertebrae(mask, SPACING, sacrum=sacrum)
    assert [v.level for v in vl.vertebrae][4:6] == ["L5", "S1"]
    assert vl.level_confidence == 0.9 and "the disc gaps agree" in vl.level_reason
    # a map with no sacral body leaves the count to the gaps, as without a map
    vl = find_vertebrae(mask, SPACING, sacrum=np.zeros(mask.shape, np.float32))
    assert [v.level for v in vl.vertebrae][5] == "S1" and "fused segments" in vl.level_reason
    # a sacral body with non-sacral ones below it is not a sacrum (the lowest must be)
    odd = np.zeros(mask.shape, np.float32)
    x0, y0, x1, y1 = boxes[2]
    odd[:, y0:y1, x0:x1] = 1.0
    assert sacrum_by_look(find_vertebrae(mask, SPACING, sacrum=odd)) is None
    with pytest.raises(ValueError, match="does not match"):
        find_vertebrae(mask, SPACING, sacrum=odd[:, :-1])


def test_relabel_moves_every_level():
    mask, _ = box_spine([24, 25, 26, 26], [8, 9, 10])
    vl = find_vertebrae(mask, SPACING)
    relabel(vl, 0, "t12")
    assert [v.level for v in vl.vertebrae] == ["T12", "L1", "L2", "L3"]
    assert vl.level_confidence == 1.0 and "user" in vl.level_reason
    with pytest.raises(ValueError, match="unknown level"):
        relabel(vl, 0, "L9")
    with pytest.raises(ValueError, match="no body 8 to name: 4 were found"):
        relabel(vl, 7, "L1")


def test_phantom_levels_known():
    from spinefx.phantom import render_case

    case = render_case(102, "benign")   # T12..S3 in view, fracture at L3 (SYNTHETIC)
    bodies = case.masks("t1")["bodies"]
    vl = find_vertebrae(bodies > 0, (case.spacing_between_slices, *case.pixel_spacing))
    truth = []
    for v in vl.vertebrae:
        x, y, k = (int(round(c)) for c in v.centroid)
        truth.append(case.level_names[bodies[k, y, x] - 1])
    assert [v.level for v in vl.vertebrae] == truth
    assert "S1" in truth and vl.level_confidence >= 0.8
    fractured = next(v for v, name in zip(vl.vertebrae, truth) if name == case.level)
    assert fractured.box == tuple(case.box)


def _vb3(real_spine, n: int) -> np.ndarray:
    path = real_spine / "vb3" / f"vb3_{n:02d}.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return np.moveaxis(np.load(path)["vertebral_bodies"], 2, 0)


@pytest.mark.parametrize("subject", [45, 50, 54])
def test_vb3_five_lumbar_bodies(real_spine, subject):
    truth = _vb3(real_spine, subject)
    vl = find_vertebrae(truth > 0, (1.0, 1.0, 1.0))
    assert len(vl) == 5
    for v, value in zip(vl.vertebrae, range(1, 6)):   # superior -> inferior = L1..L5
        x, y, k = (int(round(c)) for c in v.centroid)
        assert truth[k, y, x] == value
    # no sacrum is labelled in vb3: the count is the default one and says so
    assert [v.level for v in vl.vertebrae] == ["L1", "L2", "L3", "L4", "L5"]
    assert vl.level_confidence < 0.5


def test_dzz_nine_bodies_each_its_own(real_spine):
    path = real_spine / "dzz_t1.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    truth = np.moveaxis(np.load(path)["vertebral_bodies"], 2, 0)
    vl = find_vertebrae(truth > 0, (1.0, 1.0, 1.0))
    values = [truth[int(round(v.centroid[2])), int(round(v.centroid[1])),
                    int(round(v.centroid[0]))] for v in vl.vertebrae]
    assert len(vl) == 9 and sorted(values) == list(range(1, 10))


# ---------------------------------------------------------------------------------------------
# the faster post-processing gives the same result as the implementation it replaced
# ---------------------------------------------------------------------------------------------
def reference_label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """label_components as it was before the speed work (np.take, every pair sorted)."""
    from spinefx.runtime.morphology import _union_find

    fg = np.asarray(mask, dtype=bool)
    flat = fg.reshape(-1, fg.shape[-1])
    padded = np.zeros((flat.shape[0], flat.shape[1] + 1), dtype=bool)
    padded[:, 1:] = flat
    starts = flat & ~padded[:, :-1]
    run_id = np.cumsum(starts.ravel()).reshape(flat.shape) - 1
    run_id = np.where(flat, run_id, -1).reshape(fg.shape).astype(np.int64)
    n_runs = int(starts.sum())
    if n_runs == 0:
        return np.zeros(fg.shape, dtype=np.int32), 0
    edges = []
    for axis in range(fg.ndim - 1):
        lo = np.take(run_id, np.arange(fg.shape[axis] - 1), axis=axis)
        hi = np.take(run_id, np.arange(1, fg.shape[axis]), axis=axis)
        both = (lo >= 0) & (hi >= 0)
        edges.append(np.unique(lo[both] * n_runs + hi[both]))
    pairs = np.concatenate(edges) if edges else np.zeros(0, dtype=np.int64)
    root = _union_find(n_runs, pairs // n_runs, pairs % n_runs)
    _, first, dense = np.unique(root, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    labels = np.zeros(fg.shape, dtype=np.int32)
    labels[fg] = (order[dense] + 1)[run_id[fg]]
    return labels, int(len(first))


def reference_grow_back(seeds: np.ndarray, mask: np.ndarray, max_steps: int) -> np.ndarray:
    """grow_back as it was (np.roll over the whole grid every step)."""
    labels = np.where(mask, seeds, 0).astype(np.int32)
    big = np.iinfo(np.int32).max
    for _ in range(max_steps):
        free = mask & (labels == 0)
        if not free.any():
            break
        best = np.full(labels.shape, big, dtype=np.int32)
        cand = np.where(labels > 0, labels, big)
        for axis in range(3):
            for shift in (1, -1):
                moved = np.roll(cand, shift, axis=axis)
                edge: list[slice | int] = [slice(None)] * 3
                edge[axis] = 0 if shift == 1 else -1
                moved[tuple(edge)] = big
                np.minimum(best, moved, out=best)
        take = free & (best < big)
        if not take.any():
            break
        labels[take] = best[take]
    return labels


def reference_split_merged(labels: np.ndarray, steps: int, grow=None) -> np.ndarray:
    """_split_merged as it was (every erosion and grow-back on the whole crop)."""
    grow = grow or reference_grow_back
    from spinefx.runtime.vertebrae import MERGED_SHARE, erode_in_plane, typical_size

    counts = np.bincount(labels.ravel())
    counts[0] = 0
    typical = typical_size(counts[counts > 0], 8.0 * steps ** 3)
    if typical == 0:
        return labels
    next_value = int(labels.max()) + 1
    for value in np.nonzero(counts > MERGED_SHARE * typical)[0]:
        piece = labels == value
        for factor in (2, 3, 4):
            seeds, n = reference_label_components(erode_in_plane(piece, factor * steps))
            big = np.bincount(seeds.ravel())[1:] >= 0.25 * MERGED_SHARE * typical / factor ** 2
            if n < 2 or big.sum() < 2:
                continue
            keep = np.r_[False, big]
            seeds = np.where(keep[seeds], seeds, 0)
            grown = grow(seeds, piece, max_steps=4 * factor * steps + 4)
            for j, seed_value in enumerate(np.nonzero(keep)[0]):
                labels[grown == seed_value] = value if j == 0 else next_value + j - 1
            next_value += int(big.sum())
            break
    return labels


def reference_disc_gap(vl, i: int) -> float:
    """disc_gap as it was (whole slices, the min of every distance)."""
    a, b = vl.vertebrae[i], vl.vertebrae[i + 1]
    mid = int(round((a.centroid[2] + b.centroid[2]) / 2))
    scale = np.array(vl.spacing_mm[1:])
    best = float(np.linalg.norm(np.subtract(a.centroid_mm, b.centroid_mm)))
    for k in range(max(0, mid - 1), min(vl.labels.shape[0], mid + 2)):
        pa = np.argwhere(vl.labels[k] == a.value) * scale
        pb = np.argwhere(vl.labels[k] == b.value) * scale
        if len(pa) == 0 or len(pb) == 0:
            continue
        axis = (pb.mean(0) - pa.mean(0)) / max(1e-6, float(np.linalg.norm(pb.mean(0) - pa.mean(0))))
        pa = pa[pa @ axis >= np.quantile(pa @ axis, 0.8)]
        pb = pb[pb @ axis <= np.quantile(pb @ axis, 0.2)]
        pa, pb = pa[::max(1, len(pa) // 400)], pb[::max(1, len(pb) // 400)]
        d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min()
        best = min(best, float(max(0.0, d - scale.min())))
    return best


@pytest.fixture
def reference_postprocessing(monkeypatch):
    """A context that swaps the reference implementations into spinefx.runtime.vertebrae;
    ``calls`` counts the reference grow-backs (2+ means _split_merged split something)."""
    import contextlib

    from spinefx.runtime import vertebrae

    calls = {"grow_back": 0}

    def counted_grow_back(*args, **kwargs):
        calls["grow_back"] += 1
        return reference_grow_back(*args, **kwargs)

    @contextlib.contextmanager
    def swapped():
        with monkeypatch.context() as m:
            m.setattr(vertebrae, "label_components", reference_label_components)
            m.setattr(vertebrae, "grow_back", counted_grow_back)
            m.setattr(vertebrae, "_split_merged", lambda labels, steps:
                      reference_split_merged(labels, steps, counted_grow_back))
            m.setattr(vertebrae, "disc_gap", reference_disc_gap)
            yield calls
    return swapped


def assert_same_vertebrae(new, old) -> None:
    assert np.array_equal(new.labels, old.labels)
    assert new.vertebrae == old.vertebrae           # value, centroid, volume, slice, box, level
    assert new.gaps_mm == old.gaps_mm and new.level_reason == old.level_reason
    assert new.reason == old.reason


@pytest.mark.parametrize("shape", [(7, 41, 53), (40, 33), (3, 120, 90)])
def test_label_components_same_as_reference(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.2, 0.45, 0.6):
        mask = rng.random(shape) < density
        new, n_new = label_components(mask)
        old, n_old = reference_label_components(mask)
        assert n_new == n_old and np.array_equal(new, old)


def test_grow_back_same_as_reference():
    from spinefx.runtime.morphology import grow_back

    rng = np.random.default_rng(3)
    mask = rng.random((6, 70, 50)) < 0.7
    seeds = np.where(rng.random(mask.shape) < 0.01, rng.integers(1, 9, mask.shape), 0)
    seeds[0, 0, 0], seeds[-1, -1, -1] = 5, 2        # seeds on the faces: no wrapping
    mask[0, 0, 0] = mask[-1, -1, -1] = True
    for steps in (1, 3, 40):
        new = grow_back(seeds, mask, steps)
        assert np.array_equal(new, reference_grow_back(seeds, mask, steps))
    assert (new > 0).sum() > 0.9 * mask.sum()           # it did grow


def test_merged_bodies_split_as_before(reference_postprocessing):
    mask, _ = box_spine([20, 20, 20, 20], [8, 6, 8])
    mask[:, 53:59, 20:35] = 1       # a 15 px bridge through disc 2: only the 4x erosion cuts it
    with reference_postprocessing() as calls:
        old = find_vertebrae(mask, SPACING)
    assert calls["grow_back"] >= 2, "the reference never split a merged body"
    new = find_vertebrae(mask, SPACING)
    assert len(new) == 4
    assert_same_vertebrae(new, old)


def test_phantom_localiser_map_same_as_reference(reference_postprocessing):
    from spinefx.phantom import render_case
    from spinefx.runtime.segmentation import segment_bodies

    case = render_case(90_001, "malignant")       # SYNTHETIC, not a training seed
    spacing = (case.spacing_between_slices, *case.pixel_spacing)
    for image in (case.t1, case.t2):
        prob = segment_bodies(image, spacing)
        with reference_postprocessing():
            old = find_vertebrae(prob, spacing)
        new = find_vertebrae(prob, spacing)
        assert len(new) >= 3
        assert_same_vertebrae(new, old)
        assert_same_vertebrae(find_vertebrae(prob >= 0.5, spacing), old)   # bool map


@pytest.mark.parametrize("subject", [45, 51])
def test_vb3_localiser_map_same_as_reference(real_spine, subject, reference_postprocessing):
    from spinefx.runtime.segmentation import segment_bodies

    path = real_spine / "vb3" / f"vb3_{subject:02d}.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    data = np.load(path)
    image = np.moveaxis(data["image"], 2, 0)
    sp = [float(v) for v in data["spacing_mm"]]          # rows, cols, slices
    spacing = (sp[2], sp[0], sp[1])
    prob = segment_bodies(image, spacing)
    truth = np.moveaxis(data["vertebral_bodies"], 2, 0) > 0
    for grid in (prob, truth):
        with reference_postprocessing():
            old = find_vertebrae(grid, spacing)
        new = find_vertebrae(grid, spacing)
        assert len(new) >= 3
        assert_same_vertebrae(new, old)


def test_widest_slice_is_the_one_nearest_the_centroid_among_the_near_widest():
    from spinefx.runtime.vertebrae import widest_slice

    flat = np.array([0, 80, 97, 99, 100, 98, 99, 96, 60, 0])    # thin slices: a flat middle
    assert widest_slice(flat, centre=5.2) == 5 and widest_slice(flat, centre=2.4) == 2
    assert widest_slice(flat, centre=5.2, share=1.0) == 4       # the plain maximum
    peaked = np.array([0, 10, 40, 100, 50, 10, 0])               # thick slices: one clear peak
    assert widest_slice(peaked, centre=3.6) == 3 and widest_slice(peaked, centre=1.0) == 3


def test_a_thin_slice_body_gets_its_centre_slice_not_a_lateral_maximum():
    """A cylinder-like body over 21 thin slices, one lateral slice 10% larger than the rest
    (noise, a spur): its slice is the centre one, and its box is that slice's."""
    from spinefx.runtime.vertebrae import find_vertebrae

    mask = np.zeros((21, 80, 60), bool)
    for k in range(21):
        half = 10 if abs(k - 10) < 8 else 6
        mask[k, 20:50, 30 - half:30 + half] = True
    mask[3, 20:50, 19:41] = True                                 # lateral, 10% larger
    vl = find_vertebrae(mask.astype(np.float32), (1.0, 1.0, 1.0))
    [body] = vl.vertebrae
    assert body.slice == 10 and body.box == (20, 20, 40, 50)
