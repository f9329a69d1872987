"""Patient-level k-fold cross-validation of the paper's ResNet50, resumable and DDP-ready.

:func:`train_cv` is the engine behind ``spinefx train``. What it does, in order:

1. Reads the manifest (``--max-cases``: a seeded, label-stratified subset) and preprocesses every
   case once with :func:`spinefx.runtime.prepare_case`, cached as ``RUN/cache/inputs-*.npy``.
2. Splits cases into ``folds`` test folds (:mod:`.folds`: stratified by label, grouped by
   ``patient_id``, no patient in two folds), saved as ``RUN/splits.json``.
3. For each fold: the remaining cases are split again (stratified, grouped) into training and a
   small **validation** split (``val_fraction``). The model trains on the training split with
   anatomy-respecting augmentation (:mod:`.data`), a class-weighted BCE loss (``pos_weight`` =
   benign/malignant ratio of the training split), AdamW and a per-step cosine learning-rate
   schedule (:mod:`.loop`). After each epoch (:mod:`.fitting`) the BatchNorm statistics are
   recomputed on the training split ("precise BN": with few steps per epoch the running averages
   lag behind) and the model is scored on the validation split; the epoch with the lowest
   validation loss is kept (``best.safetensors``) and training stops early after ``patience``
   epochs without improvement. ``select="auto"`` (default) does this only when the validation
   split has >= 10 cases and >= 3 of each class; on smaller splits the validation loss is noise
   and the last epoch is kept instead (``select``: auto, loss, auc, last). The operating
   **threshold** is chosen on the validation split (Youden,
   :func:`spinefx.train.metrics.choose_threshold`), never on the test fold; the kept model then
   predicts the test fold once.
4. Pools the out-of-fold predictions (every case exactly once) into ``oof_predictions.csv`` and
   ``metrics.json`` (:mod:`.summary`), draws the figures and writes ``report.md``
   (:mod:`.report`).
5. Unless ``final=False``: trains the deployable model on all cases for the median number of
   epochs the folds kept, with the median fold threshold as its operating point, and saves it
   as ``RUN/config.json`` + ``RUN/model.safetensors`` (``SpineFxNet.save_pretrained``).

**Resume.** Every epoch ends with a checkpoint (:mod:`.checkpoint`). All randomness (initial
weights, shuffling, augmentation) is derived from ``(seed, fold, epoch, case)``, not from a
global generator, so ``resume=True`` continues a killed run from its last finished epoch and
reproduces the uninterrupted run. Finished folds (``metrics.json`` present) are not retrained.
Determinism and DDP (rank 0 decides and writes): :mod:`.distributed`. The run folder's record
(``run.json``) and the inputs cache: :mod:`.run_folder`.
"""
from __future__ import annotations

import statistics
from os import PathLike
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from spinefx.runtime.files import atomic_write_csv, atomic_write_json, read_json
from spinefx.runtime.provenance import manifest_provenance

from . import loop
from .data import Augment
from .distributed import distributed_processes, resolve_device, set_determinism
from .errors import TrainingError
from .fitting import (
    FINAL,
    SELECT_RULES,
    SimulatedKill,  # noqa: F401 (spinefx.train.cv.SimulatedKill, as before)
    TrainingRun,
    TrainSettings,
)
from .folds import inner_split, make_folds, save_splits
from .loop import train_one_epoch  # noqa: F401 (spinefx.train.cv.train_one_epoch, as before)
from .metrics import binary_metrics, choose_threshold
from .oof import TRAINING_OOF_COLUMNS
from .report import write_report
from .run_folder import check_run_folder, prepare_inputs
from .summary import fold_result, pooled_predictions, summarise

#: the most ROI variants per case (memory grows linearly: N x K x 6 x S x S float32)
MAX_ROI_VARIANTS = 16


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def train_cv(manifest: str | PathLike, out_dir: str | PathLike, folds: int = 10,
             epochs: int = 30, batch_size: int = 16, image_size: int = 224, lr: float = 1e-3,
             seed: int = 0, device: str = "auto", workers: int = 0,
             pretrained: str | None = None, resume: bool = False, final: bool = True,
             max_cases: int | None = None, progress: bool = True, *,
             weight_decay: float = 1e-4, val_fraction: float = 0.15, patience: int = 10,
             augment: bool | Augment = True, threshold_rule: str = "youden",
             precise_bn: bool = True, select: str = "auto",
             allow_download: bool = True, allow_outside: bool = False, roi_variants: int = 1,
             _interrupt_after: int | None = None) -> dict:
    """Cross-validate the paper's model on ``manifest`` and write the run folder ``out_dir``.

    Returns the content of ``metrics.json``. See the module docstring for the method and the
    files written. ``resume=True`` continues a run in ``out_dir`` (same settings required);
    otherwise ``out_dir`` must be missing or empty. ``pretrained``: see
    :func:`spinefx.train.model.load_pretrained` (``hf://`` sources download only then).
    ``allow_outside``: the manifest's series may lie outside its folder; ``run.json`` records
    it (:func:`spinefx.train.run_folder.manifest_permission`). ``roi_variants`` K > 1 trains on
    K inputs per case built at the manifest's ROI and K-1 drawn ROI variants (shifted, scaled,
    centre clicks: :class:`spinefx.train.data.RoiJitter`); validation and out-of-fold
    predictions use the manifest's ROI only. Memory: N x K x 6 x S x S float32.
    """
    manifest, out = Path(manifest).resolve(), Path(out_dir)
    aug = augment if isinstance(augment, Augment) else (Augment() if augment else None)
    settings = TrainSettings(
        folds=folds, epochs=epochs, batch_size=batch_size, image_size=image_size, lr=lr,
        weight_decay=weight_decay, seed=seed, val_fraction=val_fraction, patience=patience,
        threshold_rule=threshold_rule, precise_bn=precise_bn, select=select,
        augment=aug.to_dict() if aug else None,
        pretrained=str(pretrained) if pretrained else None, max_cases=max_cases, final=final,
        roi_variants=roi_variants)
    if select not in SELECT_RULES:
        raise TrainingError(f"select must be one of {', '.join(SELECT_RULES)}, got {select!r}")
    if not (isinstance(roi_variants, int) and 1 <= roi_variants <= MAX_ROI_VARIANTS):
        raise TrainingError(f"roi_variants must be an integer 1..{MAX_ROI_VARIANTS}, got "
                            f"{roi_variants!r}")
    if epochs < 1 or batch_size < 2 or image_size < 32:
        raise TrainingError("need --epochs >= 1, --batch-size >= 2 and --image-size >= 32")

    with distributed_processes(resolve_device(device)) as (dd, dev):
        check_run_folder(out, settings.to_dict(), manifest, resume)
        dd.barrier()
        set_determinism(dev)
        cases, arrays = prepare_inputs(out, manifest, settings.to_dict(), dd, dev, progress,
                                       allow_outside=allow_outside)
        run = TrainingRun(out, settings, cases, arrays, dev, dd, workers, progress,
                          _interrupt_after, allow_download)
        if folds == 1:
            metrics = _train_single(run, manifest)
            dd.barrier()
            return metrics if metrics is not None else {}
        fold_of = make_folds(run.y, run.groups, folds, seed)
        if dd.main:
            save_splits(out / "splits.json", cases, fold_of, folds, seed)
        fold_results = [_run_fold(run, k, fold_of)
                        for k in tqdm(range(1, folds + 1), desc="folds", unit="fold",
                                      disable=None if run.progress else True)]
        metrics = _finish(run, manifest, fold_results)
        dd.barrier()
        return metrics if metrics is not None else {}


def _finish(run: TrainingRun, manifest: Path, fold_results: list[dict]) -> dict | None:
    """Pooled predictions and metrics, the final model, ``metrics.json`` and the report
    (the metrics on rank 0, None elsewhere)."""
    metrics = None
    if run.dd.main:
        rows = pooled_predictions(fold_results, [c.case_id for c in run.cases])
        atomic_write_csv(run.out / "oof_predictions.csv", TRAINING_OOF_COLUMNS, rows)
        metrics = summarise(fold_results, rows, manifest=manifest, settings=run.s.to_dict(),
                            preprocess=run.preprocess.to_dict(), world_size=run.dd.world,
                            device=run.device.type)
    final_info = _train_final(run, fold_results) if run.s.final else None  # every rank trains
    if metrics is None:  # not rank 0
        return None
    if final_info is not None:
        metrics["final_model"] = final_info
    atomic_write_json(run.out / "metrics.json", metrics)
    write_report(run.out, manifest, metrics, run.log_rows())
    return metrics


# ---------------------------------------------------------------------------------------------
# per fold, final model
# ---------------------------------------------------------------------------------------------
def _run_fold(run: TrainingRun, k: int, fold_of: np.ndarray) -> dict:
    folder = run.out / "folds" / str(k)
    done = folder / "metrics.json"
    if done.is_file():
        return read_json(done)
    if run.dd.main:
        folder.mkdir(parents=True, exist_ok=True)
    run.dd.barrier()
    test_idx = np.flatnonzero(fold_of == k)
    rest = np.flatnonzero(fold_of != k)
    train_idx, val_idx = inner_split(rest, run.y, run.groups, run.s.val_fraction,
                                     seed=run.s.seed * 1000 + k)
    model, state = run.fit(folder, stream=k, train_idx=train_idx, val_idx=val_idx,
                           epochs=run.s.epochs, label=f"fold {k}/{run.s.folds}", log_fold=k)
    if run.dd.main:
        zv = loop.predict_logits(model, run.arrays, val_idx, run.device)
        zt = loop.predict_logits(model, run.arrays, test_idx, run.device)
        result = fold_result(k, [c.case_id for c in run.cases], run.labels,
                             state, run.s.threshold_rule, (train_idx, val_idx, test_idx),
                             (zv, zt))
        if run.pretrained_report:
            result["pretrained"] = run.pretrained_report
        atomic_write_csv(folder / "predictions.csv", (*TRAINING_OOF_COLUMNS, "logit"),
                         result["predictions"])
        atomic_write_json(done, result)  # written last: marks the fold as finished
    run.dd.barrier()
    if not run.dd.main:  # what rank 0 decided and wrote
        result = read_json(done)
    return result


def _train_single(run: TrainingRun, manifest: Path) -> dict | None:
    """``folds=1``: no cross-validation. One model on a patient-grouped training split, the
    epoch and the threshold chosen on the validation split, saved as the run's model. For
    pre-training on a large synthetic cohort, whose model another run then starts from
    (``--pretrained RUN``); its performance is measured on a different cohort, not here."""
    folder = run.out / FINAL
    if run.dd.main:
        folder.mkdir(parents=True, exist_ok=True)
    run.dd.barrier()
    train_idx, val_idx = inner_split(np.arange(len(run.cases)), run.y, run.groups,
                                     run.s.val_fraction, seed=run.s.seed * 1000)
    model, state = run.fit(folder, stream=0, train_idx=train_idx, val_idx=val_idx,
                           epochs=run.s.epochs, label="single split", log_fold=FINAL)
    if not run.dd.main:
        return None
    zv = loop.predict_logits(model, run.arrays, val_idx, run.device)
    ids = [c.case_id for c in run.cases]
    pv = 1.0 / (1.0 + np.exp(-zv))
    threshold = choose_threshold(run.y[val_idx], pv, rule=run.s.threshold_rule)
    model = model.cpu().eval()
    training = {**run.s.to_dict(), "threshold": threshold, "final_epochs": state["epoch"]}
    model.training_settings = training
    model.save_pretrained(run.out, config={
        "architecture": model.architecture, "in_channels": model.in_channels,
        "classes": list(model.classes), "preprocess": model.preprocess, "training": training})
    metrics = {
        "mode": "single split (no cross-validation)", "manifest": str(manifest),
        "synthetic": manifest_provenance(manifest).synthetic,
        "n_cases": len(ids), "n_malignant": int(run.y.sum()), "folds": 1,
        "n_train": len(train_idx), "n_val": len(val_idx),
        "threshold": threshold, "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"], "selection": state["select"],
        "validation": binary_metrics(run.y[val_idx], pv, threshold), "settings": run.s.to_dict(),
        "history": state["history"],
        "note": "validation metrics steer epoch and threshold choice: not a test result"}
    atomic_write_json(run.out / "metrics.json", metrics)
    return metrics


def _train_final(run: TrainingRun, fold_results: list[dict]) -> dict:
    """The deployable model: all cases, the median of the folds' kept epochs and thresholds."""
    folder = run.out / FINAL
    best = [r["best_epoch"] or r["epochs_run"] for r in fold_results]
    epochs = max(1, int(round(statistics.median(best))))
    threshold = float(statistics.median([r["threshold"] for r in fold_results]))
    if run.dd.main:
        folder.mkdir(parents=True, exist_ok=True)
    run.dd.barrier()
    all_idx = np.arange(len(run.cases))
    model, _ = run.fit(folder, stream=0, train_idx=all_idx, val_idx=None, epochs=epochs,
                       label="final model", log_fold=FINAL)
    info = {"epochs": epochs, "threshold": threshold, "n_cases": len(all_idx),
            "how": "trained on all cases for the median of the folds' kept epochs; threshold = "
                   "median of the folds' validation thresholds"}
    if run.dd.main:
        model = model.cpu().eval()
        training = {**run.s.to_dict(), "threshold": threshold, "final_epochs": epochs}
        model.training_settings = training
        model.save_pretrained(run.out, config={
            "architecture": model.architecture, "in_channels": model.in_channels,
            "classes": list(model.classes), "preprocess": model.preprocess,
            "training": training})
    run.dd.barrier()
    return info
