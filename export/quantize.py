"""Static int8 (QDQ, per-channel) quantisation of the exported graph, behind an accuracy gate.

Only static quantisation: activations are calibrated once on preprocessed cases (MinMax), so at
run time the convolutions run as int8 kernels. (Dynamic quantisation re-measures activation
ranges at run time and, for a convolutional network like this one, is several times *slower*
than fp32 on CPU: not offered.)

Recipe: ``quant_pre_process`` (shape inference + graph optimisation) on the fp32 model, then
``quantize_static`` with ``QuantFormat.QDQ`` and an :class:`Int8Settings` (recorded in
model.json's ``int8.quantization``). The default, :data:`CHOSEN`, is the setting
``benchmarks/int8_settings.py`` measured closest to fp32 among those whose integers are the same
on every x86-64 CPU (see :attr:`Int8Settings.cpu_independent`). Why that matters: on x86 CPUs
without VNNI (AVX2, AVX-512F) onnxruntime multiplies u8 activations by s8 weights with
``vpmaddubsw``, whose int16 pair sums saturate for full-range weights (255 * 127 * 2 > 32767),
so the same model gives different probabilities on different CPUs. Two documented ways out:
7-bit weights (``reduce_range``: [-64, 64], 255 * 64 * 2 < 32767) or uint8 weights (U8U8, whose
kernels widen to int16 before multiplying). :func:`weight_range` reads the stored weights back
so a test can check the promise on the file itself.
The head after ``layer4`` (global average pooling, the linear layer, the sigmoid, and the CAM's
1x1 convolution + ReLU; any branch of a further output) stays in float: it costs nothing and
keeps both outputs smooth (a quantised probability would come in steps of 1/255 and tie cases,
which costs AUC); the first convolutions (the 6->3 stem and the ResNet's 7x7) may stay float too.

Gate (:func:`int8_gate`), on cases that were not used for calibration: the AUC may drop by at
most 0.005 and no probability may move by more than 0.03 vs the fp32 model in onnxruntime;
otherwise the int8 model is refused with the miss stated. The CAM's agreement with fp32 (Pearson
r per map at layer4 resolution) is measured and reported, not gated. Whether the final model
trained on those cases (in-sample / held-out) is the caller's to say
(:func:`spinefx.export.variants.gate_provenance`).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from .onnx_export import (
    INPUT_NAME,
    ZERO_MAP,
    ExportError,
    pearson,
    run_session,
)

AUC_DROP_BOUND = 0.005
PROB_DIFF_BOUND = 0.03


def _calibration_reader(batches: Sequence[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, np.float32)}

        def rewind(self) -> None:
            self._it = iter(batches)

    return _Reader()


def _ancestors(producer: dict, tensor: str) -> set[str]:
    """Names of the nodes ``tensor`` depends on."""
    seen, stack = set(), [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(node.input)
    return seen


def head_nodes(model_path: str | PathLike) -> list[str]:
    """Names of the nodes that do not feed every output: the classifier head (pooling, linear,
    sigmoid) and the CAM branch (1x1 conv, ReLU, squeeze), and whatever branch an added output
    has (e.g. pooled features). The shared backbone feeds them all."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    producer = {out: node for node in proto.graph.node for out in node.output}
    branches = [_ancestors(producer, out.name) for out in proto.graph.output]
    if not branches:
        return []
    shared = set(branches[0]).intersection(*branches[1:])
    return sorted(set(branches[0]).union(*branches[1:]) - shared)


@dataclass(frozen=True)
class Int8Settings:
    """How :func:`quantize_int8` quantises (the fields' defaults: 7-bit per-channel int8
    weights, uint8 activations, MinMax, head and CAM branch in float). :data:`CHOSEN` is uint8
    weights (U8U8) with the first two convolutions in float; see its comment for why."""

    per_channel: bool = True
    reduce_range: bool = True            # int8 weights in [-64, 64] (7 bits)
    activations: str = "QUInt8"          # onnxruntime QuantType name: QUInt8 | QInt8
    weights: str = "QInt8"               # QInt8 (U8S8) | QUInt8 (U8U8)
    calibration: str = "MinMax"          # CalibrationMethod: MinMax | Percentile | Entropy
    symmetric_activations: bool = False
    float_head: bool = True              # the nodes of head_nodes stay float
    float_first_convs: int = 0           # the first N convolutions (1: the 6->3 stem) stay float
    float_last_convs: int = 0            # the backbone's last N convolutions stay float
    percentile: float = 99.999           # with calibration "Percentile"

    @property
    def label(self) -> str:
        act = "u8" if self.activations == "QUInt8" else "s8"
        wt = "u8" if self.weights == "QUInt8" else "s8"
        parts = [f"{act}{wt}", "7-bit w" if self.reduce_range else "8-bit w",
                 "per-channel" if self.per_channel else "per-tensor", self.calibration]
        if self.symmetric_activations:
            parts.append("sym act")
        if self.float_first_convs:
            parts.append(f"first {self.float_first_convs} convs float")
        if not self.float_head:
            parts.append("int8 head")
        if self.float_last_convs:
            parts.append(f"last {self.float_last_convs} convs float")
        if self.calibration == "Percentile":
            parts[3] += f" {self.percentile:g}"
        return ", ".join(parts)

    @property
    def cpu_independent(self) -> bool:
        """True when no CPU's int8 kernels can saturate on this setting, so its outputs (hence
        its gate's verdict) are the same with and without VNNI. onnxruntime's U8S8 kernels on
        x86 without VNNI (AVX2, AVX-512F) sum pairs of u8 x s8 products in int16
        (``vpmaddubsw``): 255 * 128 * 2 > 32767 saturates, 255 * 64 * 2 = 32640 cannot; U8U8
        widens to int16 before multiplying and never saturates."""
        if self.activations != "QUInt8":
            return False  # s8 activations: kernels differ across CPUs; not assured
        return self.weights == "QUInt8" or self.reduce_range

    def to_dict(self) -> dict:
        return {"per_channel": self.per_channel, "reduce_range": self.reduce_range,
                "activations": self.activations, "weights": self.weights,
                "calibration": self.calibration,
                "symmetric_activations": self.symmetric_activations,
                "float_head": self.float_head, "float_first_convs": self.float_first_convs,
                "float_last_convs": self.float_last_convs,
                **({"percentile": self.percentile} if self.calibration == "Percentile" else {}),
                "cpu_independent": self.cpu_independent}


# Measured by benchmarks/int8_settings.py on the bundled model, 2 x 100 held-out phantoms
# (seeds 77 and 78, variation 0 and 1), calibrated on 32 others: of the CPU-independent settings
# this one stays closest to fp32 (max |dp| 0.084, mean 0.010 over the 200). 7-bit U8S8 with the
# same float convolutions runs about 2x faster but drifts further (max 0.110, mean 0.012);
# plain 7-bit U8S8 reaches 0.34. The two float convolutions (6->3 stem, 7x7 conv1) cost ~9% of
# the FLOPs: the raw image's quantisation error there would reach every later layer.
CHOSEN = Int8Settings(weights="QUInt8", reduce_range=False, float_first_convs=2)

# 7-bit U8S8 with the same two float convolutions: also CPU-independent (|w| <= 64), and ~2.2x
# faster than CHOSEN on this AVX2 CPU (onnxruntime's U8S8 kernels; 5.6 vs 12.7 ms at batch 1,
# 128 px). The bundled model's int8 file uses it since 2026-12-07 (requantised from its own
# weights, spinefx.export.requantize: max |dp| 0.017 on the 136 gate cases); the export's
# default stays CHOSEN, which drifted less on the model it was measured on.
FAST = Int8Settings(weights="QInt8", reduce_range=True, float_first_convs=2)


def backbone_convs(model_path: str | PathLike) -> list[str]:
    """The convolutions that feed every output, in graph (= topological) order: the stem
    first, then the ResNet's."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    heads = set(head_nodes(model_path))
    return [node.name for node in proto.graph.node
            if node.op_type == "Conv" and node.name not in heads]


def _float_nodes(model_path: Path, settings: Int8Settings) -> list[str]:
    nodes = set(head_nodes(model_path) if settings.float_head else [])
    convs = backbone_convs(model_path)
    nodes |= set(convs[:settings.float_first_convs])
    if settings.float_last_convs:
        nodes |= set(convs[-settings.float_last_convs:])
    return sorted(nodes)


def quantize_int8(fp32_path: str | PathLike, out_path: str | PathLike,
                  calibration: np.ndarray, batch_size: int = 8,
                  settings: Int8Settings = CHOSEN) -> dict:
    """Write a static QDQ int8 model calibrated on ``calibration`` (N, C, S, S) float32; returns
    model.json's ``quantization`` record (the settings, the float nodes, the weight range)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("int8 calibration needs at least one preprocessed case")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spinefx-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        exclude = _float_nodes(pre, settings)
        batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]
        quantize_static(str(pre), str(out_path), _calibration_reader(batches),
                        quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
                        reduce_range=settings.reduce_range,
                        activation_type=QuantType[settings.activations],
                        weight_type=QuantType[settings.weights],
                        calibrate_method=CalibrationMethod[settings.calibration],
                        nodes_to_exclude=exclude, use_external_data_format=False,
                        extra_options={"ActivationSymmetric": settings.symmetric_activations,
                                       "CalibPercentile": settings.percentile})
    return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "settings": settings.label, **settings.to_dict(),
            "weight_range": weight_range(out_path), "calibration_cases": int(len(calibration)),
            "float_nodes": exclude, "seconds": round(time.perf_counter() - t0, 2)}


def weight_range(model_path: str | PathLike) -> dict:
    """The integer range the quantised Conv/Gemm weights actually use, and whether a U8S8 pair
    sum (255 * |w_a| + 255 * |w_b|) can leave int16 on a non-VNNI CPU: read from the file, so
    a test can check the promise of :attr:`Int8Settings.cpu_independent` on the model itself."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name: i for i in proto.graph.initializer}
    consumers = {name for n in proto.graph.node if n.op_type in ("Conv", "Gemm")
                 for name in n.input[1:2]}
    lo, hi, dtypes = 0, 0, set()
    for node in proto.graph.node:  # weight -> DequantizeLinear -> Conv/Gemm
        if node.op_type != "DequantizeLinear" or node.output[0] not in consumers:
            continue
        init = inits.get(node.input[0])
        if init is None:
            continue
        # the kernels multiply the stored values (zero points are corrected for afterwards)
        stored = numpy_helper.to_array(init)
        dtypes.add(str(stored.dtype))
        lo, hi = min(lo, int(stored.min())), max(hi, int(stored.max()))
    signed = dtypes == {"int8"}
    saturation_free = (not signed) or 255 * 2 * max(-lo, hi) <= 32767
    return {"dtypes": sorted(dtypes), "min": lo, "max": hi,
            "u8s8_pair_sum_fits_int16": bool(saturation_free) if dtypes else None}


def float32_weights(fp16_path: str | PathLike, out_path: str | PathLike) -> Path:
    """Undo :func:`spinefx.export.compress.fp16_weights`: every ``Cast`` of a float16
    initializer becomes the float32 initializer it computes. The arithmetic is unchanged (the
    fp16 model computes in float32 on these weights), and the graph can be quantised: a bundle
    that ships only fp16 weights still gets an int8 variant."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(fp16_path))
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] in halves]
    singles = [numpy_helper.from_array(numpy_helper.to_array(halves[n.input[0]])
                                       .astype(np.float32), n.output[0]) for n in casts]
    used = {n.input[0] for n in casts}
    keep = [i for i in graph.initializer if i.name not in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + singles)
    nodes = [n for n in graph.node if n not in casts]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return Path(out_path)


# ---------------------------------------------------------------------------------------------
def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count 1/2); NaN without both classes."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, np.float64)
    pos, neg = p[y], p[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@dataclass
class Int8Gate:
    passed: bool
    auc_fp32: float
    auc_int8: float
    auc_drop: float
    max_prob_diff: float
    auc_drop_bound: float
    prob_diff_bound: float
    n_cases: int
    n_malignant: int
    cam_r_mean: float | None
    cam_r_min: float | None
    failures: list[str] = field(default_factory=list)
    variant: str = "int8"
    # where the cases stand for the final model: "in-sample" (its training cases), "held-out"
    # (never trained on) or "unknown"; int8's gate cases are never calibration cases either way
    cases: str = "unknown"

    @property
    def message(self) -> str:
        if self.passed:
            return (f"{self.variant} gate passed on {self.n_cases} {self.cases} cases: AUC drop "
                    f"{self.auc_drop:+.4f} (<= {self.auc_drop_bound}), max |dp| "
                    f"{self.max_prob_diff:.4f} (<= {self.prob_diff_bound})")
        return f"{self.variant} model REFUSED: " + "; ".join(self.failures)

    def to_dict(self) -> dict:
        def num(v):
            return None if v is None or not np.isfinite(v) else round(float(v), 6)
        return {"passed": self.passed, "variant": self.variant, "cases": self.cases,
                "held_out_cases": self.n_cases,   # from calibration (see "cases")
                "held_out_malignant": self.n_malignant,
                "auc_fp32": num(self.auc_fp32), "auc_int8": num(self.auc_int8),
                "auc_drop": num(self.auc_drop), "auc_drop_bound": self.auc_drop_bound,
                "max_abs_probability_diff": num(self.max_prob_diff),
                "probability_diff_bound": self.prob_diff_bound,
                "cam_pearson_vs_fp32": {"mean": num(self.cam_r_mean), "min": num(self.cam_r_min),
                                        "resolution": "layer4 (raw maps)"},
                "failures": list(self.failures)}


def cam_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and min Pearson r between two sets of raw maps, skipping maps zero in both."""
    rs = []
    for x, y in zip(a, b):
        scale = max(float(np.max(x)), float(np.max(y)))
        if scale <= 0 or (float(np.max(x)) < ZERO_MAP * scale and
                          float(np.max(y)) < ZERO_MAP * scale):
            continue
        r = pearson(x, y)
        rs.append(r if np.isfinite(r) else 0.0)
    return (float(np.mean(rs)), float(np.min(rs))) if rs else (None, None)


def int8_gate(fp32_session, int8_session, inputs: np.ndarray, labels: np.ndarray,
              auc_drop_bound: float = AUC_DROP_BOUND,
              prob_diff_bound: float = PROB_DIFF_BOUND, variant: str = "int8",
              cases: str = "unknown") -> Int8Gate:
    """Compare a reduced model (int8, or fp16 weights) with fp32, both in onnxruntime, on
    ``inputs`` none of which calibrated it; ``cases`` says whether the final model trained on
    them (see :func:`spinefx.export.variants.gate_provenance`)."""
    labels = np.asarray(labels).astype(int)
    p32, c32 = run_session(fp32_session, inputs)
    p8, c8 = run_session(int8_session, inputs)
    a32, a8 = auc(labels, p32), auc(labels, p8)
    drop = a32 - a8
    max_diff = float(np.max(np.abs(p8 - p32))) if len(p32) else float("nan")
    r_mean, r_min = cam_agreement(c32, c8)
    failures = []
    if len(p32) == 0:
        failures.append("no held-out cases to check it on (the manifest has no cases beyond "
                        "the calibration set)")
    elif not np.isfinite(drop):
        failures.append(f"AUC cannot be measured: the {len(labels)} held-out cases hold only "
                        "one class (use a manifest with both benign and malignant cases)")
    elif drop > auc_drop_bound:
        failures.append(f"AUC drop {drop:.4f} > {auc_drop_bound} (missed by "
                        f"{drop - auc_drop_bound:.4f}; fp32 {a32:.4f}, {variant} {a8:.4f})")
    if np.isfinite(max_diff) and max_diff > prob_diff_bound:
        failures.append(f"max |p_{variant} - p_fp32| {max_diff:.4f} > {prob_diff_bound} (missed by "
                        f"{max_diff - prob_diff_bound:.4f})")
    return Int8Gate(passed=not failures, auc_fp32=a32, auc_int8=a8, auc_drop=drop,
                    max_prob_diff=max_diff, auc_drop_bound=auc_drop_bound,
                    prob_diff_bound=prob_diff_bound, n_cases=len(labels),
                    n_malignant=int(labels.sum()), cam_r_mean=r_mean, cam_r_min=r_min,
                    failures=failures, variant=variant, cases=cases)
