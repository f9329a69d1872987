"""``spinefx export``: a training run -> an ONNX model folder, parity-checked
(:func:`spinefx.export.exporter.export_model`). torch loads inside :func:`run`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import EPILOG, add_allow_outside, positive_int, show_progress


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    p.add_argument("--manifest", "--gate-manifest", dest="manifest", type=Path, default=None,
                   help="manifest whose cases feed the gates and int8 calibration (default: "
                        "the training manifest the run recorded, whose cases are in-sample for "
                        "the final model: the gate says so and warns); a fresh cohort the run "
                        "never trained on (e.g. spinefx phantom with a new --seed) makes the "
                        "int8/fp16 gates held-out")
    add_allow_outside(p, "the gate manifest", " (not needed for the training manifest of a "
                      "run trained with --allow-outside: its run.json grants it)")
    p.add_argument("--int8", action="store_true",
                   help="also write a static int8 (QDQ, per-channel) model if it passes its gate")
    p.add_argument("--calib-cases", type=positive_int, default=32,
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
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar while preprocessing (it shows on a terminal only)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from spinefx.export.exporter import export_model

    path = export_model(args.run_dir, args.out, manifest=args.manifest, int8=args.int8,
                        calib_cases=args.calib_cases, name=args.name, progress=show_progress(args),
                        fp16=args.fp16, only_default=args.only_default,
                        allow_outside=args.allow_outside)
    spec = json.loads(path.read_text())
    for variant, entry in spec["files"].items():
        print(f"{variant}: {args.out / entry['path']} ({entry['bytes'] / 2**20:.1f} MiB, "
              f"sha256 {entry['sha256'][:16]}...)")
    _report_gate_cases(args, spec)
    int8 = spec.get("int8")
    if args.int8 and int8 and not int8.get("passed"):
        print(f"warning: {int8.get('message')}", file=sys.stderr)
        return 1 if args.require_int8 else 0
    return 0


def _report_gate_cases(args: argparse.Namespace, spec: dict) -> None:
    """Say where the reduced variants' gate cases came from (in-sample for the final model or
    held-out): from their records, or worked out here when a record does not say."""
    from spinefx.export.run_record import read_record, training_manifest
    from spinefx.export.variants import IN_SAMPLE, UNKNOWN, gate_provenance

    records = {v: spec[v] for v in ("int8", "fp16") if isinstance(spec.get(v), dict)}
    if not records:
        return
    if all(r.get("cases", UNKNOWN) != UNKNOWN for r in records.values()):
        provenance = {"cases": next(iter(records.values()))["cases"],
                      "reason": next(iter(records.values())).get("cases_reason", "")}
        warned = True  # the export warned already
    else:
        config = read_record(args.run_dir / "config.json")
        metrics = read_record(args.run_dir / "metrics.json")
        trained_on = training_manifest(args.run_dir, config, metrics)
        provenance = gate_provenance(args.manifest or trained_on or Path("-"), trained_on)
        warned = False
    print(f"{'/'.join(records)} gate cases: {provenance['cases']} for the final model "
          f"({provenance['reason']})")
    if provenance["cases"] == IN_SAMPLE and not warned:
        print(f"warning: the {'/'.join(records)} gate ran on cases the final model was trained "
              "on: its verdict is in-sample; pass --gate-manifest with a fresh cohort for a "
              "held-out gate", file=sys.stderr)
