"""``spinefx export`` and ``spinefx bench``: thin command-line shells.

Light at import (argparse only): ``spinefx --help`` must not load torch or onnxruntime. Register
with ``add_export_parser(sub)`` / ``add_bench_parser(sub)``; each sets ``run`` on its parser
(``run_export`` / ``run_bench``), the convention of :mod:`spinefx.cli`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = "Research and teaching software, not a medical device."


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# ---------------------------------------------------------------------------------------------
def add_export_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export a trained run to ONNX (probability + Grad-CAM), parity-checked",
        description="Export a training run folder (config.json + model.safetensors) to an ONNX "
                    "model folder for the torch-free runtime: model.onnx (fp32, dynamic batch, "
                    "outputs 'probability' and 'cam' = Grad-CAM of layer4), optionally "
                    "model.int8.onnx (static QDQ int8), and model.json (sha256, input spec, "
                    "preprocessing, threshold, metrics, training data). Gates run on real "
                    "preprocessed cases and stop the export when they fail: probability vs "
                    "PyTorch max |diff| <= 1e-4; CAM vs pytorch-grad-cam GradCAM Pearson r >= "
                    "0.999 per map; int8 (on held-out cases): AUC drop <= 0.005 and max |dp| <= "
                    "0.03, else the int8 file is refused and the fp32 model is kept.",
        epilog=EPILOG)
    p.add_argument("run_dir", metavar="RUN", type=Path, help="training run folder")
    p.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR",
                   help="model folder to write (new, empty, or a previous export)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="manifest whose cases feed the gates and int8 calibration "
                        "(default: the training manifest the run recorded)")
    p.add_argument("--int8", action="store_true",
                   help="also write a static int8 (QDQ, per-channel) model if it passes its gate")
    p.add_argument("--calib-cases", type=_positive_int, default=32,
                   help="cases used to calibrate int8 (default 32); the rest of the manifest "
                        "is the held-out set of the int8 gate")
    p.add_argument("--fp16", action="store_true",
                   help="also write model.fp16.onnx (float16-stored weights, float32 compute: "
                        "half the size) if it passes the same gate")
    p.add_argument("--only-default", action="store_true",
                   help="keep only the default variant's file (int8 > fp16 > fp32): a lean "
                        "bundle")
    p.add_argument("--name", default=None, help="model name in model.json (default: RUN's name)")
    p.add_argument("--require-int8", action="store_true",
                   help="exit with status 1 when the int8 model is refused")
    p.add_argument("--progress", action="store_true", help="progress bar while preprocessing")
    p.set_defaults(run=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    import json

    from .exporter import export_model

    path = export_model(args.run_dir, args.out, manifest=args.manifest, int8=args.int8,
                        calib_cases=args.calib_cases, name=args.name, progress=args.progress,
                        fp16=args.fp16, only_default=args.only_default)
    spec = json.loads(path.read_text())
    for variant, entry in spec["files"].items():
        print(f"{variant}: {args.out / entry['path']} ({entry['bytes'] / 2**20:.1f} MiB, "
              f"sha256 {entry['sha256'][:16]}...)")
    int8 = spec.get("int8")
    if args.int8 and int8 and not int8.get("passed"):
        print(f"warning: {int8.get('message')}", file=sys.stderr)
        return 1 if args.require_int8 else 0
    return 0


# ---------------------------------------------------------------------------------------------
def add_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="time torch eager vs ONNX Runtime fp32 vs int8 (a benchmark, not a test)",
        description="Measure inference latency in one run: torch eager vs ONNX Runtime fp32 "
                    "(probability + CAM) vs ONNX Runtime int8, at batch 1 and 8 (median and "
                    "p90 ms, and relative to torch eager), plus the in-graph CAM's overhead vs "
                    "a probability-only graph and pytorch-grad-cam's GradCAM on torch. Without "
                    "--model it builds a random-init 6-channel ResNet50 and exports/quantises "
                    "it in a temporary folder (speed does not depend on the weights).",
        epilog=EPILOG)
    p.add_argument("--model", type=str, default=None, metavar="DIR|hf://owner/name",
                   help="a model folder (model.json + ONNX files) to time instead")
    p.add_argument("--image-size", type=_positive_int, default=224,
                   help="input size S without --model (default 224)")
    p.add_argument("--batch", type=_positive_int, action="append", default=None,
                   help="batch size(s) to time; repeatable (default: 1 and 8)")
    p.add_argument("--runs", type=_positive_int, default=50, help="timed runs per row (default 50)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="intra-op threads for torch and onnxruntime (default: library default)")
    p.add_argument("--no-gradcam", action="store_true", help="skip the pytorch-grad-cam row")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.set_defaults(run=run_bench)
    return p


def run_bench(args: argparse.Namespace) -> int:
    import json

    from .bench import format_runtime, format_table, run_benchmark, runtime_profile

    result = run_benchmark(model_dir=args.model, image_size=args.image_size,
                           batch_sizes=tuple(args.batch or (1, 8)), runs=args.runs,
                           threads=args.threads, gradcam=not args.no_gradcam)
    print(format_table(result))
    result["runtime_process"] = runtime_profile(args.model)  # the bundled model by default
    print("\n" + format_runtime(result["runtime_process"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0

