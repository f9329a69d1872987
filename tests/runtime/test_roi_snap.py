"""runtime.roi_snap: the classifier sees the vertebral body under the given box or click."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.runtime import align_pair
from spinefx.runtime.inference import Predictor
from spinefx.runtime.roi_snap import RoiSnap, body_box_at
from tests.helpers.phantoms import phantom_volumes

MM = (1.0, 1.0)


def _mask(*boxes: tuple[int, int, int, int], shape=(80, 80)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def test_any_box_whose_centre_lies_in_a_body_snaps_to_its_tight_box() -> None:
    mask = _mask((20, 10, 50, 30), (20, 34, 50, 54))        # two bodies, a 4 px disc between
    for given in [(22, 12, 48, 28), (10, 0, 60, 40), (25, 15, 40, 22)]:
        snap = body_box_at(mask, given, MM)
        assert snap.snapped and snap.box == (20.0, 10.0, 50.0, 30.0) and snap.given == given
    lower = body_box_at(mask, (18, 33, 52, 56), MM)
    assert lower.snapped and lower.box == (20.0, 34.0, 50.0, 54.0)


def test_a_box_on_the_disc_or_background_is_kept_with_the_reason() -> None:
    mask = _mask((20, 10, 50, 30), (20, 34, 50, 54))
    for given in [(20, 22, 50, 42), (60, 60, 79, 79), (-40, -40, -2, -2)]:   # disc, air, off
        snap = body_box_at(mask, given, MM)
        assert not snap.snapped and snap.box == tuple(float(v) for v in given)
        assert "no vertebral body under the box's centre" in snap.reason


def test_a_piece_unlike_one_body_is_not_snapped_to() -> None:
    joined = _mask((20, 10, 50, 54))                  # 44 mm tall, 30 wide: two bodies joined
    assert "two bodies joined" in body_box_at(joined, (20, 10, 50, 54), MM).reason
    speck = _mask((30, 30, 34, 33))                   # 4 mm wide
    snap = body_box_at(speck, (25, 25, 40, 38), MM)
    assert not snap.snapped and "not the size of a vertebral body" in snap.reason
    # the same speck at 3 mm pixels is a 12 mm body
    assert body_box_at(speck, (25, 25, 40, 38), (3.0, 3.0)).snapped


def test_json_names_both_boxes() -> None:
    doc = RoiSnap((1.0, 2.0, 3.0, 4.0), (0.0, 0.0, 5.0, 5.0), True, "why").to_json()
    assert doc == {"snapped": True, "box": [1.0, 2.0, 3.0, 4.0],
                   "box_given": [0.0, 0.0, 5.0, 5.0], "reason": "why"}


@pytest.fixture(scope="module")
def phantom_pair():
    t1, t2, case = phantom_volumes(31, "malignant")
    return align_pair(t1, t2), case


def test_shifted_boxes_and_a_centre_click_give_the_same_probability(phantom_pair) -> None:
    """On a phantom, with the bundled model and localiser: the ROI the user gives no longer
    moves P (the model sees the localiser's box of the body each time)."""
    pair, case = phantom_pair
    x0, y0, x1, y1 = (float(v) for v in case.box)
    predictor = Predictor()
    tight = predictor.predict_pair(pair, case.slice, box=(x0, y0, x1, y1))
    assert tight.roi_snap is not None and tight.roi_snap["snapped"]
    truth = case.vertebra_mask[case.slice] > 0
    sx0, sy0, sx1, sy1 = (int(v) for v in tight.roi_snap["box"])
    assert truth[sy0:sy1, sx0:sx1].sum() >= 0.9 * truth.sum()     # the box holds the body
    others = [predictor.predict_pair(pair, case.slice, box=(x0 + 3, y0, x1 + 3, y1)),
              predictor.predict_pair(pair, case.slice, box=(x0 - 4, y0 - 4, x1 + 4, y1 + 4)),
              predictor.predict_pair(pair, case.slice,
                                     center=((x0 + x1) / 2, (y0 + y1) / 2))]
    for other in others:
        assert other.roi_snap["box"] == tight.roi_snap["box"]
        assert other.probability == pytest.approx(tight.probability, abs=1e-6)
        assert other.roi_snap["box_given"] != tight.roi_snap["box_given"]
    kept = Predictor(snap_roi=False).predict_pair(pair, case.slice, box=(x0 + 3, y0, x1 + 3, y1))
    assert kept.roi_snap is None and "roi_snap" not in kept.summary()
    assert kept.model_input.roi != tight.model_input.roi
    assert tight.summary()["roi_snap"]["snapped"] is True


def test_without_a_localiser_the_box_is_kept_and_the_reason_said(tmp_path) -> None:
    from spinefx.runtime.roi_snap import snap_to_body
    from spinefx.runtime.volume import Volume

    volume = Volume.from_array(np.zeros((3, 32, 32), np.float32), pixel_spacing=(1.0, 1.0),
                               slice_spacing=4.0)
    snap = snap_to_body(volume, 1, (4, 4, 20, 20), model_dir=tmp_path)   # an empty folder
    assert not snap.snapped and snap.box == (4.0, 4.0, 20.0, 20.0)
    assert snap.reason.startswith("box kept: the localiser could not run")
