"""Predictor.predict_rois: many vertebrae of one pair in one batched model run give the same
predictions as one predict_pair call each (SYNTHETIC phantom, the bundled model)."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.runtime.inference import Predictor
from spinefx.runtime.matching import align_pair
from spinefx.runtime.vertebrae import find_vertebrae
from spinefx.runtime.volume import Volume


@pytest.fixture(scope="module")
def pair_and_rois():
    """A SYNTHETIC phantom (seed 102, T12..S3, a crush at L3) as an aligned T1/T2 pair and the
    (widest slice, tight box) of every body of its truth mask, as the localiser hands them."""
    from spinefx.phantom import render_case

    case = render_case(102, "benign", t2_scale=1.0)
    t1 = Volume.from_array(case.t1, pixel_spacing=case.pixel_spacing,
                           slice_spacing=case.spacing_between_slices, source="phantom T1")
    t2 = Volume.from_array(case.t2, pixel_spacing=case.pixel_spacing,
                           slice_spacing=case.spacing_between_slices, source="phantom T2")
    spacing = (case.spacing_between_slices, *case.pixel_spacing)
    vl = find_vertebrae(case.masks("t1")["bodies"] > 0, spacing, label_levels=False)
    rois = [(v.slice, tuple(float(c) for c in v.box)) for v in vl.vertebrae]
    assert len(rois) >= 5
    return align_pair(t1, t2), rois


@pytest.fixture(scope="module")
def predictor():
    # the batched path takes the localiser's boxes as they are: compare with boxes as given
    return Predictor(threads=1, snap_roi=False)


def test_batched_equals_one_by_one(pair_and_rois, predictor):
    pair, rois = pair_and_rois
    batched = predictor.predict_rois(pair, rois)
    single = [predictor.predict_pair(pair, k, box=box) for k, box in rois]
    assert len(batched) == len(rois)
    probabilities = [p.probability for p in single]
    assert len(set(round(p, 4) for p in probabilities)) > 1   # distinct vertebrae, distinct P
    for b, s in zip(batched, single):
        assert b.probability == pytest.approx(s.probability, abs=1e-5)
        assert b.label == s.label and b.roi == s.roi
        assert b.model_input.slices == s.model_input.slices
        np.testing.assert_array_equal(b.model_input.array, s.model_input.array)
        np.testing.assert_allclose(b.cam_roi, s.cam_roi, atol=1e-4)
        np.testing.assert_allclose(b.cam_slice, s.cam_slice, atol=1e-4)
        np.testing.assert_array_equal(b.t1_slice, s.t1_slice)
        assert (b.ood is None) == (s.ood is None) and b.ood_reason == s.ood_reason
        assert set(b.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_small_batches_and_no_roi(pair_and_rois, predictor):
    pair, rois = pair_and_rois
    whole = predictor.predict_rois(pair, rois)
    chunked = predictor.predict_rois(pair, rois, batch_size=len(rois) - 1)   # last chunk: 1
    assert [p.probability for p in chunked] == pytest.approx([p.probability for p in whole],
                                                             abs=1e-5)
    assert predictor.predict_rois(pair, []) == []
