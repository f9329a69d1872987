"""``export_model``: a training run folder -> a verified, self-describing ONNX model folder.

Reads ``RUN/config.json`` + ``RUN/model.safetensors`` (and, defensively, ``RUN/metrics.json``),
exports the probability + CAM graph, runs the parity gates on real preprocessed cases from a
manifest, optionally quantises to int8 behind its own gate, and writes::

    MODEL_DIR/model.onnx        fp32, single file, dynamic batch
    MODEL_DIR/model.int8.onnx   only with int8=True and a passed gate
    MODEL_DIR/model.json        the contract read by spinefx.runtime (sha256 of every file, ...)

Everything is first built in a staging folder beside ``MODEL_DIR``; files are moved in with
``os.replace`` (atomic) and ``model.json`` comes last. A failed gate leaves ``MODEL_DIR`` as it
was. ``MODEL_DIR`` must be new, empty, or a previous spinefx export.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import TypedDict

import numpy as np

from spinefx.runtime import Case, PreprocessConfig, prepare_case, read_manifest
from spinefx.runtime.errors import ConfigError, SpineFXError, SpineFXWarning
from spinefx.runtime.files import read_json
from spinefx.runtime.model_files import FORMAT, MODEL_JSON, sha256_file
from spinefx.runtime.provenance import is_synthetic_record

from .onnx_export import (CAM_NAME, CAM_R_BOUND, INPUT_NAME, PROBABILITY_BOUND, PROBABILITY_NAME,
                          ExportError, ParityError, check_cam_parity, check_onnx,
                          check_probability_parity, export_onnx, ort_session, run_session)
from .quantize import AUC_DROP_BOUND, PROB_DIFF_BOUND, int8_gate, quantize_int8

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
OWN_FILES = (FP32_FILE, INT8_FILE, FP16_FILE, MODEL_JSON)
PARITY_CASES = 16
CALIB_CASES = 32

# one entry of model.json's "files" (functional form: a key "bytes" in a class body would shadow
# the builtin)
_FileEntry = TypedDict("_FileEntry", {"path": str, "sha256": str, "bytes": int, "dtype": str})


# ---------------------------------------------------------------------------------------------
# reading the run folder
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    """A JSON object (``runtime.files.read_json``), or {} when the file is missing, or is
    unreadable (with a warning) or not an object."""
    try:
        data = read_json(path, required=False)
    except ConfigError as exc:
        warnings.warn(f"{exc}; ignored", SpineFXWarning, stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


def _training_manifest(run_dir: Path, config: dict, metrics: dict) -> Path | None:
    """The manifest the run was trained on, as recorded by the trainer (if it still exists)."""
    candidates = [(config.get("training") or {}).get("manifest"), metrics.get("manifest"),
                  _read_json(run_dir / "run.json").get("manifest")]
    for text in candidates:
        if isinstance(text, str) and text:
            path = Path(text)
            if not path.is_absolute():
                path = run_dir / path
            if path.is_file():
                return path
    return None


def _threshold(config: dict, metrics: dict) -> tuple[float, str]:
    for raw, source in ((metrics.get("threshold"), "metrics.json threshold"),
                        ((config.get("training") or {}).get("threshold"),
                         "config.json training.threshold")):
        if raw is None:  # not recorded there
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if 0.0 <= value <= 1.0:
            return value, source
    warnings.warn("the run records no operating threshold: using 0.5", SpineFXWarning,
                  stacklevel=3)
    return 0.5, "default 0.5 (the run recorded none)"


def _metrics_summary(metrics: dict) -> dict:
    """The cross-validated metrics of the training report (whatever of them the run has)."""
    keys = ("n_cases", "n_malignant", "folds", "positive_class", "threshold_rule",
            "pooled", "pooled_at_operating_threshold", "per_fold_summary", "calibration")
    out = {k: metrics[k] for k in keys if k in metrics}
    if out:
        out["source"] = "RUN/metrics.json (pooled out-of-fold predictions, 95% CIs)"
        out["synthetic"] = bool(metrics.get("synthetic", False))
    return out


def _training_data(manifest: Path | None, metrics: dict, config: dict) -> dict:
    cohort = _read_json(manifest.parent / "cohort.json") if manifest else {}
    synthetic = is_synthetic_record(cohort) or is_synthetic_record(metrics)
    n_cases = metrics.get("n_cases", cohort.get("n_cases"))
    n_mal = metrics.get("n_malignant", cohort.get("n_malignant"))
    seed = cohort.get("seed") if cohort else None
    counts = f"{n_cases} cases" if n_cases is not None else "unknown number of cases"
    if n_mal is not None:
        counts += f" ({n_mal} malignant)"
    if synthetic:
        description = f"synthetic phantom cohort, {counts}" + (
            f", seed {seed}" if seed is not None else "")
    else:
        description = f"manifest {manifest.name if manifest else '(not recorded)'}, {counts}"
    data = {"description": description, "synthetic": synthetic, "n_cases": n_cases,
            "n_malignant": n_mal, "seed": seed,
            "training_seed": (config.get("training") or {}).get("seed")}
    if cohort:
        data["generator"] = {k: cohort[k] for k in ("generator", "generator_version",
                                                     "difficulty") if k in cohort}
    return data


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
def stratified_order(cases: list[Case], seed: int = 0) -> list[int]:
    """Case indices in a seeded order in which every prefix holds both classes in proportion
    (unlabelled cases first: they can calibrate but not be scored)."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(cases))
    for label in (None, "benign", "malignant"):
        idx = [i for i, c in enumerate(cases) if c.label == label]
        for rank, i in enumerate(rng.permutation(idx)):
            keys[i] = -1.0 if label is None else (rank + 0.5) / len(idx)
    return [int(i) for i in np.argsort(keys, kind="stable")]


def prepare_inputs(cases: list[Case], config: PreprocessConfig,
                   progress: bool = False) -> tuple[np.ndarray, list[Case], list[str]]:
    """Preprocess cases (as training and the runtime do); a case that fails is skipped and
    named in the returned notes."""
    from tqdm.auto import tqdm

    arrays, kept, notes = [], [], []
    for case in tqdm(cases, desc="preprocessing", unit="case", disable=not progress):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpineFXWarning)
                arrays.append(prepare_case(case, config).array)
            kept.append(case)
        except SpineFXError as exc:
            notes.append(f"case {case.case_id} skipped: {exc}")
    shape = (0, config.n_channels, config.image_size, config.image_size)
    batch = np.stack(arrays).astype(np.float32) if arrays else np.zeros(shape, np.float32)
    return batch, kept, notes


# ---------------------------------------------------------------------------------------------
# the output folder
# ---------------------------------------------------------------------------------------------
def _check_out_dir(out_dir: Path, run_dir: Path) -> None:
    if out_dir.resolve() == run_dir.resolve():
        raise ExportError("write the export to its own folder, not into the run folder", out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError("exists and is not a folder", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        spec = _read_json(out_dir / MODEL_JSON)
        if spec.get("format") != FORMAT:
            raise ExportError("folder is not empty and holds no previous spinefx export "
                              f"({MODEL_JSON} with format {FORMAT!r}); refusing to overwrite it",
                              out_dir)


def _install(staging: Path, out_dir: Path, files: list[str]) -> None:
    """Move the staged files in (os.replace: atomic per file), model.json last; drop own files
    of a previous export that this export does not have (e.g. a refused int8 model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        if name != MODEL_JSON:
            os.replace(staging / name, out_dir / name)
    os.replace(staging / MODEL_JSON, out_dir / MODEL_JSON)
    for name in OWN_FILES:
        if name not in files and (out_dir / name).exists():
            (out_dir / name).unlink()


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    from spinefx._version import __version__
    return {"spinefx": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def _num(value):
    if value is None:
        return None
    value = float(value)
    return round(value, 8) if np.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
def export_model(run_dir: str | PathLike, out_dir: str | PathLike,
                 manifest: str | PathLike | None = None, int8: bool = False,
                 calib_cases: int = CALIB_CASES, name: str | None = None, *,
                 parity_cases: int = PARITY_CASES, exporter: str = "auto",
                 probability_bound: float = PROBABILITY_BOUND, cam_r_bound: float = CAM_R_BOUND,
                 auc_drop_bound: float = AUC_DROP_BOUND,
                 prob_diff_bound: float = PROB_DIFF_BOUND, seed: int = 0,
                 progress: bool = False, log=print, fp16: bool = False,
                 only_default: bool = False) -> Path:
    """Export the run in ``run_dir`` to ``out_dir`` (see the module docstring); returns the
    path of ``model.json``. Raises :class:`ParityError` when the fp32 graph fails a gate (nothing
    is written) and :class:`ExportError` for unusable inputs. A refused int8 model is not an
    error: the fp32 model is written, ``model.json["int8"]`` says why (``passed: false``).
    ``fp16`` adds float16-stored weights (half the file, float32 arithmetic), gated the same
    way; the default variant is int8 if it passed, else fp16 if it passed, else fp32.
    ``only_default`` keeps only the default variant's file (a lean bundle)."""
    from spinefx.train.model import load_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    log = log or (lambda *a, **k: None)
    t_start = time.perf_counter()
    for needed in ("config.json", "model.safetensors"):
        if not (run_dir / needed).is_file():
            raise ExportError(f"not a training run folder: {needed} is missing", run_dir)
    _check_out_dir(out_dir, run_dir)
    config = _read_json(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    try:
        model = load_model(run_dir)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ExportError(f"cannot load the model: {str(exc).splitlines()[0]}", run_dir) from None
    prep = model.preprocess_config

    manifest_path = Path(manifest) if manifest else _training_manifest(run_dir, config, metrics)
    if manifest_path is None:
        raise ExportError("no manifest to check parity on: the run records none that still "
                          "exists; pass --manifest M (preprocessed cases feed the gates)",
                          run_dir)
    cases = read_manifest(manifest_path)
    order = [cases[i] for i in stratified_order(cases, seed)]
    if not (int8 or fp16):
        order = order[:parity_cases]
    log(f"preprocessing {len(order)} case(s) from {manifest_path} at {prep.image_size} px")
    inputs, kept, notes = prepare_inputs(order, prep, progress)
    for note in notes:
        warnings.warn(note, SpineFXWarning, stacklevel=2)
    if len(kept) == 0:
        raise ExportError("no case of the manifest could be preprocessed", manifest_path)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".spinefx-export-", dir=out_dir.parent))
    try:
        # -- fp32 export + gates ------------------------------------------------------------
        fp32 = staging / FP32_FILE
        info = export_onnx(model, fp32, prep.image_size, prep.n_channels, exporter=exporter)
        structure = check_onnx(fp32)
        log(f"exported {FP32_FILE} ({structure['bytes'] / 2**20:.1f} MiB) with the "
            f"{info['exporter']} exporter, opset {structure['opset']}, in {info['seconds']} s; "
            "onnx.checker clean")
        session = ort_session(fp32)
        parity_x = inputs[:parity_cases]
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

        files: dict[str, _FileEntry] = {
            "fp32": {"path": FP32_FILE, "sha256": sha256_file(fp32),
                     "bytes": fp32.stat().st_size, "dtype": "float32"}}
        int8_info: dict | None = None
        default = "fp32"
        # -- int8 ---------------------------------------------------------------------------
        if int8:
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
            q8 = staging / INT8_FILE
            qinfo = quantize_int8(fp32, q8, calib_x)
            gate = int8_gate(session, ort_session(q8), held_x, held_y, auc_drop_bound,
                             prob_diff_bound)
            int8_info = {**gate.to_dict(), "quantization": qinfo,
                         "calibration_case_ids": [c.case_id for c in kept[:n_cal]],
                         "bytes": q8.stat().st_size}
            log(gate.message)
            if gate.passed:
                files["int8"] = {"path": INT8_FILE, "sha256": sha256_file(q8),
                                 "bytes": q8.stat().st_size, "dtype": "int8 (QDQ)"}
                default = "int8"
            else:
                int8_info["status"] = "refused: not written"
                int8_info["message"] = gate.message
                q8.unlink()

        # -- fp16 weights (no calibration, so every labelled case can judge it) ---------------
        fp16_info: dict | None = None
        if fp16:
            from .compress import fp16_weights

            f16 = staging / FP16_FILE
            cinfo = fp16_weights(fp32, f16)
            labelled = [i for i, c in enumerate(kept) if c.label is not None]
            gate = int8_gate(session, ort_session(f16), inputs[labelled],
                             np.array([kept[i].target for i in labelled], dtype=int),
                             auc_drop_bound, prob_diff_bound, variant="fp16",
                             cases="labelled (no calibration to hold out from)")
            fp16_info = {**gate.to_dict(), "compression": cinfo, "bytes": f16.stat().st_size}
            log(gate.message)
            if gate.passed:
                files["fp16"] = {"path": FP16_FILE, "sha256": sha256_file(f16),
                                 "bytes": f16.stat().st_size,
                                 "dtype": "float16 weights, float32 compute"}
                default = default if default == "int8" else "fp16"
            else:
                fp16_info["status"] = "refused: not written"
                f16.unlink()
        if only_default:  # ship one file; model.json records what was left out and why
            dropped = sorted(v for v in files if v != default)
            files = {default: files[default]}
            for variant in dropped:
                log(f"only the default variant ({default}) is kept: {variant} not written")

        # -- model.json ---------------------------------------------------------------------
        threshold, threshold_source = _threshold(config, metrics)
        cam_shape = list(cams.shape[1:])
        spec = {
            "format": FORMAT,
            "name": name or run_dir.resolve().name,
            "files": files,
            "default": default,
            "input": {"name": INPUT_NAME,
                      "shape": [None, prep.n_channels, prep.image_size, prep.image_size],
                      "dtype": "float32", "range": [0.0, 1.0],
                      "channels": list(prep.channel_names)},
            "outputs": {"probability": PROBABILITY_NAME, "cam": CAM_NAME,
                        "probability_shape": [None], "cam_shape": [None, *cam_shape],
                        "cam_layer": "backbone.layer4",
                        "cam_definition": "ReLU(sum_k w_k A_k), A = layer4 output, w = head "
                                          "weights (Grad-CAM up to a positive constant); "
                                          "raw, normalise by the max"},
            "preprocessing": prep.to_dict(),
            "classes": list(model.classes),
            "positive_class": "malignant",
            "threshold": threshold,
            "threshold_source": threshold_source,
            "metrics": _metrics_summary(metrics),
            "training_data": _training_data(manifest_path, metrics, config),
            "architecture": {"name": model.architecture, "in_channels": model.in_channels,
                             "description": "1x1 conv 6->3 + torchvision ResNet50, GAP + one "
                                            "linear head (Yeh et al. 2022)"},
            "parity": {"cases_from": manifest_path.name,
                       "probability": {k: _num(v) if isinstance(v, float) else v
                                       for k, v in prob_report.to_dict().items()},
                       "cam": {k: _num(v) if isinstance(v, float) else v
                               for k, v in cam_report.to_dict().items()}},
            "int8": int8_info,
            "fp16": fp16_info,
            "export": {"exporter": info["exporter"], "opset": structure["opset"],
                       "ir_version": structure["ir_version"],
                       "seconds": round(time.perf_counter() - t_start, 1),
                       "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "versions": _versions(), "skipped_cases": notes},
            "intended_use": "research and teaching; not a medical device",
        }
        (staging / MODEL_JSON).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        _install(staging, out_dir, [f["path"] for f in files.values()] + [MODEL_JSON])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {out_dir / MODEL_JSON} (default variant {default}) in "
        f"{time.perf_counter() - t_start:.1f} s")
    return out_dir / MODEL_JSON
