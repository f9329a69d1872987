"""The ONNX variants of an export, each staged and behind its own gate.

- :func:`export_fp32`: the probability + CAM graph, ``onnx.checker``, a dynamic-batch check and
  the parity gates against PyTorch (probability) and pytorch-grad-cam (CAM); a failed gate
  raises :class:`~spinefx.export.onnx_export.ParityError`.
- :func:`int8_variant`: static QDQ int8, calibrated on the first cases and judged on the
  labelled rest; :func:`fp16_variant`: float16-stored weights, judged on every labelled case.
  A refused variant is not an error: its file is deleted and its report says why.

:func:`~spinefx.export.exporter.export_model` runs them in its staging folder and writes the
reports and :func:`file_entry` s into ``model.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from spinefx.runtime import Case
from spinefx.runtime.model_files import sha256_file
from spinefx.train.model import SpineFxNet

from .compress import fp16_weights
from .onnx_export import (
    ExportError,
    ParityError,
    ParityReport,
    check_cam_parity,
    check_onnx,
    check_probability_parity,
    export_onnx,
    ort_session,
    run_session,
)
from .quantize import int8_gate, quantize_int8

# one entry of model.json's "files" (functional form: a key "bytes" in a class body would shadow
# the builtin)
FileEntry = TypedDict("FileEntry", {"path": str, "sha256": str, "bytes": int, "dtype": str})


def file_entry(path: Path, dtype: str) -> FileEntry:
    """The ``model.json["files"]`` entry of a staged ONNX file."""
    return {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "dtype": dtype}


@dataclass
class Fp32Export:
    """The staged fp32 graph and what its gates measured."""

    path: Path
    info: dict                 # export_onnx: exporter, seconds
    structure: dict            # check_onnx: opset, ir_version, bytes
    session: Any               # its onnxruntime session, the reference of the reduced variants
    probability: ParityReport
    cam: ParityReport
    cam_shape: list[int]       # one map's shape (h, w)


def export_fp32(model: SpineFxNet, path: Path, parity_x: np.ndarray, exporter: str,
                probability_bound: float, cam_r_bound: float, log) -> Fp32Export:
    """Export, check the graph and run the parity gates (a failed gate raises
    :class:`ParityError`)."""
    prep = model.preprocess_config
    info = export_onnx(model, path, prep.image_size, prep.n_channels, exporter=exporter)
    structure = check_onnx(path)
    log(f"exported {path.name} ({structure['bytes'] / 2**20:.1f} MiB) with the "
        f"{info['exporter']} exporter, opset {structure['opset']}, in {info['seconds']} s; "
        "onnx.checker clean")
    session = ort_session(path)
    probs, cams = run_session(session, parity_x, chunk=len(parity_x))
    p1, c1 = run_session(session, parity_x[:1], chunk=1)  # the batch axis really is dynamic
    if not (np.allclose(p1, probs[:1], atol=1e-5) and c1.shape[1:] == cams.shape[1:]):
        raise ParityError("dynamic-batch", float(np.abs(p1 - probs[:1]).max()), 1e-5,
                          "batch 1 disagrees with the batched run")
    prob_report = check_probability_parity(model, probs, parity_x, probability_bound)
    log(f"probability parity: max |p_onnx - p_torch| = {prob_report.measured:.2e} "
        f"(<= {probability_bound:g}) on {prob_report.n} cases")
    cam_report = check_cam_parity(model, cams, parity_x, cam_r_bound)
    log(f"CAM parity vs pytorch-grad-cam GradCAM: min r = {cam_report.measured:.6f} "
        f"(>= {cam_r_bound}) on {cam_report.details['n_compared']} maps "
        f"({cam_report.details['n_skipped_all_zero']} all-zero skipped)")
    return Fp32Export(path=path, info=info, structure=structure, session=session,
                 probability=prob_report, cam=cam_report, cam_shape=list(cams.shape[1:]))


def int8_variant(fp32: Fp32Export, q8: Path, inputs: np.ndarray, kept: list[Case],
                 calib_cases: int, auc_drop_bound: float, prob_diff_bound: float,
                 log) -> tuple[dict, FileEntry | None]:
    """Quantise, calibrated on the first cases, gated on the labelled rest: (model.json's
    "int8", the file's entry, or None when the gate refused it and the file is gone)."""
    # at most half the cases calibrate: the gate must judge int8 on cases it never saw
    n_cal = min(max(1, calib_cases), max(1, len(kept) // 2))
    calib_x = inputs[:n_cal]
    held = [i for i in range(n_cal, len(kept)) if kept[i].label is not None]
    held_x = inputs[held]
    held_y = np.array([kept[i].target for i in held], dtype=int)
    if len(set(held_y.tolist())) < 2:
        raise ExportError(f"the int8 gate needs held-out labelled cases of both classes; "
                          f"after {n_cal} calibration case(s) the manifest leaves "
                          f"{len(held)}: use a larger manifest or --calib-cases")
    log(f"int8: calibrating on {n_cal} case(s), gate on {len(held)} held-out case(s)")
    qinfo = quantize_int8(fp32.path, q8, calib_x)
    gate = int8_gate(fp32.session, ort_session(q8), held_x, held_y, auc_drop_bound,
                     prob_diff_bound)
    int8_info = {**gate.to_dict(), "quantization": qinfo,
                 "calibration_case_ids": [c.case_id for c in kept[:n_cal]],
                 "bytes": q8.stat().st_size}
    log(gate.message)
    if gate.passed:
        return int8_info, file_entry(q8, "int8 (QDQ)")
    int8_info["status"] = "refused: not written"
    int8_info["message"] = gate.message
    q8.unlink()
    return int8_info, None


def fp16_variant(fp32: Fp32Export, f16: Path, inputs: np.ndarray, kept: list[Case],
                 auc_drop_bound: float, prob_diff_bound: float,
                 log) -> tuple[dict, FileEntry | None]:
    """float16-stored weights, gated on every labelled case (no calibration to hold out
    from): (model.json's "fp16", the file's entry, or None when refused)."""

    cinfo = fp16_weights(fp32.path, f16)
    labelled = [i for i, c in enumerate(kept) if c.label is not None]
    gate = int8_gate(fp32.session, ort_session(f16), inputs[labelled],
                     np.array([kept[i].target for i in labelled], dtype=int),
                     auc_drop_bound, prob_diff_bound, variant="fp16",
                     cases="labelled (no calibration to hold out from)")
    fp16_info = {**gate.to_dict(), "compression": cinfo, "bytes": f16.stat().st_size}
    log(gate.message)
    if gate.passed:
        return fp16_info, file_entry(f16, "float16 weights, float32 compute")
    fp16_info["status"] = "refused: not written"
    f16.unlink()
    return fp16_info, None
