"""The localiser's training code: it learns on a tiny input, and its ONNX export matches torch."""
from __future__ import annotations

from pathlib import Path

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
    for x, y, channels in zip(a, b, (1, 2, 2)):   # image; body + sacrum targets, weights
        assert x.shape == (3, channels, 32, 32) and np.array_equal(x, y)
    assert a[0].min() >= -0.5 and a[0].max() <= 1.5
    assert set(np.unique(a[1])) <= {0.0, 1.0}
    # no sacrum labels in this source: the sacrum channel counts only in the padding below a
    # cut field of view (known empty), never on the image
    counted = a[2][:, 1] > 0
    assert (a[0][:, 0][counted] == 0).all() and a[2][:, 0].max() == 1


def test_phantom_sources_label_the_sacrum_and_vb3_only_inside_its_band(real_spine):
    from spinefx.train.seg_data import phantom_sources, vb3_sources

    src = phantom_sources(range(4, 5))[0]   # seed 4: S1-S3 in the field of view
    assert src.sacrum is not None and src.focus is not None and src.sacrum.any()
    assert not (src.sacrum.astype(bool) & ~src.mask.astype(bool)).any()   # sacral bodies only
    assert src.sacrum_weight is not None and src.sacrum_weight.min() == 1
    path = Path(real_spine) / "vb3" / "vb3_01.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    real = vb3_sources(Path(real_spine), (1,))[0]
    assert real.sacrum is not None and not real.sacrum.any()
    assert np.array_equal(real.sacrum_weight, real.weight)   # not taught below L5's band


def test_a_cut_field_of_view_shows_padding_with_no_body_and_no_sacrum_below():
    from spinefx.train.seg_data import _cut_field_of_view

    x = np.full((40, 10), 0.7, np.float32)
    planes = [np.ones((40, 10), np.float32) for _ in range(5)]   # body, w, sacrum, w, centre
    planes[1][:] = planes[3][:] = 0.0                              # unlabelled before the cut
    _cut_field_of_view(np.random.default_rng(3), x, planes)
    cut = int(np.argmax(x[:, 0] == 0))
    assert 16 <= cut < 40 and (x[:cut] == 0.7).all() and (x[cut:] == 0).all()
    body, body_w, sacrum, sacrum_w, centre = planes
    assert (body[cut:] == 0).all() and (sacrum[cut:] == 0).all() and (centre[cut:] == 0).all()
    assert (body_w[cut:] == 1).all() and (sacrum_w[cut:] == 1).all()   # padding: known empty
    assert (body[:cut] == 1).all() and (body_w[:cut] == 0).all()       # above: untouched


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


def test_two_outputs_by_name_and_a_body_only_file_fills_the_body_channel(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    body_only = BodyUNet(TINY_CHANNELS, outputs=1).eval()
    old = tmp_path / "old.onnx"
    export_onnx(body_only, old, example_size=32)
    grown = load_onnx_weights(old, TINY_CHANNELS)            # two outputs by default
    new = tmp_path / "new.onnx"
    export_onnx(grown, new, example_size=32)
    session = ort.InferenceSession(str(new), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probability", "sacrum"]
    x = np.random.default_rng(1).random((2, 1, 32, 32)).astype(np.float32)
    body_new, sacrum = session.run(None, {"input": x})
    body_old = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    assert np.abs(body_new - body_old).max() < 1e-5 and sacrum.shape == body_new.shape


def test_the_same_seed_trains_the_same_weights():
    torch.set_num_threads(1)
    config = TrainConfig(steps=3, batch=2, size=32, pixel_mm=2.0, channels=TINY_CHANNELS,
                         group_p=(1.0,), log_every=1)
    runs = [train_localiser([[_boxes_source(0)]], config, log=lambda _: None).model
            for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)


def test_fracture_edge_weight_weighs_the_outline_of_the_fractured_body_only():
    from spinefx.train.seg_data import EDGE_PX, _planes, fracture_edge

    src = _boxes_source(3)
    focus = np.zeros_like(src.mask)
    focus[:, 18:28, 14:30] = 1                         # the middle "body" is the fracture
    edge = fracture_edge(focus[0])
    assert edge[18, 20] and edge[17, 20] and edge[18 + EDGE_PX - 1, 20]   # on and near it
    assert not edge[23, 22] and not edge[4, 20]       # its core, another body
    plain = _planes(SliceSource(src.image, src.mask, src.weight, src.spacing, "a",
                                focus=focus), 2, 3, None)[2]
    heavy = _planes(SliceSource(src.image, src.mask, src.weight, src.spacing, "b",
                                focus=focus, edge_weight=4.0), 2, 3, None)[2]
    assert set(np.unique(plain)) == {1.0} and set(np.unique(heavy)) == {1.0, 4.0}
    assert np.array_equal(heavy == 4.0, edge)
    # the weight survives resampling and cropping as a weight, not as a 0/1 mask
    rich = SliceSource(src.image, src.mask, src.weight, src.spacing, "c", focus=focus,
                       edge_weight=4.0)
    weights = draw_batch(np.random.default_rng(1), [[rich]], [1.0], 6, 32, 2.0)[2][:, 0]
    assert weights.max() == 4.0 and set(np.unique(weights)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
