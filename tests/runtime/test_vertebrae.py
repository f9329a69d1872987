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


def test_relabel_moves_every_level():
    mask, _ = box_spine([24, 25, 26, 26], [8, 9, 10])
    vl = find_vertebrae(mask, SPACING)
    relabel(vl, 0, "t12")
    assert [v.level for v in vl.vertebrae] == ["T12", "L1", "L2", "L3"]
    assert vl.level_confidence == 1.0 and "user" in vl.level_reason
    with pytest.raises(ValueError, match="unknown level"):
        relabel(vl, 0, "L9")
    with pytest.raises(ValueError, match="outside"):
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
