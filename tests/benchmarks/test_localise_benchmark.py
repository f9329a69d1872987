"""benchmarks/localise.py's scoring on a tiny box spine (the benchmark runs themselves are not
tests): bodies the field of view cuts, detection with and without them, Wilson intervals."""
from __future__ import annotations

import numpy as np
import pytest

from spinefx.runtime.volume import Volume
from tests.helpers.benchmarks import load_benchmark

bench = load_benchmark("localise")
NAMES = ["T11", "T12", "L1", "L2", "L3", "L4"]


def box_spine_with_sliver(sliver_rows: int = 3) -> np.ndarray:
    """(slices, rows, cols) truth: a sliver of T11 on the top rows, five whole bodies below."""
    truth = np.zeros((7, 160, 60), dtype=np.int16)
    truth[1:6, 0:sliver_rows, 15:45] = 1
    for i in range(5):
        top = 10 + i * 28
        truth[1:6, top:top + 22, 15:45] = i + 2
    return truth


def test_cut_by_view_takes_bodies_near_the_top_or_bottom_row():
    truth = box_spine_with_sliver()
    assert bench.cut_by_view(truth, 1.0) == {1}
    # 2 mm from the edge still counts as cut (EDGE_MM); the first whole body is 10 rows down
    assert bench.cut_by_view(truth, 0.2) == {1, 2}
    low = truth.copy()
    low[1:6, 158:160, 15:45] = 7
    assert bench.cut_by_view(low, 1.0) == {1, 7}


def test_detection_is_reported_with_and_without_the_cut_bodies():
    truth = box_spine_with_sliver()
    volume = Volume.from_array(truth.astype(np.float32), pixel_spacing=(1.0, 1.0),
                               slice_spacing=1.0, source="box spine (SYNTHETIC)")
    row = bench.score_subject(volume, truth, NAMES, use_truth=True, model=None)
    # the 3-row sliver (450 mm3) is smaller than a body: dropped as a fragment
    assert (row["n_true"], row["found"]) == (6, 5)
    assert (row["n_true_in_view"], row["found_in_view"]) == (5, 5)
    summary = bench.summarise([row], "box spine")
    assert summary["detection"]["value"] == pytest.approx(5 / 6)
    assert summary["detection_in_view"]["value"] == 1.0
    lo, hi = summary["detection"]["ci_low"], summary["detection"]["ci_high"]
    assert 0.3 < lo < 5 / 6 < hi <= 1.0


def test_rate_has_a_wilson_interval():
    r = bench.rate([True] * 13 + [False] * 7)
    assert (r["k"], r["n"], r["value"]) == (13, 20, 0.65)
    assert r["ci_low"] == pytest.approx(0.433, abs=0.002)
    assert r["ci_high"] == pytest.approx(0.819, abs=0.002)
    assert bench.rate([])["value"] is None
