"""Requantise a model folder's int8 file from its own weights (spinefx.export.requantize).

    .venv/bin/python tools/requantise_int8.py weights --out bundle7 \
        --gate-manifest gate200/manifest.csv

The gate manifest must be the one the folder's export gated on (its first cases are the int8
file's calibration cases, checked); ``--seed`` is the export's ordering seed (default 0). The
setting defaults to :data:`spinefx.export.quantize.FAST` (7-bit U8S8, first two convolutions
in float). Nothing is written when the gate refuses; the input folder is never changed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from spinefx.export.onnx_export import ExportError
    from spinefx.export.quantize import FAST, Int8Settings
    from spinefx.export.requantize import requantize_int8

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("model", type=Path, help="model folder with model.json and an int8 file")
    ap.add_argument("--out", type=Path, required=True, help="the new model folder")
    ap.add_argument("--gate-manifest", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0, help="the export's case-ordering seed")
    ap.add_argument("--weights", choices=("QInt8", "QUInt8"), default=FAST.weights)
    ap.add_argument("--reduce-range", action=argparse.BooleanOptionalAction,
                    default=FAST.reduce_range, help="7-bit weights (default: on)")
    ap.add_argument("--float-first-convs", type=int, default=FAST.float_first_convs)
    args = ap.parse_args(argv)
    settings = Int8Settings(weights=args.weights, reduce_range=args.reduce_range,
                            float_first_convs=args.float_first_convs)
    try:
        path = requantize_int8(args.model, args.out, args.gate_manifest, settings, args.seed)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"requantised ({settings.label}): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
