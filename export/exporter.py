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

Each variant and its gate: :mod:`spinefx.export.variants`; what the run folder records:
:mod:`spinefx.export.run_record`.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
import warnings
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path

import numpy as np

from spinefx._version import __version__
from spinefx.runtime import (
    Case,
    PreprocessConfig,
    align_pair,
    build_six_channel,
    load_volume,
    read_manifest,
)
from spinefx.runtime.errors import SpineFXError, SpineFXWarning
from spinefx.runtime.files import atomic_write_text
from spinefx.runtime.model_files import FORMAT, MODEL_JSON
from spinefx.runtime.ood import t2_kind
from spinefx.runtime.provenance import NOT_A_DEVICE
from spinefx.runtime.roi_snap import snap_roi
from spinefx.train.model import SpineFxNet, load_model
from spinefx.train.run_folder import manifest_permission

from .onnx_export import (
    CAM_NAME,
    CAM_R_BOUND,
    INPUT_NAME,
    PROBABILITY_BOUND,
    PROBABILITY_NAME,
    ExportError,
    ParityReport,
)
from .ood import (
    DEFAULT_K,
    DEFAULT_QUANTILE,
    add_body_fraction,
    add_to_spec,
    check_features,
    fit_from_session,
    model_json_text,
)
from .quantize import AUC_DROP_BOUND, PROB_DIFF_BOUND
from .run_record import (
    metrics_summary,
    operating_threshold,
    read_record,
    training_data,
    training_manifest,
)
from .variants import (
    FileEntry,
    Fp32Export,
    export_fp32,
    file_entry,
    fp16_variant,
    gate_provenance,
    int8_variant,
)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
OWN_FILES = (FP32_FILE, INT8_FILE, FP16_FILE, MODEL_JSON)
PARITY_CASES = 16
CALIB_CASES = 32


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


def prepare_inputs(cases: list[Case], config: PreprocessConfig, progress: bool = False,
                   headers: list[tuple[float, str]] | None = None,
                   fitted: list[np.ndarray] | None = None
                   ) -> tuple[np.ndarray, list[Case], list[str]]:
    """Preprocess cases (as training and the runtime do: ``runtime.prepare_case``'s steps); a
    case that fails is skipped and named in the returned notes. ``headers``, if given, gets
    each kept case's (T1 slice spacing in mm, T2 kind): model.json's training ranges.
    ``fitted``, if given, gets each kept case's input at the box the runtime gives the model
    (its box or click fitted to the body under its centre: ``runtime.roi_snap.snap_roi``)."""
    from tqdm.auto import tqdm

    arrays, kept, notes = [], [], []
    for case in tqdm(cases, desc="preprocessing", unit="case", disable=None if progress else True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpineFXWarning)
                t1, t2 = load_volume(case.t1, "T1"), load_volume(case.t2, "T2")
                pair = align_pair(t1, t2)
                x = build_six_channel(pair, case.slice, box=case.box, center=case.center,
                                      size_mm=case.size_mm, config=config).array
                if fitted is not None:
                    fitted.append(_fitted_input(pair, case, config, x))
            arrays.append(x)
            if headers is not None:
                headers.append((t1.slice_spacing, t2_kind(t2.description)))
            kept.append(case)
        except SpineFXError as exc:
            notes.append(f"case {case.case_id} skipped: {exc}")
    shape = (0, config.n_channels, config.image_size, config.image_size)
    batch = np.stack(arrays).astype(np.float32) if arrays else np.zeros(shape, np.float32)
    return batch, kept, notes


def _fitted_input(pair, case: Case, config: PreprocessConfig, as_given: np.ndarray) -> np.ndarray:
    """The case's input at its box fitted to the body (``as_given`` where it is kept)."""
    snap = snap_roi(pair.t1, case.slice, case.box, case.center, case.size_mm,
                    config.default_size_mm)
    if snap is None or not snap.snapped:
        return as_given
    return build_six_channel(pair, case.slice, box=snap.box, config=config).array


def _gate_manifest(manifest: str | PathLike | None, run_dir: Path, config: dict,
                   metrics: dict) -> Path:
    """``manifest`` if given, else the one the run was trained on."""
    manifest_path = Path(manifest) if manifest else training_manifest(run_dir, config, metrics)
    if manifest_path is None:
        raise ExportError("no manifest to check parity on: the run records none that still "
                          "exists; pass --manifest M (preprocessed cases feed the gates)",
                          run_dir)
    return manifest_path


def _gate_cases(manifest_path: Path, prep: PreprocessConfig, n_cases: int | None, seed: int,
                progress: bool, log, allow_outside: bool = False,
                headers: list[tuple[float, str]] | None = None,
                fitted: list[np.ndarray] | None = None
                ) -> tuple[np.ndarray, list[Case], list[str]]:
    """The manifest's cases in stratified order (the first ``n_cases`` of them, if given),
    preprocessed; a case that fails is skipped with a warning naming ``export_model``'s
    caller. ``allow_outside``: series may lie outside the manifest's folder."""
    cases = read_manifest(manifest_path, allow_outside=allow_outside)
    order = [cases[i] for i in stratified_order(cases, seed)]
    if n_cases is not None:
        order = order[:n_cases]
    log(f"preprocessing {len(order)} case(s) from {manifest_path} at {prep.image_size} px")
    inputs, kept, notes = prepare_inputs(order, prep, progress, headers, fitted)
    for note in notes:
        warnings.warn(note, SpineFXWarning, stacklevel=3)
    if len(kept) == 0:
        raise ExportError("no case of the manifest could be preprocessed", manifest_path)
    return inputs, kept, notes


# ---------------------------------------------------------------------------------------------
# the output folder
# ---------------------------------------------------------------------------------------------
def _check_out_dir(out_dir: Path, run_dir: Path) -> None:
    if out_dir.resolve() == run_dir.resolve():
        raise ExportError("write the export to its own folder, not into the run folder", out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError("exists and is not a folder", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        spec = read_record(out_dir / MODEL_JSON)
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


# ---------------------------------------------------------------------------------------------
def export_model(run_dir: str | PathLike, out_dir: str | PathLike,
                 manifest: str | PathLike | None = None, int8: bool = False,
                 calib_cases: int = CALIB_CASES, name: str | None = None, *,
                 parity_cases: int = PARITY_CASES, exporter: str = "auto",
                 probability_bound: float = PROBABILITY_BOUND, cam_r_bound: float = CAM_R_BOUND,
                 auc_drop_bound: float = AUC_DROP_BOUND,
                 prob_diff_bound: float = PROB_DIFF_BOUND, seed: int = 0,
                 progress: bool = False, log=print, fp16: bool = False,
                 only_default: bool = False, allow_outside: bool = False, ood: bool = True,
                 ood_k: int = DEFAULT_K, ood_quantile: float = DEFAULT_QUANTILE) -> Path:
    """Export the run in ``run_dir`` to ``out_dir`` (see the module docstring); returns the
    path of ``model.json``. Raises :class:`ParityError` when the fp32 graph fails a gate (nothing
    is written) and :class:`ExportError` for unusable inputs. A refused int8 model is not an
    error: the fp32 model is written, ``model.json["int8"]`` says why (``passed: false``).
    ``fp16`` adds float16-stored weights (half the file, float32 arithmetic), gated the same
    way; the default variant is int8 if it passed, else fp16 if it passed, else fp32.
    ``only_default`` keeps only the default variant's file (a lean bundle). ``allow_outside``:
    the gate manifest's series may lie outside its folder; the training manifest of a run
    trained with that permission has it already (its ``run.json`` records it). ``ood``: fit
    the out-of-distribution score (:mod:`spinefx.export.ood`) on every case of the manifest
    (k = ``ood_k`` directions, threshold at the ``ood_quantile`` of out-of-fold scores)."""

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    log = log or (lambda *a, **k: None)
    t_start = time.perf_counter()
    for needed in ("config.json", "model.safetensors"):
        if not (run_dir / needed).is_file():
            raise ExportError(f"not a training run folder: {needed} is missing", run_dir)
    _check_out_dir(out_dir, run_dir)
    config = read_record(run_dir / "config.json")  # unreadable: a warning naming our caller
    metrics = read_record(run_dir / "metrics.json")
    try:
        model = load_model(run_dir)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ExportError(f"cannot load the model: {str(exc).splitlines()[0]}", run_dir) from None
    manifest_path = _gate_manifest(manifest, run_dir, config, metrics)
    trained_on = training_manifest(run_dir, config, metrics)
    provenance = gate_provenance(manifest_path, trained_on)
    permission = manifest_permission(run_dir, manifest_path, allow_outside)
    # the gates of the reduced variants and the OOD fit use every case; fp32's parity needs
    # only the first
    headers: list[tuple[float, str]] = []
    # the OOD score is fitted at the boxes the runtime gives the model (fitted to the body)
    fitted: list[np.ndarray] | None = [] if ood else None
    inputs, kept, notes = _gate_cases(manifest_path, model.preprocess_config,
                                      None if (int8 or fp16 or ood) else parity_cases, seed,
                                      progress, log, permission, headers, fitted)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".spinefx-export-", dir=out_dir.parent))
    try:
        fp32 = export_fp32(model, staging / FP32_FILE, inputs[:parity_cases], exporter,
                           probability_bound, cam_r_bound, log)
        features_parity = check_features(model, fp32.session, inputs[:parity_cases], log)
        source = f"{manifest_path.name}, {provenance['cases']} for the final model"
        ood_info, ood_note = (fit_from_session(fp32.session, np.stack(fitted), kept, source,
                                               ood_k, ood_quantile, seed, log)
                              if fitted else (None, "not fitted: export_model(ood=False)"))
        if ood_info is not None:   # the second signal: a vertebral body in the ROI
            ood_info = add_body_fraction(ood_info, kept, manifest_path.name,
                                         model.preprocess_config.default_size_mm, log)
        files: dict[str, FileEntry] = {"fp32": file_entry(fp32.path, "float32")}
        default = "fp32"
        int8_info = fp16_info = None
        if int8:
            int8_info, entry = int8_variant(fp32, staging / INT8_FILE, inputs, kept,
                                            calib_cases, auc_drop_bound, prob_diff_bound, log,
                                            provenance=provenance)
            if entry is not None:
                files["int8"], default = entry, "int8"
        if fp16:
            fp16_info, entry = fp16_variant(fp32, staging / FP16_FILE, inputs, kept,
                                            auc_drop_bound, prob_diff_bound, log,
                                            provenance=provenance)
            if entry is not None:
                files["fp16"] = entry
                default = default if default == "int8" else "fp16"
        if only_default:  # ship one file; model.json records what was left out and why
            files = _only_default(files, default, log)

        threshold = operating_threshold(config, metrics)  # none: a warning naming our caller
        spec = _model_spec(name or run_dir.resolve().name, model, files, default, threshold,
                           config, metrics, manifest_path, fp32, int8_info, fp16_info,
                           t_start, notes, trained_on)
        add_to_spec(spec, features_parity, ood_info, ood_note, headers)
        atomic_write_text(staging / MODEL_JSON, model_json_text(spec))
        _install(staging, out_dir, [f["path"] for f in files.values()] + [MODEL_JSON])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {out_dir / MODEL_JSON} (default variant {default}) in "
        f"{time.perf_counter() - t_start:.1f} s")
    return out_dir / MODEL_JSON


def _only_default(files: dict[str, FileEntry], default: str, log) -> dict[str, FileEntry]:
    """The default variant's entry alone; each variant left out is logged."""
    for variant in sorted(v for v in files if v != default):
        log(f"only the default variant ({default}) is kept: {variant} not written")
    return {default: files[default]}


# ---------------------------------------------------------------------------------------------
# model.json
# ---------------------------------------------------------------------------------------------
def _model_spec(name: str, model: SpineFxNet, files: dict[str, FileEntry], default: str,
                threshold: tuple[float, str], config: dict, metrics: dict,
                manifest_path: Path, fp32: Fp32Export, int8_info: dict | None,
                fp16_info: dict | None, t_start: float, notes: list[str],
                trained_on: Path | None = None) -> dict:
    """The contract read by ``spinefx.runtime``. ``trained_on``: the run's training manifest
    (its cohort describes the training data; the gate manifest may be another cohort)."""
    prep = model.preprocess_config
    return {
        "format": FORMAT,
        "name": name,
        "files": files,
        "default": default,
        "input": {"name": INPUT_NAME,
                  "shape": [None, prep.n_channels, prep.image_size, prep.image_size],
                  "dtype": "float32", "range": [0.0, 1.0],
                  "channels": list(prep.channel_names)},
        "outputs": {"probability": PROBABILITY_NAME, "cam": CAM_NAME,
                    "probability_shape": [None], "cam_shape": [None, *fp32.cam_shape],
                    "cam_layer": "backbone.layer4",
                    "cam_definition": "ReLU(sum_k w_k A_k), A = layer4 output, w = head "
                                      "weights (Grad-CAM up to a positive constant); "
                                      "raw, normalise by the max"},
        "preprocessing": prep.to_dict(),
        "classes": list(model.classes),
        "positive_class": "malignant",
        "threshold": threshold[0],
        "threshold_source": threshold[1],
        "metrics": metrics_summary(metrics),
        "training_data": training_data(trained_on or manifest_path, metrics, config),
        "architecture": {"name": model.architecture, "in_channels": model.in_channels,
                         "description": "1x1 conv 6->3 + torchvision ResNet50, GAP + one "
                                        "linear head (Yeh et al. 2022)"},
        "parity": {"cases_from": manifest_path.name,
                   "probability": _rounded(fp32.probability),
                   "cam": _rounded(fp32.cam)},
        "int8": int8_info,
        "fp16": fp16_info,
        "export": {"exporter": fp32.info["exporter"], "opset": fp32.structure["opset"],
                   "ir_version": fp32.structure["ir_version"],
                   "seconds": round(time.perf_counter() - t_start, 1),
                   "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "versions": _versions(), "skipped_cases": notes},
        "intended_use": NOT_A_DEVICE,
    }


def _rounded(report: ParityReport) -> dict:
    """A gate's report with its float values rounded (non-finite -> null)."""
    return {k: _num(v) if isinstance(v, float) else v for k, v in report.to_dict().items()}


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"spinefx": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def _num(value):
    if value is None:
        return None
    value = float(value)
    return round(value, 8) if np.isfinite(value) else None
