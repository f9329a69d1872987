"""The localiser's training code: it learns on a tiny input, and its ONNX export matches torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spinefx.train.seg_data import SliceSource, dice, draw_batch, labelled_band
from spinefx.train.segmentation import (
    BodyUNet,
    TrainConfig,
    export_onnx,
    load_onnx_weights,
    onnx_parity,
    segmentation_loss,
    train_localiser,
)

TINY_CHANNELS = (4, 8, 16)


def _boxes_source(seed: int) -> SliceSource:
    """Bright rectangles ("bodies") on a noisy darker background, 6 slices of 48 x 48 at 2 mm."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((6, 48, 48), np.uint8)
    for top in (4, 18, 32):
        mask[:, top:top + 10, 14:30] = 1
    image = (200 * mask + rng.normal(60, 15, mask.shape)).astype(np.float32)
    return SliceSource(image, mask, np.ones((48, 48), np.float32), (2.0, 2.0), f"boxes{seed}")


def test_a_few_steps_reduce_the_loss():
    torch.set_num_threads(1)
    config = TrainConfig(steps=40, batch=4, size=32, pixel_mm=2.0, lr=1e-2,
                         channels=TINY_CHANNELS, group_p=(1.0,), log_every=10)
    result = train_localiser([[_boxes_source(0), _boxes_source(1)]], config, log=lambda _: None)
    assert result.steps_done == 40 and len(result.losses) == 4
    assert result.losses[-1] < 0.85 * result.losses[0], result.losses


def test_loss_ignores_pixels_with_zero_weight():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    weight = torch.ones(1, 1, 4, 4)
    weight[..., 2:, :] = 0
    wrong_where_ignored = logits.clone()
    wrong_where_ignored[..., 2:, :] = 50.0   # confidently "body" where the weight is 0
    assert torch.isclose(segmentation_loss(logits, target, weight),
                         segmentation_loss(wrong_where_ignored, target, weight))


def test_batches_are_normalised_and_seeded():
    src = _boxes_source(2)
    a = draw_batch(np.random.default_rng(5), [[src]], [1.0], 3, 32, 2.0)
    b = draw_batch(np.random.default_rng(5), [[src]], [1.0], 3, 32, 2.0)
    for x, y in zip(a, b):
        assert x.shape == (3, 1, 32, 32) and np.array_equal(x, y)
    assert a[0].min() >= -0.5 and a[0].max() <= 1.5
    assert set(np.unique(a[1])) <= {0.0, 1.0}


def test_labelled_band_follows_each_column():
    mask = np.zeros((2, 20, 6), np.uint8)
    mask[0, 5:9, 1:3] = 1
    mask[1, 8:14, 2:4] = 1
    band = labelled_band(mask, margin=1)
    assert band[4:10, 1].all() and not band[3, 1] and not band[10, 1]   # column 1: rows 5-8
    assert band[4:15, 2].all() and not band[15, 2]                      # column 2: rows 5-13
    assert band[4:15, 5].all() and not band[2, 5]    # unlabelled column: the whole band


def test_dice_counts_only_where_weighted():
    truth = np.zeros((1, 4, 4))
    truth[0, :2] = 1
    prob = truth.copy()
    prob[0, 3] = 1                                     # a false positive in row 3
    assert dice(prob, truth) == pytest.approx(16 / 20)
    weight = np.ones((4, 4))
    weight[3] = 0
    assert dice(prob, truth, weight) == 1.0


def test_export_round_trip_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = BodyUNet(TINY_CHANNELS).eval()
    path = tmp_path / "model.onnx"
    record = export_onnx(model, path, example_size=32)
    assert record["bytes"] == path.stat().st_size and len(record["sha256"]) == 64
    rng = np.random.default_rng(0)
    for shape in ((1, 1, 32, 32), (3, 1, 48, 64)):   # dynamic batch, rows and cols
        assert onnx_parity(model, path, rng.random(shape).astype(np.float32)) < 1e-4
    # and back: the folded graph loaded into torch (for fine-tuning) computes the same
    reloaded = load_onnx_weights(path, TINY_CHANNELS)
    assert onnx_parity(reloaded, path, rng.random((2, 1, 32, 48)).astype(np.float32)) < 1e-4


def test_the_same_seed_trains_the_same_weights():
    torch.set_num_threads(1)
    config = TrainConfig(steps=3, batch=2, size=32, pixel_mm=2.0, channels=TINY_CHANNELS,
                         group_p=(1.0,), log_every=1)
    runs = [train_localiser([[_boxes_source(0)]], config, log=lambda _: None).model
            for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)
