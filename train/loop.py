"""One epoch of training, precise BatchNorm, prediction, and the validation scores.

Stateless pieces the run (:mod:`.cv`) strings together: the learning rate is a function of the
step alone and every function takes what it works on, so a resumed run needs no hidden state.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

# "auto" selects on validation loss only when the validation split can rank models at all
MIN_VAL_CASES, MIN_VAL_PER_CLASS = 10, 3


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, also when it is wrapped in DistributedDataParallel."""
    return model.module if isinstance(model, DistributedDataParallel) else model


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
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if progress else True)
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
        if device.type == "cuda":  # kernels run asynchronously: time them, not their launch
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        compute_s += t - t_data
        bar.set_postfix(loss=f"{loss_sum / n:.4f}")
    return {"loss_sum": loss_sum, "n": n, "data_s": data_s, "compute_s": compute_s,
            "steps": step - first_step, "lr": cosine_lr(base_lr, step - 1, total_steps)}


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, arrays: torch.Tensor, indices: Sequence[int] | np.ndarray,
                        device: torch.device, batch_size: int) -> None:
    """Replace BatchNorm running statistics by their average over ``arrays[indices]``.

    "Precise BN": with few optimisation steps per epoch (small cohorts), the exponential
    running averages lag far behind the weights and eval-mode predictions collapse towards a
    constant; a forward pass over the (unaugmented) training split in train mode with
    cumulative averaging fixes the statistics the model is evaluated and saved with.
    """
    net = unwrap(model)
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
def predict_logits(model: nn.Module, arrays: torch.Tensor, indices: Sequence[int] | np.ndarray,
                   device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Malignancy logits of ``arrays[indices]`` (no augmentation, eval mode)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    out = []
    idx = list(indices)
    for i in range(0, len(idx), batch_size):
        x = arrays[idx[i:i + batch_size]].to(device)
        out.append(net(x).float().cpu())
    net.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def weighted_bce(logits: np.ndarray, y: np.ndarray, pos_weight: float) -> float:
    """The training loss on held-out logits (validation loss), in float64."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # weighted BCE as torch computes it: pos_weight * y * softplus(-z) + (1 - y) * softplus(z)
    return float(np.mean(pos_weight * y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))


def auc_or_none(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present (a tiny validation split can be)."""
    if len(set(np.asarray(y).tolist())) < 2:
        return None
    return float(roc_auc_score(y, p))


# ---------------------------------------------------------------------------------------------
# model selection: which epoch's model is kept
# ---------------------------------------------------------------------------------------------
def selection_rule(select: str, y_val: np.ndarray | None) -> str:
    """``select`` (auto, loss, auc, last), with "auto" resolved: "loss" if the validation split
    has at least MIN_VAL_CASES cases and MIN_VAL_PER_CLASS of each class, else "last" (on a
    handful of cases the validation loss is noise: selecting on it keeps a random, usually
    early, epoch). No validation split (the final model): "last"."""
    if select != "auto":
        return select
    if y_val is None:
        return "last"
    small = len(y_val) < MIN_VAL_CASES or min(int(y_val.sum()), int(len(y_val) - y_val.sum())) \
        < MIN_VAL_PER_CLASS
    return "last" if small else "loss"


def is_better_epoch(state: dict, row: dict) -> bool:
    """Is this epoch's model (``row``: its validation loss and AUC) better than the kept one
    (``state``: the best so far and the rule: loss, auc or last)?"""
    rule = state.get("select", "loss")
    if state["best_epoch"] is None or rule == "last":
        return True
    if rule == "auc":
        best, now = state.get("best_val_auc"), row["val_auc"]
        if now is not None and (best is None or now > best):
            return True
        if now != best:  # AUC tied (or missing on both): the validation loss decides
            return False
    return row["val_loss"] < state["best_val_loss"]
