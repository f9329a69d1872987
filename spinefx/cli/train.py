"""``spinefx train``: the command-line shell over :func:`spinefx.train.cv.train_cv`.

Light at import (argparse only): torch loads inside :func:`run`.

Also runnable as ``python -m spinefx.cli.train --manifest M --out RUN ...`` — the same options —
which is what ``torchrun --nproc_per_node N -m spinefx.cli.train ...`` starts for
DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ._common import EPILOG, UsageError, add_allow_outside, show_progress

DESCRIPTION = (
    "Cross-validate the paper's model (1x1 conv 6->3 + ResNet50, one malignancy logit) on a "
    "manifest: stratified, patient-grouped k folds, a validation split inside each training "
    "fold for model selection and the threshold, out-of-fold predictions, metrics with 95% CIs "
    "and report.md with ROC / calibration / confusion / training-curve pictures; then (unless "
    "--no-final) a final model on all cases saved as config.json + model.safetensors. Resumable "
    "(--resume), deterministic on CPU for a seed, and DDP-ready under torchrun.")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The train options, shared by ``spinefx train`` and ``python -m spinefx.cli.train``."""
    p.add_argument("--manifest", required=True, type=Path, help="manifest CSV of labelled cases")
    p.add_argument("--out", required=True, type=Path,
                   help="run folder (new or empty; with --resume: the run to continue)")
    p.add_argument("--folds", type=int, default=10,
                   help="cross-validation folds (default 10; 1 = no cross-validation: one "
                        "model on a training/validation split, e.g. to pre-train)")
    p.add_argument("--epochs", type=_positive(int), default=30,
                   help="maximum epochs per fold (default 30)")
    p.add_argument("--batch-size", type=_positive(int), default=16,
                   help="images per step and process (default 16)")
    p.add_argument("--image-size", type=_positive(int), default=224,
                   help="network input size S, inputs are 6 x S x S (default 224)")
    p.add_argument("--lr", type=_positive(float), default=1e-3,
                   help="AdamW peak learning rate, cosine decay (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (default auto = cuda if available)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes (default 0 = in the main process)")
    p.add_argument("--pretrained", default=None, metavar="PATH",
                   help="initial weights: a torchvision-style ResNet50 state dict "
                        "(.safetensors, or .pth read with weights_only=True), a previous "
                        "spinefx run/model folder, or hf://owner/name[/file] (downloads)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch")
    p.add_argument("--no-final", action="store_true",
                   help="skip the final model trained on all cases")
    p.add_argument("--max-cases", type=_positive(int), default=None,
                   help="use a seeded, label-stratified subset of this many cases (quick runs)")
    p.add_argument("--select", choices=("auto", "loss", "auc", "last"), default="auto",
                   help="model selection on the validation split (default auto: lowest "
                        "validation loss, or the last epoch when the split is too small)")
    p.add_argument("--patience", type=int, default=10,
                   help="early stopping: epochs without validation improvement (0 = off)")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--roi-variants", type=int, default=1, metavar="K",
                   help="train on K ROIs per case (1..16, default 1 = the manifest's box only): "
                        "the manifest's box plus K-1 drawn the way users give it — shifted by "
                        "max(3 px, 5%% of the box), grown/shrunk by up to 20%%, or (about a "
                        "third) a centre click with the default box size; validation and "
                        "out-of-fold predictions use the manifest's box. All K are kept in "
                        "memory: N x K x 6 x S x S float32, e.g. 190 cases x K=6 at 128 px "
                        "= 450 MB")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_allow_outside(p, "--manifest", "; run.json records it, and --resume, `spinefx "
                      "evaluate` and `spinefx export` then allow it for this same manifest")
    return p


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="cross-validate and train the ResNet50 (PyTorch)",
                       description=DESCRIPTION, epilog=EPILOG)
    add_arguments(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``spinefx train``; returns the exit status (0). User errors raise SpineFXError /
    FileExistsError, which the CLI prints as one line."""
    if args.folds < 1:
        raise UsageError("--folds must be at least 1 (1 = no cross-validation: one model on a "
                         "training/validation split, e.g. to pre-train)")
    if args.workers < 0:
        raise UsageError("--workers must be >= 0")
    if not 1 <= args.roi_variants <= 16:
        raise UsageError(f"--roi-variants must be within 1..16, got {args.roi_variants}")
    import torch  # noqa: F401  (missing: the CLI names the 'train' extra)

    from spinefx.train.cv import train_cv

    metrics = train_cv(
        args.manifest, args.out, folds=args.folds, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, lr=args.lr, seed=args.seed,
        device=args.device, workers=args.workers, pretrained=args.pretrained,
        resume=args.resume, final=not args.no_final, max_cases=args.max_cases,
        progress=show_progress(args), select=args.select, patience=args.patience,
        augment=not args.no_augment, allow_outside=args.allow_outside,
        roi_variants=args.roi_variants)
    if metrics and args.folds == 1:
        auc = metrics["validation"]["auc"].get("value")
        print(f"{metrics['n_cases']} cases, no cross-validation: validation AUC "
              f"{'n/a' if auc is None else f'{auc:.3f}'} (it chose the epoch: not a test "
              f"result); model: {Path(args.out) / 'model.safetensors'}")
        return 0
    if metrics:  # rank 0 only under torchrun
        auc = metrics["pooled"]["auc"]
        tag = "SYNTHETIC phantom cohort: " if metrics.get("synthetic") else ""
        auc_text = ("n/a" if auc.get("value") is None else
                    f"{auc['value']:.3f} (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})")
        print(f"{tag}{metrics['n_cases']} cases, {metrics['folds']}-fold out-of-fold AUC "
              f"{auc_text}; threshold {metrics['threshold']:.3f}")
        print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spinefx.cli.train``: the train command on its own (started by torchrun)."""
    from . import execute

    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m spinefx.cli.train", description=DESCRIPTION, epilog=EPILOG))
    return execute(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
