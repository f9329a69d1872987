"""Training checkpoints and weight files: safetensors only, every file replaced atomically.

After every epoch ``folds/<k>/checkpoint.safetensors`` is replaced atomically; it holds the
model, the optimizer's tensors and (in the safetensors metadata, as JSON) the epoch, the
best-so-far record, early-stopping state and the log rows. ``state.json`` beside it is a
readable copy. Nothing is pickled: tensors go through safetensors, everything else through JSON,
so a checkpoint from elsewhere can never run code when it is loaded.
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from spinefx.runtime.files import atomic_path, atomic_write_json, json_text

from .errors import TrainingError

CHECKPOINT_FORMAT = "spinefx-ckpt-1"
MODEL_PREFIX, OPTIM_PREFIX = "model.", "optim."


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (what safetensors can store)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_safetensors(path: str | PathLike, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` as a safetensors file at ``path``, replaced atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def save_weights(path: str | PathLike, model: nn.Module,
                 metadata: dict[str, str] | None = None) -> Path:
    """The model's weights alone (``best.safetensors``, ``model.safetensors``)."""
    return save_safetensors(path, model_tensors(model), metadata)


def load_weights(path: str | PathLike, model: nn.Module) -> None:
    model.load_state_dict(load_file(str(path), device="cpu"))


def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {name} is not a tensor")
            tensors[f"{OPTIM_PREFIX}{pid}.{name}"] = value.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                            groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIM_PREFIX):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for g in groups:
        if "betas" in g:  # JSON has no tuples; AdamW wants its betas back as one
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: str | PathLike, model: nn.Module, opt: torch.optim.Optimizer,
                    state: dict) -> None:
    """Model + optimizer tensors + JSON ``state`` in one safetensors file, replaced atomically,
    and ``state.json`` beside it."""
    path = Path(path)
    tensors = {MODEL_PREFIX + k: v for k, v in model_tensors(model).items()}
    opt_tensors, groups = _optimizer_to_tensors(opt)
    tensors.update(opt_tensors)
    meta = {"state": json_text(state), "param_groups": json_text(groups),
            "format": CHECKPOINT_FORMAT}
    save_safetensors(path, tensors, meta)
    atomic_write_json(path.with_name("state.json"), state)


def load_checkpoint(path: str | PathLike, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore ``model`` and ``opt`` from :func:`save_checkpoint`'s file; return its state."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError("not a spinefx training checkpoint", path)
    tensors = load_file(str(path), device="cpu")
    model.load_state_dict({k[len(MODEL_PREFIX):]: v for k, v in tensors.items()
                           if k.startswith(MODEL_PREFIX)})
    _optimizer_from_tensors(opt, tensors, json.loads(meta["param_groups"]))
    return json.loads(meta["state"])
