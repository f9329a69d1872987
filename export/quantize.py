"""Static int8 (QDQ, per-channel) quantisation of the exported graph, behind an accuracy gate.

Only static quantisation: activations are calibrated once on preprocessed cases (MinMax), so at
run time the convolutions run as int8 kernels. (Dynamic quantisation re-measures activation
ranges at run time and, for a convolutional network like this one, is several times *slower*
than fp32 on CPU: not offered.)

Recipe: ``quant_pre_process`` (shape inference + graph optimisation) on the fp32 model, then
``quantize_static`` with ``QuantFormat.QDQ``, per-channel int8 weights in the 7-bit range
(``reduce_range=True``) and uint8 activations. Why 7 bits: on x86 CPUs without VNNI
(AVX2, AVX-512F) onnxruntime multiplies u8 activations by s8 weights with ``vpmaddubsw``,
whose int16 pair sums saturate for full-range weights (255 * 127 * 2 > 32767), so the same
model gives different probabilities on different CPUs; with weights in [-64, 63] no sum can
saturate (255 * 64 * 2 < 32767) and the integer arithmetic — hence the gate's verdict — is
the same on every x86-64 CPU.
The head after ``layer4`` (global average pooling, the linear layer, the sigmoid, and the CAM's
1x1 convolution + ReLU) stays in float: it costs nothing and keeps both outputs smooth (a
quantised probability would come in steps of 1/255 and tie cases, which costs AUC).

Gate (:func:`int8_gate`), on held-out cases that were not used for calibration: the AUC may drop
by at most 0.005 and no probability may move by more than 0.03 vs the fp32 model in onnxruntime;
otherwise the int8 model is refused with the miss stated. The CAM's agreement with fp32 (Pearson
r per map at layer4 resolution) is measured and reported, not gated.
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
    CAM_NAME,
    INPUT_NAME,
    PROBABILITY_NAME,
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


def head_nodes(model_path: str | PathLike) -> list[str]:
    """Names of the nodes that lie on the way to only one of the two outputs: the classifier
    head (pooling, linear, sigmoid) and the CAM branch (1x1 conv, ReLU, squeeze). The backbone
    feeds both outputs."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    producer = {out: node for node in proto.graph.node for out in node.output}

    def ancestors(tensor: str) -> set[str]:
        seen, stack = set(), [tensor]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            stack.extend(node.input)
        return seen

    prob, cam = ancestors(PROBABILITY_NAME), ancestors(CAM_NAME)
    return sorted(prob ^ cam)


def quantize_int8(fp32_path: str | PathLike, out_path: str | PathLike,
                  calibration: np.ndarray, batch_size: int = 8,
                  keep_head_float: bool = True) -> dict:
    """Write a static QDQ int8 model calibrated on ``calibration`` (N, C, S, S) float32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("int8 calibration needs at least one preprocessed case")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spinefx-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        exclude = head_nodes(pre) if keep_head_float else []
        batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]
        quantize_static(str(pre), str(out_path), _calibration_reader(batches),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        use_external_data_format=False)
    return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "per_channel": True, "weights": "int8 (7-bit range)", "activations": "uint8",
            "reduce_range": True,
            "calibration": "MinMax", "calibration_cases": int(len(calibration)),
            "float_nodes": exclude, "seconds": round(time.perf_counter() - t0, 2)}


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
    cases: str = "held-out"  # int8 is judged on cases its calibration never saw

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
                "held_out_cases": self.n_cases,
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
              cases: str = "held-out") -> Int8Gate:
    """Compare a reduced model (int8, or fp16 weights) with fp32, both in onnxruntime, on
    held-out ``inputs``."""
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
