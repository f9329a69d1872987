"""Which int8 quantisation keeps a model closest to fp32 on any x86-64 CPU (SYNTHETIC phantoms).

Takes a model folder (default: the bundled ``weights/``), rebuilds its fp32 graph (an fp16-weights
file is cast back: the same arithmetic the fp16 model does), quantises it with each candidate
:class:`~spinefx.export.quantize.Int8Settings` calibrated on one phantom cohort, and compares
int8 with fp32 in onnxruntime on another (cases calibration never saw): max and mean |dp|, AUC
drop, whether the setting is CPU-independent (no U8S8 saturation without VNNI, also read off
the quantised weights), and batch-1 latency of fp32 and int8. A benchmark, not a test:

    python benchmarks/int8_settings.py                         # bundled model, all candidates
    python benchmarks/int8_settings.py --model DIR --only u8s8-7bit u8u8 --cases 100

Inputs are built the runtime's way (``align_pair`` + ``build_six_channel`` at the manifest box)
from phantoms rendered in memory, half at variation 0 and half at 1. Synthetic phantoms only.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from spinefx.export.quantize import (
    CHOSEN,
    Int8Settings,
    auc,
    float32_weights,
    quantize_int8,
    weight_range,
)

CANDIDATES: dict[str, Int8Settings] = {
    "u8s8-7bit": Int8Settings(),
    "u8u8": Int8Settings(weights="QUInt8", reduce_range=False),
    "u8s8-8bit (VNNI-dependent)": Int8Settings(reduce_range=False),
    "u8s8-7bit per-tensor": Int8Settings(per_channel=False),
    "u8s8-7bit float-stem": Int8Settings(float_first_convs=1),
    "u8u8 float-stem": Int8Settings(weights="QUInt8", reduce_range=False, float_first_convs=1),
    "u8s8-7bit float-first2": Int8Settings(float_first_convs=2),
    "u8u8 float-first2": Int8Settings(weights="QUInt8", reduce_range=False, float_first_convs=2),
    "u8s8-7bit float-first4": Int8Settings(float_first_convs=4),
    "u8u8 float-first4": Int8Settings(weights="QUInt8", reduce_range=False, float_first_convs=4),
    "u8s8-7bit float-layer4": Int8Settings(float_last_convs=10),
    "u8u8 float-layer4": Int8Settings(weights="QUInt8", reduce_range=False, float_last_convs=10),
    "u8s8-7bit float-stem-layer4": Int8Settings(float_first_convs=1, float_last_convs=10),
    "u8u8 float-stem-layer4": Int8Settings(weights="QUInt8", reduce_range=False,
                                           float_first_convs=1, float_last_convs=10),
    "u8s8-7bit int8-head": Int8Settings(float_head=False),
    "s8s8-7bit sym-act": Int8Settings(activations="QInt8", symmetric_activations=True),
    "u8s8-7bit percentile": Int8Settings(calibration="Percentile"),
    "u8s8-7bit percentile 99.99": Int8Settings(calibration="Percentile", percentile=99.99),
    "u8s8-7bit entropy": Int8Settings(calibration="Entropy"),
}


def fp32_graph(model_dir: Path, out: Path) -> Path:
    """The model folder's fp32 graph: its fp32 file, or its fp16-weights file cast back."""
    spec = json.loads((model_dir / "model.json").read_text())
    if "fp32" in spec["files"]:
        return model_dir / spec["files"]["fp32"]["path"]
    return float32_weights(model_dir / spec["files"]["fp16"]["path"], out)


def phantom_inputs(model_dir: Path, seed: int, n_cases: int, variations: list[float],
                   workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs (N, 6, S, S), labels, variation of each) of ``n_cases`` phantoms per
    variation, half malignant, built as the runtime builds them (manifest box)."""
    from spinefx.phantom import iter_cases
    from spinefx.phantom.case import case_volumes
    from spinefx.runtime.matching import align_pair
    from spinefx.runtime.model_files import read_model_spec
    from spinefx.runtime.preprocess import build_six_channel

    config = read_model_spec(model_dir).preprocessing
    xs, ys, vs = [], [], []
    for variation in variations:
        for row, case in iter_cases(seed=seed, n_cases=n_cases, n_malignant=n_cases // 2,
                                    variation=variation, workers=workers, progress=False):
            pair = align_pair(*case_volumes(case))
            xs.append(build_six_channel(pair, case.slice, box=case.box, config=config).array)
            ys.append(int(row["label"] == "malignant"))
            vs.append(variation)
    return np.stack(xs).astype(np.float32), np.array(ys), np.array(vs)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def probabilities(sess, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(["probability"], {name: x[i:i + 8]})[0]
                           for i in range(0, len(x), 8)])


def latency_ms(sess, x1: np.ndarray, runs: int) -> float:
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x1})
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x1})
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def compare(fp32: Path, settings: Int8Settings, calib: np.ndarray, x: np.ndarray,
            y: np.ndarray, v: np.ndarray, work: Path, threads: int, runs: int) -> dict:
    """One candidate: quantise, then int8 vs fp32 on the evaluation inputs."""
    q8 = work / "candidate.int8.onnx"
    info = quantize_int8(fp32, q8, calib, settings=settings)
    s32, s8 = session(fp32, threads), session(q8, threads)
    p32, p8 = probabilities(s32, x), probabilities(s8, x)
    dp = np.abs(p8 - p32)
    return {"settings": settings.to_dict(), "label": settings.label,
            "max_dp": float(dp.max()), "mean_dp": float(dp.mean()),
            "p95_dp": float(np.percentile(dp, 95)),
            "max_dp_by_variation": {f"{g:g}": float(dp[v == g].max()) for g in np.unique(v)},
            "auc_fp32": auc(y, p32), "auc_int8": auc(y, p8), "auc_drop": auc(y, p32) - auc(y, p8),
            "weight_range": weight_range(q8), "quantise_s": info["seconds"],
            "fp32_ms": latency_ms(s32, x[:1], runs), "int8_ms": latency_ms(s8, x[:1], runs),
            "int8_mib": q8.stat().st_size / 2**20}


def table(rows: dict[str, dict]) -> str:
    lines = ["| candidate | CPU-independent | max abs dp | max abs dp per variation | "
             "mean abs dp | AUC drop | fp32 ms | int8 ms | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | | failed: {r['error'][:60]} | | | | | | |")
            continue
        fits = r["weight_range"]["u8s8_pair_sum_fits_int16"]
        indep = "yes" if r["settings"]["cpu_independent"] and fits else "no"
        if r["settings"] == CHOSEN.to_dict():
            name = f"**{name}** (chosen)"
        per = ", ".join(f"v{g} {d:.3f}" for g, d in r["max_dp_by_variation"].items())
        lines.append(f"| {name} | {indep} | {r['max_dp']:.4f} | {per} | {r['mean_dp']:.4f} | "
                     f"{r['auc_drop']:+.4f} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | "
                     f"{r['fp32_ms'] / r['int8_ms']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("weights"), help="model folder")
    ap.add_argument("--cases", type=int, default=50, help="evaluation cases per variation")
    ap.add_argument("--calib-cases", type=int, default=16, help="calibration cases per variation")
    ap.add_argument("--seed", type=int, default=77, help="evaluation cohort seed")
    ap.add_argument("--calib-seed", type=int, default=4242, help="calibration cohort seed")
    ap.add_argument("--variation", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--only", nargs="+", default=None, choices=list(CANDIDATES), metavar="NAME",
                    help=f"candidates to run (default all): {', '.join(CANDIDATES)}")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--runs", type=int, default=30, help="timed batch-1 runs per model")
    ap.add_argument("--workers", type=int, default=1, help="phantom rendering processes")
    ap.add_argument("--inputs-cache", type=Path, default=None,
                    help="npz to reuse the rendered inputs from (written if missing)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()

    if args.inputs_cache and args.inputs_cache.is_file():
        data = np.load(args.inputs_cache)
        calib, x, y = data["calib"], data["x"], data["y"]
        v = data["variation"] if "variation" in data.files else \
            np.repeat(args.variation, len(x) // len(args.variation))  # cached before it was kept
    else:
        calib, _, _ = phantom_inputs(args.model, args.calib_seed, args.calib_cases,
                                     args.variation, args.workers)
        x, y, v = phantom_inputs(args.model, args.seed, args.cases, args.variation,
                                 args.workers)
        if args.inputs_cache:
            np.savez_compressed(args.inputs_cache, calib=calib, x=x, y=y, variation=v)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="spinefx-int8-settings-") as tmp:
        fp32 = fp32_graph(args.model, Path(tmp) / "model.onnx")
        for name in args.only or list(CANDIDATES):
            try:
                rows[name] = compare(fp32, CANDIDATES[name], calib, x, y, v, Path(tmp),
                                     args.threads, args.runs)
            except Exception as exc:  # noqa: BLE001 - a candidate onnxruntime rejects is a row
                rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print(f"\nSYNTHETIC phantoms: calibration {len(calib)} cases (seed {args.calib_seed}), "
          f"evaluation {len(x)} cases (seed {args.seed}, {int(y.sum())} malignant), variation "
          f"{args.variation}; batch 1, {args.threads} threads\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
