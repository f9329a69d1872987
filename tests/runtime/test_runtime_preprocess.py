"""The model input: six channels, square ROI, normalisation, edge slices, configuration."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from spinefx.runtime import (
    PreprocessConfig,
    RoiError,
    SpineFXWarning,
    Volume,
    align_pair,
    box_from_center,
    build_six_channel,
    square_roi,
)
from spinefx.runtime.preprocess import crop, neighbour_slices, normalise


def _textured(n=7, rows=96, cols=80, seed=0, spacing=(0.5, 0.5)):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    base = 300 + 200 * np.sin(r / 7.0) * np.cos(c / 9.0)
    data = np.stack([base + 40 * i + rng.normal(0, 15, (rows, cols)) for i in range(n)])
    return Volume.from_array(data.astype(np.float32), pixel_spacing=spacing, slice_spacing=4.0)


def _quiet_build(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpineFXWarning)
        t1, t2, *rest = args
        return build_six_channel(align_pair(t1, t2), *rest, **kw)


def test_output_shape_dtype_range():
    t1, t2 = _textured(seed=1), _textured(seed=2)
    mi = build_six_channel(align_pair(t1, t2), 3, box=(20, 30, 50, 60))
    assert mi.array.shape == (6, 224, 224) and mi.array.dtype == np.float32
    assert np.isfinite(mi.array).all()
    assert mi.array.min() >= 0.0 and mi.array.max() <= 1.0
    assert mi.array.min() == 0.0 and mi.array.max() == 1.0  # percentiles reach both ends
    assert mi.slices == (2, 3, 4)
    assert mi.notes == []
    small = build_six_channel(align_pair(t1, t2), 3, box=(20, 30, 50, 60),
                              config=PreprocessConfig(image_size=64))
    assert small.array.shape == (6, 64, 64)


@pytest.mark.parametrize("box", [(10, 20, 40, 30), (0.5, 0.5, 3.2, 40.7), (100, 5, 101, 6),
                                 (33.3, 12.9, 71.1, 90.0)])
@pytest.mark.parametrize("margin", [0.0, 0.15, 0.5])
def test_square_roi_contains_box_plus_margin(box, margin):
    x0, y0, x1, y1 = square_roi(box, margin)
    assert x1 - x0 == y1 - y0 >= 2
    side = max(box[2] - box[0], box[3] - box[1])
    m = margin * side
    assert x1 - x0 >= side * (1 + 2 * margin) - 1
    assert x1 - x0 <= side * (1 + 2 * margin) + 1 or x1 - x0 == 2
    # contains the box grown by the margin along its longer side (1 px rounding)
    assert x0 <= box[0] - (m if box[2] - box[0] == side else 0) + 1
    assert y0 <= box[1] - (m if box[3] - box[1] == side else 0) + 1
    assert x1 >= box[2] + (m if box[2] - box[0] == side else 0) - 1
    assert y1 >= box[3] + (m if box[3] - box[1] == side else 0) - 1
    # always contains the box itself
    assert x0 <= box[0] + 0.5 and y0 <= box[1] + 0.5 and x1 >= box[2] - 0.5 and y1 >= box[3] - 0.5
    # centred on the box
    assert abs((x0 + x1) / 2 - (box[0] + box[2]) / 2) <= 1
    assert abs((y0 + y1) / 2 - (box[1] + box[3]) / 2) <= 1


@pytest.mark.parametrize("box", [(5, 5, 5, 9), (5, 9, 9, 5), (9, 5, 5, 9)])
def test_square_roi_rejects_empty_box(box):
    with pytest.raises(RoiError, match="empty"):
        square_roi(box, 0.1)


def test_center_and_size_mm_use_anisotropic_pixel_spacing():
    box = box_from_center((50, 60), 40.0, (0.5, 1.0))  # rows 0.5 mm apart, columns 1.0 mm
    x0, y0, x1, y1 = box
    assert (x1 - x0) * 1.0 == pytest.approx(40.0)
    assert (y1 - y0) * 0.5 == pytest.approx(40.0)
    # the box is centred on the middle of pixel (50, 60), which spans [50, 51) x [60, 61)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((50.5, 60.5))
    assert box_from_center((10, 10), 4.0, (1.0, 1.0)) == pytest.approx((8.5, 8.5, 12.5, 12.5))
    with pytest.raises(RoiError):
        box_from_center((1, 1), 0.0, (1.0, 1.0))
    t1 = _textured(rows=200, cols=120, spacing=(0.5, 1.0))
    t2 = _textured(rows=200, cols=120, spacing=(0.5, 1.0), seed=5)
    cfg = PreprocessConfig(roi_margin=0.0)
    mi = build_six_channel(align_pair(t1, t2), 3, center=(60, 100), size_mm=40.0, config=cfg)
    x0, y0, x1, y1 = mi.roi
    assert x1 - x0 == y1 - y0 == 80  # the longer side in pixels: 40 mm / 0.5 mm
    assert (x0 + x1) / 2 == pytest.approx(60, abs=1) and (y0 + y1) / 2 == pytest.approx(100, abs=1)
    default = build_six_channel(align_pair(t1, t2), 3, center=(60, 100),
                                config=cfg)  # default 50 mm
    assert default.roi[2] - default.roi[0] == 100


def test_box_and_center_are_mutually_exclusive():
    t1, t2 = _textured(), _textured(seed=3)
    with pytest.raises(RoiError, match="either"):
        build_six_channel(align_pair(t1, t2), 3, box=(10, 10, 40, 40), center=(20, 20))
    with pytest.raises(RoiError, match="either"):
        build_six_channel(align_pair(t1, t2), 3)


def test_roi_past_the_edge_pads_with_zero():
    t1, t2 = _textured(seed=4), _textured(seed=6)
    cfg = PreprocessConfig(roi_margin=0.0, image_size=64)
    # box 40 px wide starting 20 px left of the image: the left half of the ROI is padding
    mi = build_six_channel(align_pair(t1, t2), 3, box=(-20, 30, 20, 70), config=cfg)
    assert mi.roi == (-20, 30, 20, 70)
    assert np.isfinite(mi.array).all()
    left = mi.array[:, :, :28]  # 20/40 of 64 columns = 32; keep clear of the resize blur
    assert (left == 0).all()
    right = mi.array[:, :, 36:]
    assert (right > 0).mean() > 0.9
    # crop itself: NaN outside, pixels inside
    c = crop(t1.data[0], (-2, -2, 3, 3))
    assert np.isnan(c[:2]).all() and np.isnan(c[:, :2]).all()
    np.testing.assert_array_equal(c[2:, 2:], t1.data[0, :3, :3])


@pytest.mark.parametrize("box", [(-60, 10, -20, 50), (10, 200, 40, 240), (500, 5, 540, 45),
                                 (10, -90, 40, -50)])
def test_roi_entirely_outside_raises(box):
    t1, t2 = _textured(), _textured(seed=3)
    with pytest.raises(RoiError, match="outside"):
        build_six_channel(align_pair(t1, t2), 3, box=box, config=PreprocessConfig(roi_margin=0.0))


def test_lesion_slice_outside_series_raises():
    t1, t2 = _textured(), _textured(seed=3)
    for k in (-1, 7):
        with pytest.raises(RoiError, match="outside the series"):
            build_six_channel(align_pair(t1, t2), k, box=(10, 10, 40, 40))


def _index_coded(n=6, sign=1.0, base=100.0, rows=48, cols=40):
    """Every pixel of slice i = base + sign * 10 * i (constant slices, distinct values)."""
    data = np.stack([np.full((rows, cols), base + sign * 10.0 * i) for i in range(n)])
    return Volume.from_array(data.astype(np.float32))


def test_channel_order_t1_then_t2_each_k_minus_1_k_k_plus_1():
    t1 = _index_coded(sign=+1.0, base=100.0)   # increases with slice index
    t2 = _index_coded(sign=-1.0, base=900.0)   # decreases with slice index
    mi = build_six_channel(align_pair(t1, t2), 3, box=(5, 5, 30, 30))
    # percentiles over slices 2, 3, 4: T1 values 120/130/140 -> 0, .5, 1; T2 880/870/860 -> 1, .5, 0
    means = mi.array.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(means, [0.0, 0.5, 1.0, 1.0, 0.5, 0.0], atol=1e-6)
    assert mi.intensity_ranges["T1"] == pytest.approx((120.0, 140.0), abs=0.5)
    assert mi.intensity_ranges["T2"] == pytest.approx((860.0, 880.0), abs=0.5)
    assert mi.config.channel_names == ("T1[k-1]", "T1[k]", "T1[k+1]",
                                       "T2[k-1]", "T2[k]", "T2[k+1]")


def test_two_neighbours_config_gives_ten_channels():
    t1 = _index_coded(n=8)
    t2 = _index_coded(n=8, sign=-1.0, base=900.0)
    cfg = PreprocessConfig(neighbours=2, image_size=32)
    mi = build_six_channel(align_pair(t1, t2), 4, box=(5, 5, 30, 30), config=cfg)
    assert mi.array.shape == (10, 32, 32) == (cfg.n_channels, 32, 32)
    assert mi.slices == (2, 3, 4, 5, 6)
    means = mi.array.reshape(10, -1).mean(axis=1)
    np.testing.assert_allclose(means[:5], [0, .25, .5, .75, 1], atol=0.02)


@pytest.mark.parametrize("k,expected,dup", [(0, (0, 0, 1), (0, 1)), (5, (4, 5, 5), (1, 2))])
def test_edge_slice_replicated_with_warning(k, expected, dup):
    t1 = _textured(n=6, seed=8)
    t2 = _textured(n=6, seed=9)
    with pytest.warns(SpineFXWarning, match="replicated"):
        mi = build_six_channel(align_pair(t1, t2), k, box=(20, 20, 50, 50))
    assert mi.slices == expected
    a, b = dup
    np.testing.assert_array_equal(mi.array[a], mi.array[b])          # T1
    np.testing.assert_array_equal(mi.array[3 + a], mi.array[3 + b])  # T2
    other = ({0, 1, 2} - {a, b}).pop()
    assert not np.array_equal(mi.array[other], mi.array[a])
    assert len(mi.notes) == 1 and "does not exist" in mi.notes[0]


def test_neighbour_slices_helper():
    picked, notes = neighbour_slices(0, 1)
    assert picked == [0, 0, 0] and len(notes) == 2
    assert neighbour_slices(2, 5) == ([1, 2, 3], [])
    with pytest.raises(RoiError):
        neighbour_slices(5, 5)


def test_deterministic():
    t1, t2 = _textured(seed=10), _textured(seed=11)
    a = build_six_channel(align_pair(t1, t2), 2, box=(12.3, 20.7, 55.1, 61.9))
    b = build_six_channel(align_pair(_textured(seed=10), _textured(seed=11)), 2,
                          box=(12.3, 20.7, 55.1, 61.9))
    assert a.array.tobytes() == b.array.tobytes()
    assert a.roi == b.roi and a.intensity_ranges == b.intensity_ranges


def test_invariant_to_linear_intensity_rescale():
    t1, t2 = _textured(seed=12), _textured(seed=13)
    ref = build_six_channel(align_pair(t1, t2), 3, box=(15, 25, 55, 70))
    t1_gain = t1.with_data(t1.data * 3.0 + 100.0)
    t2_gain = t2.with_data(t2.data * 0.25 + 7.0)
    out = build_six_channel(align_pair(t1_gain, t2_gain), 3, box=(15, 25, 55, 70))
    np.testing.assert_allclose(out.array, ref.array, atol=1e-5)
    lo, hi = ref.intensity_ranges["T1"]
    assert out.intensity_ranges["T1"] == pytest.approx((3 * lo + 100, 3 * hi + 100), rel=1e-5)


def test_normalisation_uses_roi_only():
    t1, t2 = _textured(seed=14), _textured(seed=15)
    ref = build_six_channel(align_pair(t1, t2), 3, box=(15, 25, 45, 55))
    data = t1.data.copy()
    data[:, :, 70:] = 1e6  # a bright artefact outside the ROI
    out = build_six_channel(align_pair(t1.with_data(data), t2), 3, box=(15, 25, 45, 55))
    np.testing.assert_array_equal(out.array, ref.array)


def test_constant_roi_is_refused():
    flat = Volume.from_array(np.full((5, 40, 40), 7.0))
    with pytest.raises(RoiError, match="contrast"):
        build_six_channel(align_pair(flat, _textured(n=5, rows=40, cols=40)), 2, box=(5, 5, 20, 20))
    with pytest.raises(RoiError, match="outside"):
        normalise(np.full((3, 4, 4), np.nan, dtype=np.float32), 1, 99)


def test_t2_on_another_grid_is_aligned_inside_build():
    t1 = _textured(n=5, rows=64, cols=64, spacing=(1.0, 1.0), seed=20)
    same = t1.with_data(t1.data.copy())
    # T2: same planes, same pixels, but stored at half the resolution (2 mm)
    coarse = Volume(data=t1.data[:, ::2, ::2], pixel_spacing=(2.0, 2.0),
                    positions=t1.positions, row_direction=t1.row_direction,
                    column_direction=t1.column_direction)
    a = build_six_channel(align_pair(t1, same), 2, box=(16, 16, 40, 40))
    b = build_six_channel(align_pair(t1, coarse), 2, box=(16, 16, 40, 40))
    np.testing.assert_array_equal(a.array[:3], b.array[:3])  # T1 untouched
    assert np.abs(a.array[3:] - b.array[3:]).mean() < 0.15    # T2 resampled onto the T1 grid


def test_config_round_trip_and_unknown_key():
    cfg = PreprocessConfig(image_size=128, roi_margin=0.2, neighbours=1, percentile_low=2.0)
    d = cfg.to_dict()
    assert d["image_size"] == 128 and d["version"] == 1
    assert PreprocessConfig.from_dict(d) == cfg
    import json
    assert PreprocessConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    with pytest.raises(ValueError, match="colour_space"):
        PreprocessConfig.from_dict({**d, "colour_space": "rgb"})
    assert PreprocessConfig().n_channels == 6
