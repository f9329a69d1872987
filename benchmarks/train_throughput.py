"""Training throughput of the paper's model: images/s and where the time goes.

A short synthetic-input training loop per image size (default 64, 128, 224 px) through the same
pieces ``spinefx train`` uses (:class:`CaseDataset` with augmentation, ``DataLoader``,
:func:`spinefx.train.cv.train_one_epoch`, AdamW, class-weighted BCE). Inputs are random
(6, S, S) arrays standing in for the preprocessed cache (DICOM decoding happens once per run,
before training, and is not part of the loop). Reports, per size:

- images/s over the timed steps (after warm-up steps, which build the kernels);
- the share of wall time spent waiting for data (augmentation + collation; with ``--workers``
  0 it runs in the training process) vs compute (forward, backward, optimizer step).

Not a test. Usage::

    python benchmarks/train_throughput.py                       # CPU, 64/128/224 px
    python benchmarks/train_throughput.py --device cuda --batch-size 32 --steps 30
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from spinefx.runtime import PreprocessConfig
from spinefx.train.cv import resolve_device, set_determinism, train_one_epoch
from spinefx.train.data import Augment, CaseDataset
from spinefx.train.model import SpineFxNet


def measure(size: int, batch_size: int, steps: int, warmup: int, workers: int,
            device: torch.device, augment: bool) -> dict:
    n = batch_size * (steps + warmup)
    rng = np.random.default_rng(0)
    arrays = rng.random((n, 6, size, size), dtype=np.float32)
    targets = (rng.random(n) < 0.3).astype(np.int64)
    torch.manual_seed(0)
    model = SpineFxNet(preprocess=PreprocessConfig(image_size=size).to_dict()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0, device=device))
    aug = Augment() if augment else None

    def loader(idx):
        ds = CaseDataset(arrays, targets, idx, aug)
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                          drop_last=True, pin_memory=device.type == "cuda")

    train_one_epoch(model, loader(range(batch_size * warmup)), opt, loss_fn, device,
                    base_lr=1e-3, first_step=0, total_steps=steps + warmup)
    t = time.perf_counter()
    stats = train_one_epoch(model, loader(range(batch_size * warmup, n)), opt, loss_fn, device,
                            base_lr=1e-3, first_step=warmup, total_steps=steps + warmup)
    wall = time.perf_counter() - t
    return {"size": size, "images": stats["n"], "wall_s": wall,
            "images_per_s": stats["n"] / wall, "data_s": stats["data_s"],
            "compute_s": stats["compute_s"], "data_share": stats["data_s"] / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per size")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--deterministic", action="store_true",
                    help="as spinefx train runs (use_deterministic_algorithms)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.deterministic:
        set_determinism(device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads")
    print(f"spinefx training throughput - torch {torch.__version__}, {device.type} ({where}), "
          f"batch {args.batch_size}, {args.steps} timed steps, workers {args.workers}, "
          f"augment {'off' if args.no_augment else 'on'}")
    header = f"{'size':>6} {'images/s':>9} {'s/step':>7} {'data %':>7} {'compute %':>9}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        r = measure(size, args.batch_size, args.steps, args.warmup, args.workers, device,
                    not args.no_augment)
        print(f"{size:>6} {r['images_per_s']:>9.1f} {r['wall_s'] / args.steps:>7.3f} "
              f"{100 * r['data_s'] / r['wall_s']:>6.1f}% "
              f"{100 * r['compute_s'] / r['wall_s']:>8.1f}%", flush=True)


if __name__ == "__main__":
    main()
