"""Requantise a shipped int8 model with other settings when its fp32 weights are gone.

A model folder may ship only its int8 file (the bundled model does). Its weights are still
there, as integers with their scales: :func:`int8_float_graph` turns the QDQ graph back into
the float graph those weights compute (every weight ``DequantizeLinear`` folded to a float
initializer, every activation ``QuantizeLinear -> DequantizeLinear`` pair removed). One
detail matters: onnxruntime's quantiser drops a ReLU whose clamp the activation's zero point
already does (a uint8 zero point of 0 maps every negative value to 0); such a pair is replaced
by a ReLU, once per tensor and not where the tensor is a ReLU's already, or the float graph
would not be the model (measured on the bundled model: AUC 0.73 without the ReLUs, 0.926 with
them; max |dp| against the int8 file 0.010). A tensor merely calibrated >= 0 gets one too: the
int8 file clamps it as well.

:func:`requantize_int8` then quantises that float graph again with the given
:class:`~spinefx.export.quantize.Int8Settings`, calibrated on the same cases as the shipped
file (model.json's ``calibration_case_ids``, from the gate manifest the export used), and runs
the export's gate (:func:`~spinefx.export.quantize.int8_gate`) on the other cases with that
float graph as the reference. The original fp32 model is not available, so the record says
what the reference is and what the previous file measured against the original. The OOD
score's Gaussian is refitted as the export fits it (same cases at the runtime's fitted boxes,
same k and quantile) on the features of the new file, the ones the runtime will score (the
export fits fp32 features; the body-fraction keys are kept: they depend on the localiser
only). A refused file is not written; the input folder is never changed.
"""
from __future__ import annotations

import shutil
import tempfile
from os import PathLike
from pathlib import Path
from typing import Callable

import numpy as np

from spinefx.runtime.files import atomic_write_text
from spinefx.runtime.model_files import MODEL_JSON, read_model_spec, sha256_file

from .onnx_export import ExportError, ort_session, run_session
from .ood import fit_from_session, model_json_text
from .quantize import AUC_DROP_BOUND, PROB_DIFF_BOUND, Int8Settings, int8_gate, quantize_int8

REFERENCE = ("the float graph of the previous int8 file's own weights (dequantised; the ReLUs "
             "the quantiser folded into zero points restored): the fp32 weights were not kept")


def int8_float_graph(q8_path: str | PathLike, out_path: str | PathLike) -> dict:
    """Write the float graph a QDQ int8 file computes; returns counts of what was undone."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(q8_path))
    graph = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept, folded = [], 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input if i):
            graph.initializer.append(numpy_helper.from_array(_dequantized(node, inits),
                                                             node.output[0]))
            folded += 1
        else:
            kept.append(node)
    producer = {out: n for n in kept for out in n.output}
    alias: dict[str, str] = {}
    nodes: list = []
    restored: dict[str, str] = {}   # a tensor -> the ReLU restored on it
    for node in kept:
        source = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear":
            zero = inits.get(source.input[2]) if len(source.input) > 2 else None
            if (zero is not None and zero.dtype == np.uint8 and int(zero.max()) == 0
                    and not _non_negative(source.input[0], producer)):
                if source.input[0] not in restored:   # one ReLU per tensor, however many pairs
                    restored[source.input[0]] = source.input[0] + "_relu"
                    nodes.append(helper.make_node("Relu", [source.input[0]],
                                                  [restored[source.input[0]]]))
                alias[node.output[0]] = restored[source.input[0]]
            else:
                alias[node.output[0]] = source.input[0]
        elif node.op_type != "QuantizeLinear":
            nodes.append(node)
    for node in nodes:
        for k, name in enumerate(node.input):
            node.input[k] = alias.get(name, name)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    weights = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(weights)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return {"weights_dequantised": folded, "relus_restored": len(restored),
            "nodes": len(nodes)}


def _non_negative(tensor: str, producer: dict) -> bool:
    """Whether ``tensor`` is >= 0 already (a ReLU's or sigmoid's output, through pooling,
    reshaping and quantisation pairs): its zero point of 0 then stands for no ReLU."""
    node = producer.get(tensor)
    while node is not None and node.op_type in ("MaxPool", "Reshape", "Flatten",
                                                "QuantizeLinear", "DequantizeLinear"):
        node = producer.get(node.input[0])
    return node is not None and node.op_type in ("Relu", "Sigmoid")


def _dequantized(node, inits: dict[str, np.ndarray]) -> np.ndarray:
    """(q - zero point) * scale of a weight DequantizeLinear, per channel along its axis."""
    q = inits[node.input[0]].astype(np.float64)
    scale = inits[node.input[1]].astype(np.float64)
    zero = (inits[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale))
    if scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def requantize_int8(model_dir: str | PathLike, out_dir: str | PathLike,
                    gate_manifest: str | PathLike, settings: Int8Settings, seed: int = 0,
                    log: Callable[[str], None] | None = print) -> Path:
    """A copy of ``model_dir`` in ``out_dir`` whose int8 file is the requantisation of its own
    float weights with ``settings``, gated as the export gates; returns its model.json."""
    from .exporter import _gate_cases

    log = log or (lambda message: None)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise ExportError("write the requantised model to another folder", out_dir)
    spec = read_model_spec(model_dir)
    raw = dict(spec.raw)
    _, q8_path, _ = spec.file("int8")
    ids = list(raw.get("int8", {}).get("calibration_case_ids") or [])
    if not ids:
        raise ExportError("model.json records no int8 calibration cases to repeat", model_dir)
    fitted: list[np.ndarray] = []
    inputs, kept, _ = _gate_cases(Path(gate_manifest), spec.preprocessing, None, seed, False,
                                  log, fitted=fitted)
    if [c.case_id for c in kept[:len(ids)]] != ids:
        raise ExportError("its first cases are not the int8 file's calibration cases "
                          "(another manifest or --seed than the export's)", gate_manifest)
    held = [i for i in range(len(ids), len(kept)) if kept[i].label is not None]
    held_x, held_y = inputs[held], np.array([kept[i].target for i in held], dtype=int)
    with tempfile.TemporaryDirectory(prefix="spinefx-requant-") as tmp:
        reference, q8 = Path(tmp) / "float.onnx", Path(tmp) / q8_path.name
        undone = int8_float_graph(q8_path, reference)
        qinfo = quantize_int8(reference, q8, inputs[:len(ids)], settings=settings)
        ref_session, new_session = ort_session(reference), ort_session(q8)
        gate = int8_gate(ref_session, new_session, held_x, held_y, AUC_DROP_BOUND,
                         PROB_DIFF_BOUND, cases=str(raw["int8"].get("cases", "unknown")))
        log(gate.message + " (against the float graph of the shipped weights)")
        if not gate.passed:
            raise ExportError(f"requantised int8 refused, nothing written: {gate.message}",
                              model_dir)
        ood = _refit_ood(raw, new_session, np.stack(fitted), kept, Path(gate_manifest), seed,
                         log)
        p_prev = run_session(ort_session(q8_path), held_x)[0]
        p_ref, p_new = run_session(ref_session, held_x)[0], run_session(new_session, held_x)[0]
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in model_dir.iterdir():
            target = out_dir / item.name
            if item.name in (MODEL_JSON, q8_path.name):
                continue
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
        shutil.copy2(q8, out_dir / q8_path.name)
    previous = raw["int8"]
    raw["files"] = {**raw["files"], "int8": {**raw["files"]["int8"],
                                             "sha256": sha256_file(out_dir / q8_path.name),
                                             "bytes": (out_dir / q8_path.name).stat().st_size}}
    raw["int8"] = {
        **gate.to_dict(), "cases_reason": previous.get("cases_reason"), "reference": REFERENCE,
        "reference_graph": undone,
        "previous_int8": {
            "settings": previous.get("quantization", {}).get("settings"),
            "sha256": spec.raw["files"]["int8"]["sha256"],
            "gate_vs_its_fp32": {k: previous.get(k) for k in
                                 ("auc_fp32", "auc_int8", "max_abs_probability_diff")},
            "max_abs_probability_diff_vs_reference": _max_diff(p_prev, p_ref),
            "max_abs_probability_diff_vs_this": _max_diff(p_prev, p_new),
            "mean_abs_probability_diff_vs_this": round(float(np.abs(p_prev - p_new).mean()), 6)},
        "quantization": qinfo, "calibration_case_ids": ids,
        "bytes": (out_dir / q8_path.name).stat().st_size}
    if ood is not None:
        raw["ood"] = ood
    return atomic_write_text(out_dir / MODEL_JSON, model_json_text(raw))


def _refit_ood(raw: dict, session, fitted: np.ndarray, kept: list, manifest: Path, seed: int,
               log: Callable[[str], None]) -> dict | None:
    """model.json's ``ood`` with its Gaussian fitted on ``session``'s features (None: the model
    has no OOD block to refit)."""
    old = raw.get("ood")
    if not old or "k" not in old:
        return None
    source = (f"{manifest.name}, {raw['int8'].get('cases', 'unknown')} for the final model; "
              "the features of the int8 file the runtime runs")
    info, why = fit_from_session(session, fitted, kept, source, int(old["k"]),
                                 float(old["quantile"]), seed, log)
    if info is None:
        raise ExportError(f"the OOD score could not be refitted ({why})", manifest)
    info["previous_threshold"] = old.get("threshold")
    return {**info, **{k: v for k, v in old.items() if k.startswith("body_fraction")}}


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.abs(a - b).max()), 6)
