"""Inference benchmark: torch eager vs ONNX Runtime fp32 vs int8 (a benchmark, not a test).

    python benchmarks/bench_inference.py [--model DIR] [--image-size 224] [--batch 1 --batch 8]
                                         [--runs 50] [--threads N] [--no-gradcam] [--json F]

Same options and output as ``spinefx bench``; the code lives in :mod:`spinefx.export.bench`
so the installed command works without this folder. Speed goals belong here, never in tests.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from spinefx.cli import bench

    parser = argparse.ArgumentParser(prog="bench_inference")
    sub = parser.add_subparsers(dest="command")
    bench.register(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
