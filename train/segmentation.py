"""The vertebral-body localiser: a small 2-D U-Net over sagittal slices, its training loop and
its ONNX export (run time: :func:`spinefx.runtime.segmentation.segment_bodies`, no torch).

The network is fully convolutional: it trains on square crops and runs on whole slices
padded to a multiple of 16, so the runtime never crops away part of a field of view. Its ONNX
graph ends in a sigmoid: the runtime reads probabilities. Two output channels: vertebral body,
and sacrum (the fused sacral segments: the lumbosacral anchor the level count starts from,
recognisable by its look even when the field of view cuts S1). Data:
:mod:`spinefx.train.seg_data`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spinefx.runtime.segmentation import file_sha256

from .seg_data import SliceSource, draw_batch

OPSET = 18                      # export/onnx_export.py's opset
INPUT_NAME = "input"
OUTPUT_NAME = "probability"
SACRUM_NAME = "sacrum"
OUTPUTS = 2                     # body, sacrum


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True))


class BodyUNet(nn.Module):
    """U-Net, ``channels`` per level (the last is the bottleneck): (B, C, H, W) -> logits
    (B, outputs, H, W); H and W must divide by 2 ** (len(channels) - 1)."""

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 64, 128), in_channels: int = 1,
                 outputs: int = OUTPUTS):
        super().__init__()
        self.channels = tuple(channels)
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in channels:
            self.down.append(_DoubleConv(c_prev, c))
            c_prev = c
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for c_skip in reversed(channels[:-1]):
            self.up.append(nn.ConvTranspose2d(c_prev, c_skip, 2, stride=2))
            self.merge.append(_DoubleConv(2 * c_skip, c_skip))
            c_prev = c_skip
        self.head = nn.Conv2d(c_prev, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class ProbabilityModel(nn.Module):
    """What is exported: logits -> sigmoid, so the ONNX graph emits probabilities, one output
    per channel (body, then sacrum), each (B, 1, H, W)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = torch.sigmoid(self.net(x))
        return tuple(p[:, i:i + 1] for i in range(p.shape[1]))


def n_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
                      ) -> torch.Tensor:
    """Weighted BCE + soft Dice over the batch, summed over the channels (pixels with weight 0
    count for nothing; a channel with no weighted pixel adds nothing)."""
    total = logits.new_zeros(())
    for c in range(logits.shape[1]):
        lg, tg, wt = logits[:, c], target[:, c], weight[:, c]
        if float(wt.sum()) == 0.0:
            continue
        bce = F.binary_cross_entropy_with_logits(lg, tg, weight=wt, reduction="sum")
        bce = bce / wt.sum().clamp_min(1.0)
        prob = torch.sigmoid(lg) * wt
        inter = (prob * tg).sum()
        soft_dice = (2 * inter + 1.0) / (prob.sum() + (tg * wt).sum() + 1.0)
        total = total + bce + (1.0 - soft_dice)
    return total


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    steps: int = 2000
    batch: int = 8
    size: int = 128                 # training crop (pixels at pixel_mm)
    pixel_mm: float = 1.5
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    group_p: tuple[float, ...] = (0.5, 0.5)   # phantom, real
    max_minutes: float = 0.0        # 0 = no wall-clock cap; otherwise stop early, recorded
    log_every: int = 50


@dataclass
class TrainResult:
    model: BodyUNet
    steps_done: int
    seconds: float
    losses: list[float] = field(default_factory=list)   # mean loss per log window
    stopped_early: bool = False

    def summary(self) -> dict:
        return {"steps_done": self.steps_done, "seconds": round(self.seconds, 1),
                "stopped_early_by_time_cap": self.stopped_early,
                "loss_first_window": self.losses[0] if self.losses else None,
                "loss_last_window": self.losses[-1] if self.losses else None}


def train_localiser(groups: list[list[SliceSource]], config: TrainConfig,
                    log: Callable[[str], None] = print, init: BodyUNet | None = None
                    ) -> TrainResult:
    """Train :class:`BodyUNet` on batches drawn from ``groups`` (see :func:`draw_batch`);
    ``init``: fine-tune this model instead of a fresh one (its BatchNorm statistics are kept
    frozen, as :func:`load_onnx_weights` leaves them)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = init if init is not None else BodyUNet(config.channels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr,
                                                   total_steps=config.steps, pct_start=0.1)
    p = np.asarray(config.group_p, np.float64)
    p = p / p.sum()
    t0, window, losses, step = time.perf_counter(), [], [], 0
    stopped = False
    model.train()
    if init is not None:
        _freeze_norm_statistics(model)
    for step in range(1, config.steps + 1):
        x, t, w = (torch.from_numpy(a) for a in
                   draw_batch(rng, groups, list(p), config.batch, config.size, config.pixel_mm))
        loss = segmentation_loss(model(x), t, w)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        window.append(float(loss.detach()))
        if step % config.log_every == 0 or step == config.steps:
            losses.append(round(float(np.mean(window)), 4))
            window = []
            log(f"step {step}/{config.steps} loss {losses[-1]:.4f} "
                f"{time.perf_counter() - t0:.0f}s")
        if config.max_minutes and time.perf_counter() - t0 > 60 * config.max_minutes:
            stopped = True
            log(f"wall-clock cap of {config.max_minutes} min reached at step {step}")
            break
    if window:
        losses.append(round(float(np.mean(window)), 4))
    model.eval()
    return TrainResult(model, step, time.perf_counter() - t0, losses, stopped)


def _freeze_norm_statistics(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def load_onnx_weights(path: Path, channels: tuple[int, ...], outputs: int = OUTPUTS) -> BodyUNet:
    """A :class:`BodyUNet` computing exactly what the exported ``path`` computes. The export
    folds each BatchNorm into its convolution; here the folded weight goes into the conv and
    the folded bias into an identity BatchNorm (mean 0, variance 1 - eps), so fine-tuning starts
    from the shipped function (keep those BatchNorms in eval mode). A file with fewer output
    channels (a body-only localiser) fills the first ones; the rest of the head starts fresh."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:   # the exporter shares equal tensors through Identity nodes
        if node.op_type == "Identity" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    model = BodyUNet(channels, outputs=outputs).eval()
    # graph order: encoder convs, then per decoder level its ConvTranspose and two convs, head
    pairs: list[tuple[nn.Conv2d | nn.ConvTranspose2d, nn.BatchNorm2d | None]] = []

    def add_block(block: nn.Module) -> None:
        layers = list(block.children())            # conv, norm, relu, conv, norm, relu
        for conv, norm in zip(layers[0::3], layers[1::3]):
            pairs.append((cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, norm)))

    for block in model.down:
        add_block(block)
    for up, merge in zip(model.up, model.merge):
        pairs.append((cast(nn.ConvTranspose2d, up), None))
        add_block(merge)
    pairs.append((model.head, None))
    nodes = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    if len(nodes) != len(pairs):
        raise ValueError(f"{path} has {len(nodes)} convolutions, the U-Net {len(pairs)}")
    with torch.no_grad():
        for node, (conv, norm) in zip(nodes, pairs):
            w = torch.from_numpy(weights[node.input[1]].copy())
            b = torch.from_numpy(weights[node.input[2]].copy())
            if conv is model.head and w.shape[0] < conv.weight.shape[0] \
                    and w.shape[1:] == conv.weight.shape[1:]:
                assert conv.bias is not None
                conv.weight[:w.shape[0]].copy_(w)
                conv.bias[:w.shape[0]].copy_(b)
                continue
            if conv.weight.shape != w.shape:
                raise ValueError(f"{node.name}: shape {tuple(w.shape)} vs "
                                 f"{tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            if norm is not None:
                assert norm.running_mean is not None and norm.running_var is not None
                norm.weight.fill_(1.0)
                norm.bias.copy_(b)
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
            else:
                assert conv.bias is not None
                conv.bias.copy_(b)
    return model


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def export_onnx(model: BodyUNet, path: Path, example_size: int = 128) -> dict:
    """Export probabilities with dynamic batch, rows and cols (legacy exporter: one file, no
    external data); returns the export record."""
    wrapper = ProbabilityModel(model).eval()
    example = torch.rand(2, 1, example_size, example_size)
    names = output_names(model)
    axes = {0: "batch", 2: "rows", 3: "cols"}
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes={INPUT_NAME: axes, **{n: axes for n in names}},
                          do_constant_folding=True)
    return {"exporter": "torchscript", "opset": OPSET,
            "seconds": round(time.perf_counter() - t0, 2),
            "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def onnx_parity(model: BodyUNet, path: Path, inputs: np.ndarray) -> float:
    """max |p_onnx - p_torch| on ``inputs`` (B, 1, H, W), over every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: inputs.astype(np.float32)})
    with torch.no_grad():
        want = ProbabilityModel(model).eval()(torch.from_numpy(inputs.astype(np.float32)))
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def output_names(model: BodyUNet) -> list[str]:
    """The ONNX outputs: ``probability`` (body), then ``sacrum`` when the head has two."""
    return [OUTPUT_NAME, SACRUM_NAME][:model.head.out_channels]


def config_record(config: TrainConfig) -> dict:
    record = asdict(config)
    record["channels"] = list(config.channels)
    record["group_p"] = list(config.group_p)
    return record
