"""Two fuzz findings, fixed: a box far larger than the image reaching build_six_channel
directly (the crop was allocated at the box's size), and a pipe or device given as the study
path itself (open() blocked, /dev/zero never ended)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from spinefx.runtime import (
    DicomReadError,
    RoiError,
    Volume,
    align_pair,
    build_six_channel,
    load_series,
    scan_study,
)


def test_a_box_far_larger_than_the_image_is_a_roi_error():
    vol = Volume.from_array(np.random.default_rng(0).normal(100, 10, (5, 32, 32)))
    pair = align_pair(vol, vol)
    with pytest.raises(RoiError, match="far larger than the 32x32 image"):
        build_six_channel(pair, 2, box=(-4000, -4000, 4000, 4000))
    with pytest.raises(RoiError, match="not finite"):
        build_six_channel(pair, 2, box=(0, 0, float("inf"), 10))
    assert build_six_channel(pair, 2, box=(-40, -40, 80, 80)).array.shape[0] == 6


@pytest.mark.parametrize("kind", ["fifo", "device link"])
def test_a_pipe_or_device_as_the_study_path_is_refused(tmp_path, kind):
    path = tmp_path / "study"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    for load in (scan_study, load_series):
        with pytest.raises(DicomReadError, match="not a regular file or folder"):
            load(path)


def test_prediction_files_are_readable_by_other_users(tmp_path):
    """A PACS-push service running as another user must be able to read the outputs."""
    import stat

    from spinefx.phantom import write_phantom_study
    from spinefx.runtime.inference import Predictor
    from spinefx.runtime.predict import predict_study
    from tests.helpers.onnx_model import write_tiny_model

    _, _, case = write_phantom_study(tmp_path / "study", seed=3, label="malignant", t2_variant="T2")
    predictor = Predictor(write_tiny_model(tmp_path / "model", image_size=64))
    result = predict_study(predictor, tmp_path / "study", tmp_path / "out",
                           slice_index=case.slice, box=case.box, dicom=True)
    for path in result.files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
