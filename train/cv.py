"""Patient-level k-fold cross-validation of the paper's ResNet50, resumable and DDP-ready.

:func:`train_cv` is the engine behind ``spinefx train``. What it does, in order:

1. Reads the manifest (``--max-cases``: a seeded, label-stratified subset) and preprocesses every
   case once with :func:`spinefx.runtime.prepare_case`, cached as ``RUN/cache/inputs-*.npy``.
2. Splits cases into ``folds`` test folds with ``StratifiedGroupKFold`` (stratified by label,
   grouped by ``patient_id``: no patient is in two folds), saved as ``RUN/splits.json``.
3. For each fold: the remaining cases are split again (stratified, grouped) into training and a
   small **validation** split (``val_fraction``). The model trains on the training split with
   anatomy-respecting augmentation (:mod:`.data`), a class-weighted BCE loss (``pos_weight`` =
   benign/malignant ratio of the training split), AdamW and a per-step cosine learning-rate
   schedule. After each epoch the BatchNorm statistics are recomputed on the training split
   ("precise BN", :func:`recompute_batchnorm`: with few steps per epoch the running averages
   lag behind) and the model is scored on the validation split; the epoch with the lowest
   validation loss is kept (``best.safetensors``) and training stops early after ``patience``
   epochs without improvement. ``select="auto"`` (default) does this only when the validation
   split has >= 10 cases and >= 3 of each class; on smaller splits the validation loss is noise
   and the last epoch is kept instead (``select``: auto, loss, auc, last). The operating **threshold** is chosen on the validation split
   (Youden, :func:`spinefx.train.metrics.choose_threshold`), never on the test fold; the kept
   model then predicts the test fold once.
4. Pools the out-of-fold predictions (every case exactly once) into ``oof_predictions.csv`` and
   ``metrics.json`` (CIs from :mod:`spinefx.train.metrics`), draws the report's figures
   (:mod:`spinefx.train.plots`) and writes ``report.md``.
5. Unless ``final=False``: trains the deployable model on all cases for the median number of
   epochs the folds kept, with the median fold threshold as its operating point, and saves it
   as ``RUN/config.json`` + ``RUN/model.safetensors`` (``SpineFxNet.save_pretrained``).

**Checkpoints and resume.** After every epoch ``folds/<k>/checkpoint.safetensors`` is replaced
atomically; it holds the model, the optimizer's tensors and (in the safetensors metadata, as
JSON) the epoch, the best-so-far record, early-stopping state and the log rows. ``state.json``
beside it is a readable copy. All randomness (initial weights, shuffling, augmentation) is
derived from ``(seed, fold, epoch, case)``, not from a global generator, so ``resume=True``
continues a killed run from its last finished epoch and reproduces the uninterrupted run.
Finished folds (``metrics.json`` present) are not retrained.

**Determinism.** On CPU the run is bitwise reproducible for a given seed, torch version and
thread count (``torch.use_deterministic_algorithms(True)``). On GPU, cuDNN is put in
deterministic mode (``cudnn.deterministic``, no benchmark, ``CUBLAS_WORKSPACE_CONFIG``), but
``use_deterministic_algorithms`` only warns: the backward of adaptive average pooling (ResNet's
GAP) uses atomic adds on CUDA and has no deterministic kernel, and NCCL all-reduce order under
DDP adds floating-point noise, so GPU runs agree only approximately. Results also differ between
single-process and DDP runs (different batch composition per step).

**DDP.** Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) every process trains on its
share of each epoch (``DistributedSampler``) in a ``DistributedDataParallel`` model (backend
``gloo`` on CPU, ``nccl`` on GPU). Rank 0 alone scores validation data, predicts the test fold,
writes every file and broadcasts its decisions (improved? stop?) to the others.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from spinefx.runtime import Case, PreprocessConfig, read_manifest
from spinefx.runtime.errors import SpineFXError

from .data import Augment, CaseDataset, preprocess_cases, sample_generator
from .model import SpineFxNet, load_pretrained

LOG_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_auc", "lr", "time_s",
               "data_s", "compute_s", "images_per_s")
OOF_COLUMNS = ("case_id", "fold", "label", "probability", "threshold")
FINAL = "final"
SELECT_RULES = ("auto", "loss", "auc", "last")
# "auto" selects on validation loss only when the validation split can rank models at all
MIN_VAL_CASES, MIN_VAL_PER_CLASS = 10, 3


class TrainingError(SpineFXError):
    """A training run cannot start or continue (bad split sizes, resume mismatch...)."""


class SimulatedKill(RuntimeError):
    """Raised by ``train_cv(_interrupt_after=n)``: a test's stand-in for a killed process."""


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)
# ---------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.broadcast(t, src=0)
        return t.cpu().tolist()

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is available to torch here")
    if device not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def _setup_distributed(device: torch.device) -> tuple[Dist, torch.device, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device, False
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:  # share the cores between the processes on this machine
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return Dist(rank, world, local), device, created


def set_determinism(device: torch.device) -> None:
    """Bitwise-reproducible kernels on CPU; as reproducible as CUDA allows on GPU."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o)}")


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    tmp.replace(path)


def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {name} is not a tensor")
            tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                            groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    state: dict) -> None:
    """Model + optimizer tensors + JSON state in one safetensors file, replaced atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, groups = _optimizer_to_tensors(opt)
    tensors.update(opt_tensors)
    meta = {"state": json.dumps(state, default=_json_default),
            "param_groups": json.dumps(groups, default=_json_default), "format": "spinefx-ckpt-1"}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    _write_json(path.with_name("state.json"), state)


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "spinefx-ckpt-1":
        raise TrainingError("not a spinefx training checkpoint", path)
    tensors = load_file(str(path), device="cpu")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _optimizer_from_tensors(opt, tensors, json.loads(meta["param_groups"]))
    return json.loads(meta["state"])


def _save_weights(path: Path, model: nn.Module) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def _groups_per_class(y: np.ndarray, groups: np.ndarray) -> tuple[int, int]:
    pos = len(set(groups[y == 1].tolist()))
    neg = len(set(groups[y == 0].tolist()))
    return neg, pos


def make_folds(y: Sequence[int], groups: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Test-fold number (1..folds) of every case: stratified by label, grouped by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = np.asarray(y), np.asarray(groups)
    neg, pos = _groups_per_class(y, groups)
    if folds < 2:
        raise TrainingError(f"--folds must be at least 2, got {folds}")
    if min(neg, pos) < folds:
        raise TrainingError(f"{folds} folds need at least {folds} patients of each class; "
                            f"this cohort has {pos} malignant and {neg} benign")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = np.zeros(len(y), dtype=int)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups), start=1):
        out[test] = k
    return out


def inner_split(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, val_fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices out of ``idx``: stratified by label, grouped by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    neg, pos = _groups_per_class(y[idx], groups[idx])
    if min(neg, pos) < 2:
        raise TrainingError(f"a training fold has {pos} malignant and {neg} benign patients: "
                            "too few for a validation split; use fewer folds or more cases")
    n_splits = max(2, min(round(1 / max(val_fraction, 1e-3)), neg, pos))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(idx)), y[idx], groups[idx]))
    return idx[train], idx[val]


def _subset(cases: list[Case], max_cases: int | None, seed: int) -> list[Case]:
    if not max_cases or max_cases >= len(cases):
        return cases
    from sklearn.model_selection import train_test_split

    y = [c.target for c in cases]
    keep, _ = train_test_split(np.arange(len(cases)), train_size=max_cases, stratify=y,
                               random_state=seed)
    return [cases[i] for i in sorted(keep.tolist())]


# ---------------------------------------------------------------------------------------------
# one epoch / prediction
# ---------------------------------------------------------------------------------------------
def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from ``base_lr`` to 0 over ``total_steps`` (a function of the step alone,
    so a resumed run needs no scheduler state)."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def train_one_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, *, base_lr: float,
                    first_step: int, total_steps: int, progress: bool = False,
                    desc: str = "") -> dict:
    """One pass over ``loader``; returns loss sum, sample count and where the time went."""
    model.train()
    loss_sum, n, data_s, compute_s = 0.0, 0, 0.0, 0.0
    step = first_step
    t = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
    for x, y, _ in bar:
        t_data = time.perf_counter()
        data_s += t_data - t
        lr = cosine_lr(base_lr, step, total_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(y)
        n += len(y)
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        compute_s += t - t_data
        bar.set_postfix(loss=f"{loss_sum / n:.4f}")
    return {"loss_sum": loss_sum, "n": n, "data_s": data_s, "compute_s": compute_s,
            "steps": step - first_step, "lr": cosine_lr(base_lr, step - 1, total_steps)}


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, arrays: torch.Tensor, indices: Sequence[int],
                        device: torch.device, batch_size: int) -> None:
    """Replace BatchNorm running statistics by their average over ``arrays[indices]``.

    "Precise BN": with few optimisation steps per epoch (small cohorts), the exponential
    running averages lag far behind the weights and eval-mode predictions collapse towards a
    constant; a forward pass over the (unaugmented) training split in train mode with
    cumulative averaging fixes the statistics the model is evaluated and saved with.
    """
    net = model.module if isinstance(model, DistributedDataParallel) else model
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(indices) < 2:
        return
    momenta = [m.momentum for m in bns]
    was_training = net.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    net.train()
    idx = list(indices)
    for i in range(0, len(idx), batch_size):
        chunk = idx[i:i + batch_size]
        if len(chunk) < 2:  # BatchNorm needs two samples; the last single case is left out
            break
        net(arrays[chunk].to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    net.train(was_training)


@torch.no_grad()
def predict_logits(model: nn.Module, arrays: torch.Tensor, indices: Sequence[int],
                   device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Malignancy logits of ``arrays[indices]`` (no augmentation, eval mode)."""
    net = model.module if isinstance(model, DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    out = []
    idx = list(indices)
    for i in range(0, len(idx), batch_size):
        x = arrays[idx[i:i + batch_size]].to(device)
        out.append(net(x).float().cpu())
    net.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _bce(logits: np.ndarray, y: np.ndarray, pos_weight: float) -> float:
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # weighted BCE as torch computes it: pos_weight * y * softplus(-z) + (1 - y) * softplus(z)
    return float(np.mean(pos_weight * y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    if len(set(np.asarray(y).tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, p))


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
class _Run:
    """State shared by the folds of one :func:`train_cv` call."""

    def __init__(self, out: Path, settings: TrainSettings, cases: list[Case], arrays: np.ndarray,
                 device: torch.device, dd: Dist, workers: int, progress: bool,
                 interrupt_after: int | None, allow_download: bool):
        self.out, self.s, self.cases = out, settings, cases
        self.arrays = torch.from_numpy(arrays)
        self.y = np.array([c.target for c in cases], dtype=np.int64)
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

    def selection_rule(self, val_idx: np.ndarray | None) -> str:
        """``select``, with "auto" resolved: "loss" if the validation split has at least
        MIN_VAL_CASES cases and MIN_VAL_PER_CLASS of each class, else "last" (on a handful of
        cases the validation loss is noise: selecting on it keeps a random, usually early,
        epoch)."""
        if self.s.select != "auto":
            return self.s.select
        if val_idx is None:
            return "last"
        yv = self.y[val_idx]
        small = len(yv) < MIN_VAL_CASES or min(int(yv.sum()), int(len(yv) - yv.sum())) \
            < MIN_VAL_PER_CLASS
        return "last" if small else "loss"

    def improved(self, state: dict, row: dict) -> bool:
        """Is this epoch's model better than the kept one (rule: loss, auc or last)?"""
        rule = state.get("select", "loss")
        if state["best_epoch"] is None or rule == "last":
            return True
        if rule == "auc":
            best, now = state.get("best_val_auc"), row["val_auc"]
            if now is not None and (best is None or now > best):
                return True
            if now != best:
                return False
        return row["val_loss"] < state["best_val_loss"]

    def _tick(self) -> None:
        self.epochs_done += 1
        if self.interrupt_after is not None and self.epochs_done >= self.interrupt_after:
            raise SimulatedKill(f"simulated kill after {self.epochs_done} epoch(s)")

    # -- training loop shared by folds and the final model ------------------------------------
    def fit(self, folder: Path, stream: int, train_idx: np.ndarray, val_idx: np.ndarray | None,
            epochs: int, label: str, log_fold: Any) -> tuple[SpineFxNet, dict]:
        """Train with checkpoints in ``folder``; return the kept model and the final state."""
        s, dd = self.s, self.dd
        model = self.new_model(stream)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        n_pos = int(self.y[train_idx].sum())
        pos_weight = (len(train_idx) - n_pos) / max(n_pos, 1)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=self.device))
        ds = CaseDataset(self.arrays, self.y, train_idx, self.augment, seed=s.seed,
                         stream=stream)
        per_rank = len(ds) // dd.world
        drop_last = per_rank > s.batch_size  # never a 1-sample batch through BatchNorm
        sampler = DistributedSampler(ds, num_replicas=dd.world, rank=dd.rank, shuffle=True,
                                     seed=int(sample_generator(s.seed, stream, 7).initial_seed()
                                              % 2**31))
        loader = DataLoader(ds, batch_size=s.batch_size, sampler=sampler, drop_last=drop_last,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        steps_per_epoch = len(loader)
        total = steps_per_epoch * epochs

        ckpt = folder / "checkpoint.safetensors"
        state = {"epoch": 0, "best_epoch": None, "best_val_loss": None, "stale": 0,
                 "stopped": False, "history": [], "pos_weight": pos_weight,
                 "select": self.selection_rule(val_idx)}
        if ckpt.is_file():
            state = load_checkpoint(ckpt, model, opt)
        dd.barrier()
        net = model
        if dd.active:
            net = DistributedDataParallel(model, device_ids=[self.device.index]
                                          if self.device.type == "cuda" else None)

        bar = tqdm(total=epochs, initial=state["epoch"], desc=label, unit="epoch",
                   disable=not self.progress, leave=False)
        while state["epoch"] < epochs and not state["stopped"]:
            epoch = state["epoch"]
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            stats = train_one_epoch(net, loader, opt, loss_fn, self.device, base_lr=s.lr,
                                    first_step=epoch * steps_per_epoch, total_steps=total,
                                    progress=self.progress, desc=f"{label} epoch {epoch + 1}")
            loss_sum, n = dd.all_sum([stats["loss_sum"], float(stats["n"])])
            row = {"fold": log_fold, "epoch": epoch + 1, "train_loss": loss_sum / max(n, 1),
                   "val_loss": None, "val_auc": None, "lr": stats["lr"]}
            if s.precise_bn and dd.main:
                recompute_batchnorm(model, self.arrays, train_idx, self.device, s.batch_size)
            improved = True
            if val_idx is not None:
                decision = [0.0, 0.0, 0.0]
                if dd.main:
                    z = predict_logits(model, self.arrays, val_idx, self.device)
                    yv = self.y[val_idx]
                    row["val_loss"] = _bce(z, yv, pos_weight)
                    row["val_auc"] = _auc(yv, _sigmoid(z))
                    decision = [row["val_loss"], float("nan") if row["val_auc"] is None
                                else row["val_auc"], float(self.improved(state, row))]
                decision = dd.broadcast(decision)
                row["val_loss"] = decision[0]
                row["val_auc"] = None if math.isnan(decision[1]) else decision[1]
                improved = bool(decision[2])
            if improved:
                state.update(best_epoch=epoch + 1, best_val_loss=row["val_loss"],
                             best_val_auc=row["val_auc"], stale=0)
                if dd.main:
                    _save_weights(folder / "best.safetensors", model)
            else:
                state["stale"] += 1
                if s.patience and state["stale"] >= s.patience and state["select"] != "last":
                    state["stopped"] = True
            elapsed = time.perf_counter() - t0
            row.update(time_s=elapsed, data_s=stats["data_s"], compute_s=stats["compute_s"],
                       images_per_s=stats["n"] * dd.world / max(stats["data_s"]
                                                                + stats["compute_s"], 1e-9))
            state["epoch"] = epoch + 1
            state["history"].append(row)
            if dd.main:
                save_checkpoint(ckpt, model, opt, state)
                self.write_log()
            dd.barrier()
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                            **({"val_auc": f"{row['val_auc']:.2f}"} if row["val_auc"]
                               is not None else {}))
            self._tick()
        bar.close()
        if val_idx is not None and (folder / "best.safetensors").is_file():
            model.load_state_dict(load_file(str(folder / "best.safetensors"), device="cpu"))
        return model, state

    # -- logs -------------------------------------------------------------------------------
    def write_log(self) -> None:
        rows = []
        for folder in self.fold_dirs():
            f = folder / "state.json"
            if f.is_file():
                rows += json.loads(f.read_text())["history"]
        _write_csv(self.out / "training_log.csv", LOG_COLUMNS, rows)
        _write_json(self.out / "training_log.json", rows)

    def fold_dirs(self) -> list[Path]:
        dirs = [self.out / "folds" / str(k) for k in range(1, self.s.folds + 1)]
        return dirs + [self.out / FINAL]

    def log_rows(self) -> list[dict]:
        f = self.out / "training_log.json"
        return json.loads(f.read_text()) if f.is_file() else []


def _settings_check(out: Path, settings: TrainSettings, manifest: Path) -> None:
    saved = json.loads((out / "run.json").read_text())
    now = {"settings": settings.to_dict(), "manifest": str(manifest)}
    diffs = [k for k in now["settings"] if saved["settings"].get(k) != now["settings"][k]]
    if diffs or saved.get("manifest") != now["manifest"]:
        what = ", ".join(diffs) or "manifest"
        raise TrainingError(f"cannot resume: this run was started with other settings ({what}); "
                            "use the original options or a new --out folder", out)


def _synthetic(manifest: Path) -> bool:
    f = manifest.parent / "cohort.json"
    try:
        return bool(json.loads(f.read_text()).get("synthetic"))
    except (OSError, ValueError, AttributeError):
        return False


def train_cv(manifest: str | PathLike, out_dir: str | PathLike, folds: int = 10,
             epochs: int = 30, batch_size: int = 16, image_size: int = 224, lr: float = 1e-3,
             seed: int = 0, device: str = "auto", workers: int = 0,
             pretrained: str | None = None, resume: bool = False, final: bool = True,
             max_cases: int | None = None, progress: bool = True, *,
             weight_decay: float = 1e-4, val_fraction: float = 0.15, patience: int = 10,
             augment: bool | Augment = True, threshold_rule: str = "youden",
             precise_bn: bool = True, select: str = "auto",
             allow_download: bool = True, _interrupt_after: int | None = None) -> dict:
    """Cross-validate the paper's model on ``manifest`` and write the run folder ``out_dir``.

    Returns the content of ``metrics.json``. See the module docstring for the method and the
    files written. ``resume=True`` continues a run in ``out_dir`` (same settings required);
    otherwise ``out_dir`` must be missing or empty. ``pretrained``: see
    :func:`spinefx.train.model.load_pretrained` (``hf://`` sources download only then).
    """
    manifest, out = Path(manifest).resolve(), Path(out_dir)
    aug = augment if isinstance(augment, Augment) else (Augment() if augment else None)
    settings = TrainSettings(
        folds=folds, epochs=epochs, batch_size=batch_size, image_size=image_size, lr=lr,
        weight_decay=weight_decay, seed=seed, val_fraction=val_fraction, patience=patience,
        threshold_rule=threshold_rule, precise_bn=precise_bn, select=select, augment=aug.to_dict() if aug else None,
        pretrained=str(pretrained) if pretrained else None, max_cases=max_cases, final=final)
    if select not in SELECT_RULES:
        raise TrainingError(f"select must be one of {', '.join(SELECT_RULES)}, got {select!r}")
    if epochs < 1 or batch_size < 2 or image_size < 32:
        raise TrainingError("need --epochs >= 1, --batch-size >= 2 and --image-size >= 32")

    dev = resolve_device(device)
    dd, dev, created_pg = _setup_distributed(dev)
    try:
        existing = out.is_dir() and any(out.iterdir())
        if existing and not resume:
            raise FileExistsError(f"{out} is not empty: choose a new --out folder, or --resume "
                                  "to continue the run there")
        if resume and existing and not (out / "run.json").is_file():
            raise TrainingError("cannot resume: no run.json here (not a spinefx run folder)", out)
        if resume and existing:
            _settings_check(out, settings, manifest)
        dd.barrier()
        set_determinism(dev)

        cases = _subset(read_manifest(manifest), max_cases, seed)
        if any(c.label is None for c in cases):
            raise TrainingError("every case needs a label to train", manifest)
        preprocess = PreprocessConfig(image_size=image_size)
        if dd.main:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "run.json").is_file():
                _write_json(out / "run.json", {"settings": settings.to_dict(),
                                               "manifest": str(manifest),
                                               "preprocess": preprocess.to_dict(),
                                               "world_size": dd.world, "device": dev.type})
            arrays = preprocess_cases(cases, preprocess, out / "cache", progress=progress)
        dd.barrier()
        if not dd.main:
            arrays = preprocess_cases(cases, preprocess, out / "cache", progress=False)

        run = _Run(out, settings, cases, arrays, dev, dd, workers, progress, _interrupt_after,
                   allow_download)
        fold_of = make_folds(run.y, run.groups, folds, seed)
        if dd.main:
            splits = {"folds": folds, "seed": seed,
                      "cases": [{"case_id": c.case_id, "patient_id": c.patient_id,
                                 "label": c.label, "fold": int(k)}
                                for c, k in zip(cases, fold_of)]}
            if (out / "splits.json").is_file():
                if json.loads((out / "splits.json").read_text())["cases"] != splits["cases"]:
                    raise TrainingError("cannot resume: the folds differ from the saved ones "
                                        "(manifest changed?)", out / "splits.json")
            else:
                _write_json(out / "splits.json", splits)

        fold_results = []
        fold_bar = tqdm(range(1, folds + 1), desc="folds", unit="fold",
                        disable=not run.progress)
        for k in fold_bar:
            fold_results.append(_run_fold(run, k, fold_of))
        fold_bar.close()

        metrics = None
        if dd.main:
            metrics = _summarise(run, manifest, fold_results)
        final_info = None
        if final:
            final_info = _train_final(run, fold_results)
        if dd.main:
            if final_info:
                metrics["final_model"] = final_info
            _write_json(out / "metrics.json", metrics)
            _write_report(run, manifest, metrics)
        dd.barrier()
        return metrics if dd.main else {}
    finally:
        if created_pg and dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# per fold
# ---------------------------------------------------------------------------------------------
def _run_fold(run: _Run, k: int, fold_of: np.ndarray) -> dict:
    folder = run.out / "folds" / str(k)
    done = folder / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    if run.dd.main:
        folder.mkdir(parents=True, exist_ok=True)
    run.dd.barrier()
    test_idx = np.flatnonzero(fold_of == k)
    rest = np.flatnonzero(fold_of != k)
    train_idx, val_idx = inner_split(rest, run.y, run.groups, run.s.val_fraction,
                                     seed=run.s.seed * 1000 + k)
    model, state = run.fit(folder, stream=k, train_idx=train_idx, val_idx=val_idx,
                           epochs=run.s.epochs, label=f"fold {k}/{run.s.folds}", log_fold=k)
    result = {}
    if run.dd.main:
        from .metrics import binary_metrics, choose_threshold

        zv = predict_logits(model, run.arrays, val_idx, run.device)
        zt = predict_logits(model, run.arrays, test_idx, run.device)
        yv, yt = run.y[val_idx], run.y[test_idx]
        threshold = choose_threshold(yv, _sigmoid(zv), rule=run.s.threshold_rule)
        pt = _sigmoid(zt)
        preds = [{"case_id": run.cases[i].case_id, "fold": k, "label": run.cases[i].label,
                  "probability": float(p), "threshold": threshold, "logit": float(z)}
                 for i, p, z in zip(test_idx, pt, zt)]
        val_preds = [{"case_id": run.cases[i].case_id, "label": run.cases[i].label,
                      "probability": float(p), "logit": float(z)}
                     for i, p, z in zip(val_idx, _sigmoid(zv), zv)]
        result = {
            "fold": k, "threshold": threshold, "threshold_rule": run.s.threshold_rule,
            "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
            "selection": state["select"],
            "stopped_early": state["stopped"],
            "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx),
            "train_cases": [run.cases[i].case_id for i in train_idx],
            "val_cases": [run.cases[i].case_id for i in val_idx],
            "validation": binary_metrics(yv, _sigmoid(zv), threshold),
            "test": binary_metrics(yt, pt, threshold),
            "predictions": preds, "val_predictions": val_preds,
        }
        if run.pretrained_report:
            result["pretrained"] = run.pretrained_report
        _write_csv(folder / "predictions.csv", OOF_COLUMNS + ("logit",), preds)
        _write_json(done, result)  # written last: marks the fold as finished
    run.dd.barrier()
    if not run.dd.main:
        result = json.loads(done.read_text())
    return result


# ---------------------------------------------------------------------------------------------
# pooled metrics, final model, report
# ---------------------------------------------------------------------------------------------
def _summarise(run: _Run, manifest: Path, fold_results: list[dict]) -> dict:
    from .metrics import (FOLD_METRICS, binary_metrics, call_metrics, fit_temperature,
                          metric_values, temperature_report)

    rows = sorted((p for r in fold_results for p in r["predictions"]),
                  key=lambda p: [c.case_id for c in run.cases].index(p["case_id"]))
    _write_csv(run.out / "oof_predictions.csv", OOF_COLUMNS, rows)
    y = np.array([1 if r["label"] == "malignant" else 0 for r in rows])
    p = np.array([r["probability"] for r in rows])
    calls = np.array([int(r["probability"] >= r["threshold"]) for r in rows])
    thresholds = [r["threshold"] for r in fold_results]
    operating = float(statistics.median(thresholds))

    pooled = binary_metrics(y, p, operating)
    per_fold_calls = call_metrics(y, calls)
    pooled_own = {**pooled, **per_fold_calls, "threshold": None}

    per_fold = [{"fold": r["fold"], "threshold": r["threshold"], "best_epoch": r["best_epoch"],
                 "selection": r.get("selection"),
                 "n": r["test"]["n"], "n_malignant": r["test"]["n_malignant"],
                 **metric_values(r["test"])} for r in fold_results]
    summary = {}
    for key in FOLD_METRICS:
        vals = [f[key] for f in per_fold if f.get(key) is not None]
        summary[key] = {"mean": float(np.mean(vals)) if vals else None,
                        "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                        "n_folds": len(vals)}

    calibration = None
    try:  # temperature fitted on the pooled validation logits, applied to the OOF logits
        zv = np.array([v["logit"] for r in fold_results for v in r["val_predictions"]])
        yv = np.array([1 if v["label"] == "malignant" else 0
                       for r in fold_results for v in r["val_predictions"]])
        zt = np.array([r["logit"] for r in rows_with_logits(fold_results, rows)])
        temperature = fit_temperature(zv, yv)
        calibration = {"method": "temperature scaling fitted on the folds' validation splits",
                       "out_of_fold": temperature_report(zt, y, temperature)}
    except (ValueError, KeyError):
        pass

    return {
        "synthetic": _synthetic(manifest), "manifest": str(manifest),
        "n_cases": int(len(y)), "n_malignant": int(y.sum()), "folds": run.s.folds,
        "positive_class": "malignant",
        "threshold": operating,
        "threshold_rule": (f"{run.s.threshold_rule} on each training fold's validation split; "
                           "operating threshold = median over folds"),
        "fold_thresholds": thresholds,
        "pooled": pooled_own,
        "pooled_at_operating_threshold": pooled,
        "per_fold": per_fold, "per_fold_summary": summary,
        "calibration": calibration,
        "settings": run.s.to_dict(),
        "preprocess": run.preprocess.to_dict(),
        "world_size": run.dd.world, "device": run.device.type,
        "torch": torch.__version__,
    }


def rows_with_logits(fold_results: list[dict], rows: list[dict]) -> list[dict]:
    by_id = {p["case_id"]: p for r in fold_results for p in r["predictions"]}
    return [by_id[r["case_id"]] for r in rows]


def _train_final(run: _Run, fold_results: list[dict]) -> dict:
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


def _fmt_ci(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    v = m["value"]
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        return f"{v:.3f} ({m['ci_low']:.3f}-{m['ci_high']:.3f})"
    return f"{v:.3f}"


def _write_report(run: _Run, manifest: Path, metrics: dict) -> None:
    from .plots import confusion_from_calls, reliability_plot, roc_plot, training_curves

    out = run.out
    synthetic = metrics["synthetic"]
    caption = "SYNTHETIC data (phantom cohort) - not a clinical result" if synthetic else None
    tag = " [SYNTHETIC]" if synthetic else ""
    rows = []
    with open(out / "oof_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([1 if r["label"] == "malignant" else 0 for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    calls = np.array([int(float(r["probability"]) >= float(r["threshold"])) for r in rows])
    figs = out / "figures"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roc_plot(y, p, figs / "roc.png", title=f"ROC, out-of-fold{tag}", caption=caption)
        reliability_plot(y, p, figs / "calibration.png", title=f"Reliability, out-of-fold{tag}",
                         caption=caption)
        confusion_from_calls(y, calls, figs / "confusion.png",
                             title=f"Confusion, each fold at its own threshold{tag}",
                             caption=caption)
        training_curves(run.log_rows(), figs / "training_curves.png",
                        title=f"Training curves per fold{tag}", caption=caption)

    s, pooled = run.s, metrics["pooled"]
    rules = sorted({str(f.get("selection")) for f in metrics["per_fold"]})
    selection = {"loss": "model selection on validation loss, early stopping patience "
                         f"{s.patience}",
                 "auc": f"model selection on validation AUC, early stopping patience {s.patience}",
                 "last": "last epoch kept (validation split too small to select on)"}
    selection_text = "; ".join(selection.get(r, r) for r in rules)
    lines = [f"# spinefx training report", ""]
    if synthetic:
        lines += ["> **SYNTHETIC phantom cohort.** These numbers describe the pipeline on "
                  "procedurally generated phantoms, not diagnostic performance on patients.", ""]
    lines += [
        f"- manifest: `{manifest}` ({metrics['n_cases']} cases, {metrics['n_malignant']} "
        f"malignant)",
        f"- {s.folds}-fold cross-validation, stratified by label and grouped by patient; "
        f"validation split {s.val_fraction:.0%} of each training fold ({selection_text}; "
        f"threshold by {s.threshold_rule} on validation data only)",
        f"- ResNet50 after a 1x1 convolution 6 -> 3, one malignancy logit; "
        f"{'pretrained: ' + s.pretrained if s.pretrained else 'random initialisation'}",
        f"- {s.epochs} epochs max, batch {s.batch_size}, {s.image_size} px, AdamW lr {s.lr:g} "
        f"(cosine), weight decay {s.weight_decay:g}, class-weighted BCE, seed {s.seed}, "
        f"device {metrics['device']} x {metrics['world_size']}",
        "",
        "## Out-of-fold performance (every case predicted once, by the model that did not see "
        "it)", "",
        "Each test fold is called at the threshold chosen on its own training fold's validation "
        "split. 95% CIs: Wilson (proportions), DeLong (AUC).", "",
        "| metric | value (95% CI) |", "|---|---|",
    ]
    for key in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"):
        lines.append(f"| {key.upper() if key in ('auc', 'ppv', 'npv') else key} | "
                     f"{_fmt_ci(pooled.get(key))} |")
    lines += [f"| Brier score | {_fmt_ci(pooled.get('brier'))} |",
              f"| ECE (10 bins) | {_fmt_ci(pooled.get('ece'))} |", "",
              f"Operating threshold of the final model: **{metrics['threshold']:.3f}** (median "
              f"of the fold thresholds {', '.join(f'{t:.3f}' for t in metrics['fold_thresholds'])}).",
              "", "## Per fold", "",
              "| fold | n | malignant | threshold | kept epoch | AUC | accuracy | sensitivity | "
              "specificity |", "|---|---|---|---|---|---|---|---|---|"]

    def f3(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for r in metrics["per_fold"]:
        lines.append(f"| {r['fold']} | {r['n']} | {r['n_malignant']} | {f3(r['threshold'])} | "
                     f"{r['best_epoch']} | {f3(r.get('auc'))} | {f3(r.get('accuracy'))} | "
                     f"{f3(r.get('sensitivity'))} | {f3(r.get('specificity'))} |")
    summ = metrics["per_fold_summary"]
    lines += ["", "Mean +/- SD over folds: " + ", ".join(
        f"{k} {summ[k]['mean']:.3f} +/- {summ[k]['sd']:.3f}" for k in ("auc", "accuracy",
                                                                       "sensitivity",
                                                                       "specificity")
        if summ[k]["mean"] is not None and summ[k]["sd"] is not None), ""]
    cal = metrics.get("calibration")
    if cal:
        oof = cal["out_of_fold"]
        lines += [f"Temperature scaling (fitted on validation splits, T = "
                  f"{oof['temperature']:.2f}): out-of-fold ECE {oof['before']['ece']:.3f} -> "
                  f"{oof['after']['ece']:.3f}, Brier {oof['before']['brier']:.3f} -> "
                  f"{oof['after']['brier']:.3f} (the probabilities in oof_predictions.csv are "
                  f"uncalibrated).", ""]
    lines += ["## Figures", "",
              "![ROC curve](figures/roc.png)", "",
              "![Reliability diagram](figures/calibration.png)", "",
              "![Confusion matrix](figures/confusion.png)", "",
              "![Training curves](figures/training_curves.png)", ""]
    if metrics.get("final_model"):
        fm = metrics["final_model"]
        lines += ["## Final model", "",
                  f"`model.safetensors` + `config.json`: trained on all {fm['n_cases']} cases "
                  f"for {fm['epochs']} epoch(s); threshold {fm['threshold']:.3f}. Its own "
                  "performance is estimated by the cross-validation above.", ""]
    if synthetic:
        lines += ["*SYNTHETIC phantom cohort — research and teaching software, not a medical "
                  "device.*", ""]
    _atomic_write_text(out / "report.md", "\n".join(lines))
