"""The ONNX variants of an export, each staged and behind its own gate.

- :func:`export_fp32`: the probability + CAM graph, ``onnx.checker``, a dynamic-batch check and
  the parity gates against PyTorch (probability) and pytorch-grad-cam (CAM); a failed gate
  raises :class:`~spinefx.export.onnx_export.ParityError`.
- :func:`int8_variant`: static QDQ int8, calibrated on the first cases and judged on the
  labelled rest; :func:`fp16_variant`: float16-stored weights, judged on every labelled case.
  A refused variant is not an error: its file is deleted and its report says why.
- :func:`gate_provenance`: whether the gate's cases are ``in-sample`` for the final model (the
  run's own training cases) or ``held-out`` (a fresh cohort); each gate record says which, and
  an in-sample gate warns (its verdict says nothing about cases the model never saw).

:func:`~spinefx.export.exporter.export_model` runs them in its staging folder and writes the
reports and :func:`file_entry` s into ``model.json``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from spinefx.runtime import Case, read_manifest
from spinefx.runtime.errors import SpineFXError, SpineFXWarning
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
from .quantize import CHOSEN, Int8Settings, int8_gate, quantize_int8

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


IN_SAMPLE, HELD_OUT, UNKNOWN = "in-sample", "held-out", "unknown"
#: what a gate record says when its caller did not say where the cases came from
NOT_STATED = {"cases": UNKNOWN, "reason": "the exporter did not say whether the gate's cases "
                                          "were among the final model's training cases"}


def _cohort_seed(manifest: Path) -> int | None:
    """The phantom generator's seed of the cohort beside ``manifest`` (None: not a phantom
    cohort, or no readable cohort.json)."""
    import json

    try:
        cohort = json.loads((manifest.parent / "cohort.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cohort, dict) or cohort.get("generator") != "spinefx.phantom":
        return None
    seed = cohort.get("seed")
    return seed if isinstance(seed, int) else None


def gate_provenance(gate_manifest: Path, training_manifest: Path | None) -> dict:
    """``{"cases": "in-sample" | "held-out" | "unknown", "reason": ...}`` for the gate cases of
    ``gate_manifest`` relative to the final model, trained on ``training_manifest``: in-sample
    when it is the same manifest, when any case uses a training case's series, or when both are
    phantom cohorts of the same generator seed (the same patients, re-written); held-out when
    none of these holds; unknown when the training manifest is not known or unreadable."""
    if training_manifest is None:
        return {"cases": UNKNOWN, "reason": "the run records no training manifest that still "
                                            "exists"}
    gate_manifest, training_manifest = Path(gate_manifest), Path(training_manifest)
    if gate_manifest.resolve() == training_manifest.resolve():
        return {"cases": IN_SAMPLE, "reason": f"{gate_manifest.name} is the run's own "
                                              "training manifest"}
    try:
        gate = read_manifest(gate_manifest, allow_outside=True)
        train = read_manifest(training_manifest, allow_outside=True)
    except SpineFXError as exc:
        return {"cases": UNKNOWN, "reason": f"cannot compare the manifests: {exc}"}
    series = {(c.t1.resolve(), c.t2.resolve()) for c in train}
    shared = [c.case_id for c in gate if (c.t1.resolve(), c.t2.resolve()) in series]
    if shared:
        return {"cases": IN_SAMPLE, "reason": f"{len(shared)} of {len(gate)} gate case(s) use "
                                              "series of the training manifest"}
    seeds = _cohort_seed(gate_manifest), _cohort_seed(training_manifest)
    if seeds[0] is not None and seeds[0] == seeds[1]:
        return {"cases": IN_SAMPLE, "reason": f"the gate cohort has the training cohort's "
                                              f"phantom seed {seeds[0]}"}
    why = f"phantom seed {seeds[0]} vs {seeds[1]}; " if None not in seeds else ""
    return {"cases": HELD_OUT, "reason": f"{why}no gate case uses a series of the training "
                                         f"manifest {training_manifest.name}"}


def _warn_in_sample(variant: str, provenance: dict, log) -> None:
    if provenance["cases"] != IN_SAMPLE:
        return
    message = (f"the {variant} gate runs on cases the final model was trained on "
               f"({provenance['reason']}): its verdict is in-sample; give a fresh cohort "
               "with --gate-manifest for a held-out gate")
    log(f"warning: {message}")
    warnings.warn(message, SpineFXWarning, stacklevel=3)


def int8_variant(fp32: Fp32Export, q8: Path, inputs: np.ndarray, kept: list[Case],
                 calib_cases: int, auc_drop_bound: float, prob_diff_bound: float,
                 log, *, provenance: dict | None = None,
                 settings: Int8Settings = CHOSEN) -> tuple[dict, FileEntry | None]:
    """Quantise, calibrated on the first cases, gated on the labelled rest: (model.json's
    "int8", the file's entry, or None when the gate refused it and the file is gone).
    ``provenance``: :func:`gate_provenance` of the cases (recorded; in-sample warns)."""
    provenance = provenance or NOT_STATED
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
    log(f"int8: calibrating on {n_cal} case(s), gate on {len(held)} other case(s) "
        f"({provenance['cases']} for the final model)")
    _warn_in_sample("int8", provenance, log)
    qinfo = quantize_int8(fp32.path, q8, calib_x, settings=settings)
    gate = int8_gate(fp32.session, ort_session(q8), held_x, held_y, auc_drop_bound,
                     prob_diff_bound, cases=provenance["cases"])
    int8_info = {**gate.to_dict(), "cases_reason": provenance["reason"],
                 "quantization": qinfo,
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
                 log, *, provenance: dict | None = None) -> tuple[dict, FileEntry | None]:
    """float16-stored weights, gated on every labelled case (no calibration to hold out
    from): (model.json's "fp16", the file's entry, or None when refused)."""
    provenance = provenance or NOT_STATED
    _warn_in_sample("fp16", provenance, log)
    cinfo = fp16_weights(fp32.path, f16)
    labelled = [i for i, c in enumerate(kept) if c.label is not None]
    gate = int8_gate(fp32.session, ort_session(f16), inputs[labelled],
                     np.array([kept[i].target for i in labelled], dtype=int),
                     auc_drop_bound, prob_diff_bound, variant="fp16",
                     cases=provenance["cases"])
    fp16_info = {**gate.to_dict(), "cases_reason": provenance["reason"],
                 "compression": cinfo, "bytes": f16.stat().st_size}
    log(gate.message)
    if gate.passed:
        return fp16_info, file_entry(f16, "float16 weights, float32 compute")
    fp16_info["status"] = "refused: not written"
    f16.unlink()
    return fp16_info, None
