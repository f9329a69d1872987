"""``spinefx bench``: torch eager vs ONNX Runtime fp32 vs int8 latency
(:func:`spinefx.export.bench.run_benchmark`; a benchmark, not a test)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EPILOG, positive_int


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="time torch eager vs ONNX Runtime fp32 vs int8 (a benchmark, not a test)",
        description="Measure inference latency in one run: torch eager vs ONNX Runtime fp32 "
                    "(probability + CAM) vs ONNX Runtime int8, at batch 1 and 8 (median and "
                    "p90 ms, and relative to torch eager), plus the in-graph CAM's overhead vs "
                    "a probability-only graph and pytorch-grad-cam's GradCAM on torch, then "
                    "fresh runtime-only processes (default variant and int8) from a DICOM "
                    "folder to a result: cold start and peak RSS. Without "
                    "--model it builds a random-init 6-channel ResNet50 and exports/quantises "
                    "it in a temporary folder (speed does not depend on the weights).",
        epilog=EPILOG)
    p.add_argument("--model", type=str, default=None, metavar="DIR|hf://owner/name",
                   help="a model folder (model.json + ONNX files) to time instead")
    p.add_argument("--image-size", type=positive_int, default=224,
                   help="input size S without --model (default 224)")
    p.add_argument("--batch", type=positive_int, action="append", default=None,
                   help="batch size(s) to time; repeatable (default: 1 and 8)")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs per row (default 50)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="intra-op threads for torch and onnxruntime (default: library default)")
    p.add_argument("--no-gradcam", action="store_true", help="skip the pytorch-grad-cam row")
    p.add_argument("--no-int8-process", action="store_true",
                   help="skip the runtime-only process with the int8 model (peak RSS)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from spinefx.export.bench import (
        format_runtime,
        format_table,
        format_targets,
        int8_runtime_profile,
        run_benchmark,
        runtime_profile,
    )

    result = run_benchmark(model_dir=args.model, image_size=args.image_size,
                           batch_sizes=tuple(args.batch or (1, 8)), runs=args.runs,
                           threads=args.threads, gradcam=not args.no_gradcam)
    print(format_table(result))
    result["runtime_process"] = runtime_profile(args.model)  # the bundled model by default
    print("\n" + format_runtime(result["runtime_process"]))
    if not args.no_int8_process:
        result["runtime_process_int8"] = int8_runtime_profile(args.model)
        print("\n" + format_runtime(result["runtime_process_int8"]))
    print("\n" + format_targets(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
