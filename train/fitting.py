"""Fitting one model (a fold's or the final one) epoch by epoch: the state machine behind
:func:`spinefx.train.cv.train_cv`.

:class:`TrainingRun` holds what the models of one run share (settings, cases and their
preprocessed inputs, device, processes); :meth:`TrainingRun.fit` trains a model on given cases.
Each epoch trains (:mod:`.loop`), recomputes the BatchNorm statistics on the training split
("precise BN"), scores the validation split, keeps the epoch's weights if they are the best so
far (``best.safetensors``) or counts it towards early stopping, and ends with a checkpoint and
the training log. A checkpoint in the model's folder continues the fit where it stopped; every
random draw is derived from ``(seed, stream, epoch, case)``, so the continued fit is the
uninterrupted one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from spinefx.runtime import LABELS, Case, PreprocessConfig
from spinefx.runtime.files import atomic_write_csv, atomic_write_json, read_json

from . import loop
from .checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from .data import Augment, CaseDataset, sample_generator
from .distributed import Dist
from .model import SpineFxNet, load_pretrained

LOG_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_auc", "lr", "time_s",
               "data_s", "compute_s", "images_per_s")
FINAL = "final"
CHECKPOINT, BEST = "checkpoint.safetensors", "best.safetensors"
SELECT_RULES = ("auto", "loss", "auc", "last")


class SimulatedKill(RuntimeError):
    """Raised by ``train_cv(_interrupt_after=n)``: a test's stand-in for a killed process."""


@dataclass
class TrainSettings:
    """Everything that decides a run's numbers (saved in ``RUN/run.json``; resume checks it)."""
    folds: int = 10
    epochs: int = 30
    batch_size: int = 16
    image_size: int = 224
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.15
    patience: int = 10
    threshold_rule: str = "youden"
    precise_bn: bool = True
    select: str = "auto"
    augment: dict | None = field(default_factory=lambda: Augment().to_dict())
    pretrained: str | None = None
    max_cases: int | None = None
    final: bool = True
    roi_variants: int = 1         # ROI variants per case (spinefx.train.data.RoiJitter); 1 = off

    def to_dict(self) -> dict:
        """The settings as recorded; ``roi_variants`` only when > 1, so a default run records
        (and resumes, and caches) exactly what runs recorded before the setting existed."""
        out = dict(self.__dict__)
        if out["roi_variants"] == 1:
            del out["roi_variants"]
        return out


@dataclass
class _FitJob:
    """One model being trained (a fold's or the final one) and what trains it."""
    folder: Path
    label: str
    log_fold: Any
    train_idx: np.ndarray
    val_idx: np.ndarray | None
    epochs: int
    model: SpineFxNet
    opt: torch.optim.Optimizer
    loss_fn: nn.Module
    pos_weight: float
    dataset: CaseDataset
    sampler: DistributedSampler[int]
    loader: DataLoader


class TrainingRun:
    """State shared by the folds of one ``train_cv`` call, and the per-epoch state machine
    (train, precise BN, validate, keep or count towards early stopping, checkpoint, log)."""

    def __init__(self, out: Path, settings: TrainSettings, cases: list[Case], arrays: np.ndarray,
                 device: torch.device, dd: Dist, workers: int, progress: bool,
                 interrupt_after: int | None, allow_download: bool):
        self.out, self.s, self.cases = out, settings, cases
        # training items come from every ROI variant (N, K, C, S, S); everything else — precise
        # BN, validation, test folds — sees variant 0, the manifest's ROI, as a K = 1 run does
        self.train_arrays = torch.from_numpy(arrays)
        self.arrays = self.train_arrays[:, 0] if arrays.ndim == 5 else self.train_arrays
        self.y = np.array([c.target for c in cases], dtype=np.int64)
        # the class names of self.y (Case.target has checked that every case is labelled)
        self.labels = [LABELS[c.target] for c in cases]
        self.groups = np.array([c.patient_id for c in cases])
        self.device, self.dd, self.workers = device, dd, workers
        self.progress = progress and dd.main
        self.interrupt_after = interrupt_after
        self.allow_download = allow_download
        self.epochs_done = 0
        self.preprocess = PreprocessConfig(image_size=settings.image_size)
        self.augment = Augment(**settings.augment) if settings.augment else None
        self.pretrained_report: dict | None = None

    # -- model -------------------------------------------------------------------------------
    def new_model(self, stream: int) -> SpineFxNet:
        torch.manual_seed(int(sample_generator(self.s.seed, stream, 0xC0FFEE).initial_seed()))
        model = SpineFxNet(in_channels=self.preprocess.n_channels,
                           preprocess=self.preprocess.to_dict(), training=self.s.to_dict())
        if self.s.pretrained:
            self.pretrained_report = load_pretrained(model, self.s.pretrained,
                                                     allow_download=self.allow_download)
        return model.to(self.device)

    def _tick(self) -> None:
        self.epochs_done += 1
        if self.interrupt_after is not None and self.epochs_done >= self.interrupt_after:
            raise SimulatedKill(f"simulated kill after {self.epochs_done} epoch(s)")

    # -- training loop shared by folds and the final model ------------------------------------
    def _prepare(self, folder: Path, stream: int, train_idx: np.ndarray,
                 val_idx: np.ndarray | None, epochs: int, label: str, log_fold: Any) -> _FitJob:
        s, dd = self.s, self.dd
        model = self.new_model(stream)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        n_pos = int(self.y[train_idx].sum())
        pos_weight = (len(train_idx) - n_pos) / max(n_pos, 1)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=self.device))
        ds = CaseDataset(self.train_arrays, self.y, train_idx, self.augment, seed=s.seed,
                         stream=stream)
        drop_last = len(ds) // dd.world > s.batch_size  # never a 1-sample batch through BatchNorm
        sampler_seed = int(sample_generator(s.seed, stream, 7).initial_seed() % 2**31)
        sampler: DistributedSampler[int] = DistributedSampler(
            ds, num_replicas=dd.world, rank=dd.rank, shuffle=True, seed=sampler_seed)
        loader = DataLoader(ds, batch_size=s.batch_size, sampler=sampler, drop_last=drop_last,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        return _FitJob(folder, label, log_fold, train_idx, val_idx, epochs, model, opt, loss_fn,
                       pos_weight, ds, sampler, loader)

    def fit(self, folder: Path, stream: int, train_idx: np.ndarray, val_idx: np.ndarray | None,
            epochs: int, label: str, log_fold: Any) -> tuple[SpineFxNet, dict]:
        """Train with checkpoints in ``folder``; return the kept model and the final state."""
        job = self._prepare(folder, stream, train_idx, val_idx, epochs, label, log_fold)
        ckpt = folder / CHECKPOINT
        if ckpt.is_file():
            state = load_checkpoint(ckpt, job.model, job.opt)
        else:
            y_val = None if val_idx is None else self.y[val_idx]
            state = {"epoch": 0, "best_epoch": None, "best_val_loss": None, "stale": 0,
                     "stopped": False, "history": [], "pos_weight": job.pos_weight,
                     "select": loop.selection_rule(self.s.select, y_val)}
        self.dd.barrier()
        net: nn.Module = job.model
        if self.dd.active:
            net = DistributedDataParallel(job.model, device_ids=[self.device.index]
                                          if self.device.type == "cuda" else None)
        bar = tqdm(total=epochs, initial=state["epoch"], desc=label, unit="epoch",
                   disable=None if self.progress else True, leave=False)
        while state["epoch"] < epochs and not state["stopped"]:
            row = self._epoch(job, net, state)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                            **({"val_auc": f"{row['val_auc']:.2f}"} if row["val_auc"]
                               is not None else {}))
            self._tick()
        bar.close()
        if val_idx is not None and (folder / BEST).is_file():
            load_weights(folder / BEST, job.model)
        return job.model, state

    def _epoch(self, job: _FitJob, net: nn.Module, state: dict) -> dict:
        """One epoch of the state machine; updates ``state`` and returns the log row."""
        s, dd = self.s, self.dd
        epoch = state["epoch"]
        t0 = time.perf_counter()
        job.sampler.set_epoch(epoch)
        job.dataset.set_epoch(epoch)
        stats = loop.train_one_epoch(net, job.loader, job.opt, job.loss_fn, self.device,
                                     base_lr=s.lr, first_step=epoch * len(job.loader),
                                     total_steps=len(job.loader) * job.epochs,
                                     progress=self.progress,
                                     desc=f"{job.label} epoch {epoch + 1}")
        loss_sum, n = dd.all_sum([stats["loss_sum"], float(stats["n"])])
        row = {"fold": job.log_fold, "epoch": epoch + 1, "train_loss": loss_sum / max(n, 1),
               "val_loss": None, "val_auc": None, "lr": stats["lr"]}
        if s.precise_bn and dd.main:
            loop.recompute_batchnorm(job.model, self.arrays, job.train_idx, self.device,
                                     s.batch_size)
        better = (self._validate(job, job.val_idx, state, row) if job.val_idx is not None
                  else True)
        if better:
            state.update(best_epoch=epoch + 1, best_val_loss=row["val_loss"],
                         best_val_auc=row["val_auc"], stale=0)
            if dd.main:
                save_weights(job.folder / BEST, job.model)
        else:
            state["stale"] += 1
            if s.patience and state["stale"] >= s.patience and state["select"] != "last":
                state["stopped"] = True
        busy = stats["data_s"] + stats["compute_s"]
        row.update(time_s=time.perf_counter() - t0, data_s=stats["data_s"],
                   compute_s=stats["compute_s"],
                   images_per_s=stats["n"] * dd.world / max(busy, 1e-9))
        state["epoch"] = epoch + 1
        state["history"].append(row)
        if dd.main:
            save_checkpoint(job.folder / CHECKPOINT, job.model, job.opt, state)
            self.write_log()
        dd.barrier()
        return row

    def _validate(self, job: _FitJob, val_idx: np.ndarray, state: dict, row: dict) -> bool:
        """Rank 0 scores the validation split ``val_idx`` (loss, AUC into ``row``) and decides
        whether the model improved; every rank gets its numbers and decision."""
        decision = [0.0, 0.0, 0.0]
        if self.dd.main:
            z = loop.predict_logits(job.model, self.arrays, val_idx, self.device)
            yv = self.y[val_idx]
            row["val_loss"] = loop.weighted_bce(z, yv, job.pos_weight)
            row["val_auc"] = loop.auc_or_none(yv, loop.sigmoid(z))
            decision = [row["val_loss"], float("nan") if row["val_auc"] is None
                        else row["val_auc"], float(loop.is_better_epoch(state, row))]
        decision = self.dd.broadcast(decision)
        row["val_loss"] = decision[0]
        row["val_auc"] = None if math.isnan(decision[1]) else decision[1]
        return bool(decision[2])

    # -- logs -------------------------------------------------------------------------------
    def write_log(self) -> None:
        rows = []
        for folder in self.fold_dirs():
            f = folder / "state.json"
            if f.is_file():
                rows += read_json(f)["history"]
        atomic_write_csv(self.out / "training_log.csv", LOG_COLUMNS, rows)
        atomic_write_json(self.out / "training_log.json", rows)

    def fold_dirs(self) -> list[Path]:
        dirs = [self.out / "folds" / str(k) for k in range(1, self.s.folds + 1)]
        return dirs + [self.out / FINAL]

    def log_rows(self) -> list[dict]:
        return read_json(self.out / "training_log.json", required=False) or []
