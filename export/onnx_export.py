"""torch -> ONNX with the class-activation map as a second output, and the parity gates.

For a ResNet whose head is global average pooling + one linear layer, the logit is
``z = b + sum_k w_k mean_ij A_k(i, j)`` with ``A`` the last convolutional block's output, so
``dz/dA_k(i, j) = w_k / (h w)`` and Grad-CAM's channel weights (the spatial mean of those
gradients) are ``w_k / (h w)``. Grad-CAM at ``layer4`` is therefore ``ReLU(sum_k w_k A_k)``
divided by ``h w``: the same map up to a positive constant. :class:`CamModel` computes it in the
forward pass (a 1x1 convolution of ``A`` with the head's weights), so the exported graph emits it
and the runtime needs no autograd.

Two gates run on every export and raise :class:`ParityError` (naming the measured value and
the bound) when they fail:

- :func:`check_probability_parity`: ONNX Runtime vs PyTorch probabilities on real preprocessed
  cases, max |difference| <= 1e-4;
- :func:`check_cam_parity`: the in-graph map vs the ``grad-cam`` package's ``GradCAM`` on
  ``backbone.layer4`` of the same PyTorch model, both put through grad-cam's own
  post-processing (ReLU, per-map min-max scaling, bilinear resize to the input size);
  Pearson r >= 0.999 per map.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spinefx.runtime.errors import SpineFXError

INPUT_NAME = "input"
PROBABILITY_NAME = "probability"
CAM_NAME = "cam"
FEATURES_NAME = "features"     # the pooled layer4 features (N, 2048): the OOD score's input
OPSET = 18
PROBABILITY_BOUND = 1e-4     # max |p_onnx - p_torch|
CAM_R_BOUND = 0.999          # min Pearson r per map, in-graph CAM vs pytorch-grad-cam
ZERO_MAP = 1e-6              # a scaled map whose max is below this is "all zero"


class ExportError(SpineFXError):
    """The model could not be exported, or the export folder/inputs are unusable."""


class ParityError(ExportError):
    """The exported graph does not reproduce the PyTorch model within the gate's bound."""

    def __init__(self, gate: str, measured: float, bound: float, detail: str = "",
                 relation: str = "<="):
        self.gate, self.measured, self.bound = gate, float(measured), float(bound)
        super().__init__(f"{gate} parity gate FAILED: measured {measured:.6g}, required "
                         f"{relation} {bound:g}" + (f" ({detail})" if detail else "")
                         + "; the ONNX model was not kept")


# ---------------------------------------------------------------------------------------------
# the wrapper that is exported
# ---------------------------------------------------------------------------------------------
class _CamSource(Protocol):
    """What :class:`CamModel` uses of its model (:class:`SpineFxNet`'s interface)."""

    @property
    def head(self) -> nn.Linear: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, features: torch.Tensor) -> torch.Tensor: ...


class CamModel(nn.Module):
    """``forward(x) -> (probability (B,), cam (B, h, w))`` for a :class:`SpineFxNet`-like model.

    ``probability = sigmoid(model.forward_head(A))`` (the model's own head, so it is exactly the
    trained classifier) and ``cam = ReLU(sum_k w_k A_k)`` with ``A = model.forward_features(x)``
    (``backbone.layer4``'s output) and ``w = model.head.weight[0]``. The map is raw (not
    normalised): the runtime divides by its maximum.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        # nn.Module types its submodules' attributes as ``Tensor | Module``; this model is
        # SpineFxNet-like (the docstring's contract): say so, for forward()'s calls
        self.model = cast(_CamSource, model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        probability = torch.sigmoid(self.model.forward_head(features))
        weight = self.model.head.weight[:1, :, None, None]          # (1, 2048, 1, 1)
        cam = torch.relu(F.conv2d(features, weight))[:, 0]          # (B, h, w)
        return probability, cam


class CamFeaturesModel(nn.Module):
    """``forward(x) -> (probability, cam, features)``: :class:`CamModel`'s two outputs plus the
    head's own pooled input (``backbone.avgpool`` of layer4, flattened to (B, 2048)).

    The pooled tensor is taken with a forward hook on the head's pooling, so the graph has one
    pooling node feeding both the linear head and ``features`` (no second backbone pass, and
    int8's float head keeps ``features`` float), and probability/cam are exactly
    :class:`CamModel`'s.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.cam_model = CamModel(model)
        self.pool = model.get_submodule("backbone.avgpool")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled: list[torch.Tensor] = []
        handle = self.pool.register_forward_hook(lambda _m, _i, out: pooled.append(out))
        try:
            probability, cam = self.cam_model(x)
        finally:
            handle.remove()
        if not pooled:
            raise ExportError("the model's head did not pool through backbone.avgpool")
        return probability, cam, torch.flatten(pooled[-1], 1)


class _ProbabilityOnly(nn.Module):
    """Probability-only graph (no CAM branch): for the benchmark's CAM-overhead row."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


# ---------------------------------------------------------------------------------------------
# export + structural checks
# ---------------------------------------------------------------------------------------------
def _dynamo_available() -> bool:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter translates through it)
        return True
    except ImportError:
        return False


def export_onnx(model: nn.Module, path: str | PathLike, image_size: int, in_channels: int = 6,
                opset: int = OPSET, exporter: str = "auto", cam: bool = True,
                features: bool = True) -> dict:
    """Write ``CamFeaturesModel(model)`` (probability, cam, features), ``CamModel(model)`` with
    ``features=False``, or the probability-only graph with ``cam=False``, as ONNX.

    ``exporter``: ``"dynamo"`` (``torch.export`` based, torch's default since 2.9; needs
    ``onnxscript``), ``"torchscript"`` (the legacy tracer) or ``"auto"`` (dynamo when onnxscript is
    installed). The batch axis of the input and of both outputs is dynamic; the file is a single
    self-contained ONNX file (no external data). Returns ``{"exporter", "opset", "seconds"}``.
    """
    path = Path(path)
    if exporter == "auto":
        exporter = "dynamo" if _dynamo_available() else "torchscript"
    if exporter not in ("dynamo", "torchscript"):
        raise ExportError(f"unknown exporter {exporter!r} (dynamo, torchscript or auto)")
    if exporter == "dynamo" and not _dynamo_available():
        raise ExportError("the dynamo ONNX exporter needs onnxscript: "
                          "pip install onnx onnxscript")
    model = model.eval()
    wrapper: nn.Module
    if not cam:
        wrapper, outputs = _ProbabilityOnly(model), [PROBABILITY_NAME]
    elif features:
        wrapper, outputs = CamFeaturesModel(model), [PROBABILITY_NAME, CAM_NAME, FEATURES_NAME]
    else:
        wrapper, outputs = CamModel(model), [PROBABILITY_NAME, CAM_NAME]
    wrapper = wrapper.eval()
    example = torch.rand(2, in_channels, image_size, image_size)  # batch 2: not specialised
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, progress)
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(wrapper, (example,), str(path), dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_shapes={"x": {0: batch}}, external_data=False,
                              optimize=True, verbose=False, report=False)
        else:
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
                              do_constant_folding=True)
    seconds = time.perf_counter() - t0
    for leftover in path.parent.glob(path.name + ".data"):  # never ship external data
        raise ExportError("the exporter wrote external data beside the model", leftover)
    return {"exporter": exporter, "opset": opset, "seconds": round(seconds, 2)}


def check_onnx(path: str | PathLike) -> dict:
    """``onnx.checker`` (full check, with shape inference) + the contract's structure: one input
    ``(batch, C, S, S)`` and the outputs ``probability (batch,)``/``cam (batch, h, w)`` (and
    ``features (batch, 2048)`` where exported), batch symbolic, every initializer stored inside
    the file. Returns a summary; raises ExportError."""
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the model: {str(exc).splitlines()[0]}",
                          path) from None
    proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"{len(external)} initializer(s) stored as external data", path)

    def dims(value_info) -> list:
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    inputs = {i.name: dims(i) for i in proto.graph.input}
    outputs = {o.name: dims(o) for o in proto.graph.output}
    if list(inputs) != [INPUT_NAME] or len(inputs[INPUT_NAME]) != 4:
        raise ExportError(f"expected one 4-D input '{INPUT_NAME}', found {inputs}", path)
    for name, shape in [*inputs.items(), *outputs.items()]:
        if not shape or not isinstance(shape[0], str):
            raise ExportError(f"'{name}' has a fixed batch axis {shape}: expected a dynamic one",
                              path)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    return {"inputs": inputs, "outputs": outputs, "opset": opset,
            "ir_version": proto.ir_version, "bytes": path.stat().st_size}


def ort_session(path: str | PathLike, threads: int | None = None):
    """A CPU onnxruntime session (parity and quantisation gates are measured on CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def run_features(session, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
    """The pooled features (N, 2048) of a graph with a ``features`` output, in chunks."""
    out = [np.asarray(session.run([FEATURES_NAME], {INPUT_NAME: np.ascontiguousarray(
        batch[i:i + chunk], np.float32)})[0], np.float32) for i in range(0, len(batch), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def torch_features(model: nn.Module, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
    """PyTorch's pooled layer4 features (N, 2048): what the graph's ``features`` must match."""
    source, pool = cast(_CamSource, model.eval()), model.get_submodule("backbone.avgpool")
    out = [torch.flatten(pool(source.forward_features(
        torch.from_numpy(np.ascontiguousarray(batch[i:i + chunk], np.float32)))), 1)
        for i in range(0, len(batch), chunk)]
    return torch.cat(out).numpy()


def run_session(session, batch: np.ndarray, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N,) and raw maps (N, h, w), in chunks of ``chunk`` cases."""
    probs, cams = [], []
    for i in range(0, len(batch), chunk):
        p, c = session.run([PROBABILITY_NAME, CAM_NAME],
                           {INPUT_NAME: np.ascontiguousarray(batch[i:i + chunk], np.float32)})
        probs.append(np.asarray(p, np.float64).reshape(-1))
        cams.append(np.asarray(c, np.float32))
    return np.concatenate(probs), np.concatenate(cams)


# ---------------------------------------------------------------------------------------------
# gates
# ---------------------------------------------------------------------------------------------
@dataclass
class ParityReport:
    gate: str
    measured: float
    bound: float
    passed: bool
    n: int
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"measured": self.measured, "bound": self.bound, "passed": self.passed,
                "n_cases": self.n, **self.details}


@torch.no_grad()
def torch_probabilities(model: nn.Module, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
    model = model.eval()
    out = [torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(batch[i:i + chunk],
                                                                       np.float32))))
           for i in range(0, len(batch), chunk)]
    return torch.cat(out).double().numpy().reshape(-1)


def check_probability_parity(model: nn.Module, onnx_probabilities: np.ndarray,
                             batch: np.ndarray, bound: float = PROBABILITY_BOUND,
                             raise_on_fail: bool = True) -> ParityReport:
    """max |p_onnx - p_torch| over ``batch`` must be <= ``bound``."""
    ref = torch_probabilities(model, batch)
    diff = np.abs(np.asarray(onnx_probabilities, np.float64).reshape(-1) - ref)
    measured = float(diff.max()) if diff.size else float("nan")
    if not np.isfinite(measured):
        measured = float("inf")
    report = ParityReport("probability", measured, bound, measured <= bound, len(ref),
                          {"metric": "max |p_onnx - p_torch|", "mean_abs": float(diff.mean())})
    if raise_on_fail and not report.passed:
        raise ParityError("probability", measured, bound,
                          f"max |p_onnx - p_torch| over {len(ref)} cases")
    return report


class _LogitAsClasses(nn.Module):
    """pytorch-grad-cam expects (B, n_classes): present the one logit as (B, 1)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, None]


def gradcam_reference(model: nn.Module, batch: np.ndarray, chunk: int = 8) -> np.ndarray:
    """pytorch-grad-cam's ``GradCAM`` on ``backbone.layer4`` for the malignant logit: maps
    (N, S, S), ReLU'd, min-max scaled per map and resized to the input (grad-cam's defaults)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    wrapped = _LogitAsClasses(model).eval()
    maps = []
    with GradCAM(model=wrapped, target_layers=[model.get_submodule("backbone.layer4")]) as cam:
        for i in range(0, len(batch), chunk):
            x = torch.from_numpy(np.ascontiguousarray(batch[i:i + chunk], np.float32))
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(x)))
    for p in model.parameters():  # grad-cam switches gradients on; leave the model as found
        p.grad = None
    return np.concatenate(maps).astype(np.float32)


def gradcam_postprocess(raw_cams: np.ndarray, size: int) -> np.ndarray:
    """The post-processing grad-cam applies to its own maps (ReLU, per-map min-max, cv2 resize
    to the input size), applied to raw in-graph maps: like is compared with like."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(np.maximum(np.asarray(raw_cams, np.float32), 0), (size, size))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def compare_maps(ours: np.ndarray, reference: np.ndarray) -> tuple[list[float | None], list[str]]:
    """Per-map Pearson r (None where both maps are all zero: skipped, with a note)."""
    rs: list[float | None] = []
    notes: list[str] = []
    for i, (a, b) in enumerate(zip(ours, reference)):
        za, zb = float(np.max(a)) < ZERO_MAP, float(np.max(b)) < ZERO_MAP
        if za and zb:
            rs.append(None)
            notes.append(f"map {i}: all zero in both (ReLU removed everything); skipped")
            continue
        r = pearson(a, b)
        rs.append(r if np.isfinite(r) else -1.0)
        if not np.isfinite(r):
            notes.append(f"map {i}: one map is constant/zero and the other is not")
    return rs, notes


def check_cam_parity(model: nn.Module, onnx_cams: np.ndarray, batch: np.ndarray,
                     bound: float = CAM_R_BOUND, raise_on_fail: bool = True) -> ParityReport:
    """In-graph CAM vs pytorch-grad-cam GradCAM (layer4, malignant logit): Pearson r >= bound
    for every map, after the same post-processing (:func:`gradcam_postprocess`)."""
    size = batch.shape[-1]
    reference = gradcam_reference(model, batch)
    ours = gradcam_postprocess(onnx_cams, size)
    rs, notes = compare_maps(ours, reference)
    valid = [r for r in rs if r is not None]
    measured = min(valid) if valid else float("nan")
    details = {"metric": "min per-map Pearson r vs pytorch-grad-cam GradCAM (layer4), "
                         "both ReLU + min-max + resize to the input",
               "mean_r": float(np.mean(valid)) if valid else None,
               "n_compared": len(valid), "n_skipped_all_zero": len(rs) - len(valid),
               "cam_shape": list(onnx_cams.shape[1:]), "notes": notes}
    details["verified"] = bool(valid)
    if not valid:  # nothing to compare is not a failure of the graph, but say so
        warnings.warn("CAM parity not verified: every map was all zero in both (pass --manifest "
                      "with cases the model calls malignant)", stacklevel=2)
    passed = not valid or measured >= bound
    report = ParityReport("cam", measured, bound, passed, len(rs), details)
    if raise_on_fail and not passed:
        worst = int(np.argmin([r if r is not None else np.inf for r in rs]))
        raise ParityError("CAM", measured, bound, f"min per-map Pearson r over {len(valid)} "
                          f"maps, worst is map {worst}", relation=">=")
    return report
