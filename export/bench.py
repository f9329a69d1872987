"""Inference benchmark behind ``spinefx bench`` (and ``benchmarks/bench_inference.py``).

A benchmark, not a test: it prints numbers, it asserts nothing. Rows (each at every batch size):

- ``torch eager``: ``sigmoid(model(x))`` under ``torch.inference_mode`` (the reference);
- ``torch + grad-cam``: probability plus pytorch-grad-cam ``GradCAM`` on layer4 (autograd);
- ``ORT fp32 prob-only``: the fp32 graph cut to the probability output (CAM overhead baseline);
- ``ORT fp32``: probability + in-graph CAM; ``ORT int8``: the static QDQ int8 graph;
  ``ORT fp16``: float16-stored weights (float32 compute).

With a model folder its ONNX files are timed (torch rows use a random-init network of the same
shape: speed does not depend on the weights); without one a random-init 6-channel ResNet50 is
exported and quantised (calibrated on random inputs: for timing only) in a temporary folder.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spinefx.hub.download import resolve_model
from spinefx.phantom import write_phantom_study
from spinefx.runtime import PreprocessConfig
from spinefx.train.model import SpineFxNet

from .compress import fp16_weights
from .exporter import FP16_FILE, FP32_FILE, INT8_FILE
from .onnx_export import INPUT_NAME, PROBABILITY_NAME, _LogitAsClasses, export_onnx
from .quantize import float32_weights, quantize_int8
from .variants import file_entry


def _time(fn: Callable[[], object], runs: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    arr = np.asarray(samples)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)),
            "runs": runs}


def _prob_only(src: Path, dst: Path) -> Path:
    import onnx
    from onnx.utils import Extractor

    proto = onnx.load(str(src))
    onnx.save(Extractor(proto).extract_model([INPUT_NAME], [PROBABILITY_NAME]), str(dst))
    return dst


def _session(path: Path, threads: int | None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def run_benchmark(model_dir: str | os.PathLike | None = None, image_size: int = 224,
                  batch_sizes: tuple[int, ...] = (1, 8), runs: int = 50,
                  threads: int | None = None, gradcam: bool = True, log=print) -> dict:
    """Time every row of the module docstring at every batch size (for :func:`format_table`):
    the ONNX files of ``model_dir`` (a folder or ``hf://owner/name``), or of a random-init
    model exported here."""
    import onnxruntime as ort
    import torch

    log = log or (lambda *a, **k: None)
    if threads:
        torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory(prefix="spinefx-bench-")
    work = Path(tmp.name)
    notes: list[str] = []
    try:
        files: dict[str, Path] = {}  # variant -> ONNX file to time
        if model_dir is not None:
            model_dir, files, channels, image_size = _model_folder(model_dir)
            source = f"model folder {model_dir}"
        else:
            channels = 6
            source = "random-init 6-channel ResNet50 exported here"
        model = _random_init_model(image_size)
        if model_dir is None:
            files = _export_here(model, work, image_size, channels, log)
        _add_int8(files, work, channels, image_size, model_dir is not None, notes, log)
        sessions = _sessions(files, work, threads)
        rows = _time_rows(model, sessions, batch_sizes, channels, image_size, runs, gradcam, log)
        return {"source": source, "image_size": image_size, "channels": channels,
                "threads": threads or "default", "runs": runs, "rows": rows, "notes": notes,
                "files_mib": {v: f.stat().st_size / 2**20 for v, f in files.items()},
                "machine": {"cpu": platform.processor() or platform.machine(),
                            "cores": os.cpu_count(), "torch": torch.__version__,
                            "onnxruntime": ort.__version__,
                            "torch_threads": torch.get_num_threads()}}
    finally:
        tmp.cleanup()


def _model_folder(model_dir: str | os.PathLike) -> tuple[Path, dict[str, Path], int, int]:
    """(the local folder, {variant: ONNX file}, channels, image size) of a model folder, or of
    hf://owner/name via the cache."""
    import json

    folder = resolve_model(model_dir)
    spec = json.loads((Path(folder) / "model.json").read_text())
    channels, image_size = spec["input"]["shape"][1], spec["input"]["shape"][2]
    files = {v: Path(folder) / e["path"] for v, e in spec["files"].items()}
    return folder, files, channels, image_size


def _random_init_model(image_size: int) -> SpineFxNet:
    """The torch rows' network (seeded; speed does not depend on the weights)."""
    import torch

    torch.manual_seed(0)
    return SpineFxNet(preprocess=PreprocessConfig(image_size=image_size).to_dict()).eval()


def _export_here(model: SpineFxNet, work: Path, image_size: int, channels: int,
                 log) -> dict[str, Path]:
    """``model`` as fp32 and fp16-weights ONNX files in ``work``."""

    log(f"exporting a random-init model at {image_size} px ...")
    files = {"fp32": work / FP32_FILE}
    export_onnx(model, files["fp32"], image_size, channels)
    files["fp16"] = work / FP16_FILE
    fp16_weights(files["fp32"], files["fp16"])
    return files


def _add_int8(files: dict[str, Path], work: Path, channels: int, image_size: int,
              from_folder: bool, notes: list[str], log) -> None:
    """Without an int8 file, quantise fp32 into ``work`` (random calibration inputs: for timing
    only) and add it to ``files``; ``notes`` say so."""

    if "int8" in files:
        return
    if "fp32" not in files and "fp16" not in files:
        notes.append("no fp32 or fp16 file to quantise: no int8 row")
        return
    log("quantising to int8 (random calibration inputs: for timing only) ...")
    files["int8"] = _timing_int8(files, work, channels, image_size)
    if from_folder:
        notes.append("the model folder has no int8 file: quantised one here for timing "
                     "(random calibration: its speed, not its accuracy)")


def _timing_int8(files: dict[str, Path], work: Path, channels: int, image_size: int) -> Path:
    """An int8 file quantised (chosen settings, random calibration) from the fp32 file, or
    from the fp16-weights file cast back to float32."""
    fp32 = files.get("fp32") or float32_weights(files["fp16"], work / "from_fp16.onnx")
    rng = np.random.default_rng(0)
    quantize_int8(fp32, work / INT8_FILE,
                  rng.random((8, channels, image_size, image_size), dtype=np.float32))
    return work / INT8_FILE


def _sessions(files: dict[str, Path], work: Path, threads: int | None) -> dict[str, Any]:
    """``{row name: onnxruntime session}``: the first file cut to its probability output (the
    CAM overhead baseline), then every file."""
    first = files.get("fp32") or next(iter(files.values()))
    prob_only = _prob_only(first, work / "prob_only.onnx")
    sessions = {f"ORT {next(v for v in files if files[v] == first)} prob-only":
                _session(prob_only, threads)}
    sessions.update({f"ORT {v}": _session(f, threads) for v, f in sorted(files.items())})
    return sessions


def _time_rows(model: SpineFxNet, sessions: dict[str, Any], batch_sizes: tuple[int, ...],
               channels: int, image_size: int, runs: int, gradcam: bool, log) -> list[dict]:
    """Every row at every batch size (random inputs), each also per image and relative to
    torch eager at the same batch."""
    rows = []
    rng = np.random.default_rng(1)
    for batch in batch_sizes:
        x = rng.random((batch, channels, image_size, image_size), dtype=np.float32)
        log(f"timing batch {batch} ...")
        rows += _time_batch(model, sessions, x, runs, gradcam)
    for row in rows:
        ref = next(r for r in rows if r["variant"] == "torch eager"
                   and r["batch"] == row["batch"])
        row["ms_per_image"] = row["median_ms"] / row["batch"]
        row["relative_to_torch"] = row["median_ms"] / ref["median_ms"]
    return rows


def _time_batch(model: SpineFxNet, sessions: dict[str, Any], x: np.ndarray, runs: int,
                gradcam: bool) -> list[dict]:
    """The rows of one batch ``x``: torch eager, torch + grad-cam, then each session."""
    import torch

    batch = len(x)
    xt = torch.from_numpy(x)

    def torch_eager():
        with torch.inference_mode():
            return torch.sigmoid(model(xt))
    rows = [{"variant": "torch eager", "batch": batch, **_time(torch_eager, runs)}]
    if gradcam:
        rows.append(_time_gradcam(model, xt, runs))
    for name, sess in sessions.items():  # _time calls it now: no need to bind sess
        rows.append({"variant": name, "batch": batch,
                     **_time(lambda: sess.run(None, {INPUT_NAME: x}), runs)})
    return rows


def _time_gradcam(model: SpineFxNet, xt, runs: int) -> dict:
    """Probability plus pytorch-grad-cam's GradCAM on layer4 (autograd), fewer runs."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    batch = len(xt)
    cam = GradCAM(model=_LogitAsClasses(model).eval(), target_layers=[model.backbone.layer4])
    targets = [ClassifierOutputTarget(0)] * batch
    n = max(3, runs // 5)
    row = {"variant": "torch + grad-cam", "batch": batch,
           **_time(lambda: cam(input_tensor=xt, targets=targets), n, 1)}
    cam.activations_and_grads.release()
    return row


def format_table(result: dict) -> str:
    head = ("variant", "batch", "median ms", "p90 ms", "ms/image", "x torch eager", "runs")
    body = [(r["variant"], str(r["batch"]), f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
             f"{r['ms_per_image']:.1f}", f"{r['relative_to_torch']:.2f}", str(r["runs"]))
            for r in result["rows"]]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [f"spinefx bench: {result['source']}; input {result['channels']}x"
             f"{result['image_size']}x{result['image_size']}; threads {result['threads']} "
             f"(torch {result['machine']['torch_threads']}); {result['machine']['cores']} cores; "
             + ", ".join(f"{v} {mib:.1f} MiB" for v, mib in result["files_mib"].items()), ""]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa
    lines += [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(row) for row in body]
    lines += ["", "x torch eager = median time / torch eager's median at the same batch "
                  "(lower is faster)."] + [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The workstation's view: a fresh runtime-only process, from a DICOM folder to a result
# ---------------------------------------------------------------------------------------------
_RUNTIME_PROCESS = r"""
import json, resource, sys, time
t0 = time.perf_counter()


def peak_rss_mib():
    # VmHWM belongs to this program's own address space; ru_maxrss would also count the
    # parent's memory at fork time (it survives exec), which is not ours
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


from spinefx.runtime.inference import Predictor
from spinefx.runtime.predict import predict_study
predictor = Predictor(None if sys.argv[1] == "-" else sys.argv[1],
                      variant=None if sys.argv[6] == "-" else sys.argv[6])
t_model = time.perf_counter()
box = tuple(float(v) for v in sys.argv[4].split(","))
t_study = time.perf_counter()
result = predict_study(predictor, sys.argv[2], sys.argv[3], slice_index=int(sys.argv[5]), box=box)
t_end = time.perf_counter()
print(json.dumps({
    "import_and_load_model_s": t_model - t0, "study_to_result_s": t_end - t_study,
    "first_result_s": t_end - t0, "timings_ms": result.prediction.timings_ms,
    "peak_rss_mib": peak_rss_mib(),
    "torch_loaded": "torch" in sys.modules, "provider": predictor.provider,
    "variant": predictor.variant}))
"""


def write_bench_study(folder: Path, size: int = 512, n_slices: int = 15,
                      seed: int = 7) -> tuple[int, tuple[float, ...]]:
    """A phantom study of 2 series x ``n_slices`` slices at ``size`` x ``size`` (the phantom
    upsampled, PixelSpacing scaled to match); returns (lesion slice, box in the new pixels)."""
    import pydicom

    t1_dir, t2_dir, case = write_phantom_study(folder, seed=seed, label="malignant",
                                               n_slices=n_slices)
    scale = None
    for path in sorted(t1_dir.glob("*.dcm")) + sorted(t2_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        factor = size / arr.shape[0]
        rows = np.clip((np.arange(size) / factor).astype(int), 0, arr.shape[0] - 1)
        cols = np.clip((np.arange(size) / (size / arr.shape[1])).astype(int), 0, arr.shape[1] - 1)
        big = arr[np.ix_(rows, cols)]
        ds.Rows, ds.Columns = big.shape
        ds.PixelSpacing = [float(ds.PixelSpacing[0]) / factor,
                           float(ds.PixelSpacing[1]) * arr.shape[1] / size]
        ds.PixelData = big.astype(arr.dtype).tobytes()
        ds.save_as(path)
        if path.parent == t1_dir:
            scale = (size / arr.shape[1], factor)
    if scale is None:
        raise RuntimeError(f"the phantom study in {folder} has no T1 slice")
    x0, y0, x1, y1 = case.box
    return case.slice, (x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1])


def runtime_profile(model_dir: str | os.PathLike | None = None, size: int = 512,
                    n_slices: int = 15, variant: str | None = None) -> dict:
    """Cold start, peak RSS and folder-to-result time of a fresh process that imports only the
    runtime (no torch), on a DICOM study of 2 series x ``n_slices`` x ``size``^2, with the
    model's ``variant`` (default: model.json's default)."""
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="spinefx-bench-study-") as tmp:
        study = Path(tmp) / "study"
        k, box = write_bench_study(study, size, n_slices)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _RUNTIME_PROCESS, str(model_dir) if model_dir else "-",
             str(study), str(Path(tmp) / "out"), ",".join(f"{v:.1f}" for v in box), str(k),
             variant or "-"],
            capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"runtime process failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(process_wall_s=wall, study=f"2 series x {n_slices} slices, {size}x{size}")
    return out


def int8_runtime_profile(model_dir: str | os.PathLike | None = None, size: int = 512,
                         n_slices: int = 15) -> dict:
    """:func:`runtime_profile` with the int8 variant of ``model_dir`` (default: the bundled
    model): its own int8 file, or one quantised here (random calibration: for memory and
    speed only) into a copy of the folder whose model.json lists it."""
    import json

    from spinefx.runtime.model_files import BUNDLED_DIR, read_model_spec

    folder = Path(resolve_model(model_dir)) if model_dir else BUNDLED_DIR
    spec = read_model_spec(folder).raw
    if "int8" in spec["files"]:
        return {**runtime_profile(folder, size, n_slices, variant="int8"), "int8_from": "folder"}
    with tempfile.TemporaryDirectory(prefix="spinefx-bench-int8-") as tmp:
        work = Path(tmp)
        files = {v: folder / e["path"] for v, e in spec["files"].items()}
        shape = spec["input"]["shape"]
        (work / "model").mkdir()
        q8 = _timing_int8(files, work, shape[1], shape[2]).rename(work / "model" / INT8_FILE)
        spec = {**spec, "files": {"int8": file_entry(q8, "int8 (QDQ), random calibration")},
                "default": "int8"}
        (work / "model" / "model.json").write_text(json.dumps(spec))
        profile = runtime_profile(work / "model", size, n_slices, variant="int8")
    return {**profile, "int8_from": "quantised here with random calibration (memory and "
                                    "speed only)"}


def format_runtime(profile: dict) -> str:
    t = profile["timings_ms"]
    return "\n".join([
        f"runtime-only process, {profile.get('variant', 'default')} model ({profile['study']}, "
        f"DICOM folder -> result.json + overlay.png; torch loaded: {profile['torch_loaded']}; "
        f"{profile['provider']}):",
        f"  cold start, process spawn to first result: {profile['process_wall_s']:.2f} s "
        f"(import + model load {profile['import_and_load_model_s']:.2f} s, study to result "
        f"{profile['study_to_result_s']:.2f} s)",
        f"  of which preprocess {t['preprocess']:.0f} ms and inference {t['inference']:.0f} ms"
        " (the rest: scanning and decoding the DICOM files, writing the outputs)",
        f"  peak RSS {profile['peak_rss_mib']:.0f} MiB"])


INT8_SPEEDUP_TARGET, INT8_RSS_TARGET_MIB = 3.0, 200.0


def format_targets(result: dict) -> str:
    """int8 against issue 12's targets: >= 3x faster than torch eager at batch 1, runtime peak
    RSS with int8 <= 200 MiB (measured, not asserted)."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    rows = {r["variant"]: r for r in result["rows"] if r["batch"] == 1}
    lines = []
    if "ORT int8" in rows and "torch eager" in rows:
        speedup = rows["torch eager"]["median_ms"] / rows["ORT int8"]["median_ms"]
        lines.append(f"int8 vs torch eager at batch 1: {speedup:.2f}x faster (target >= "
                     f"{INT8_SPEEDUP_TARGET:g}x: {verdict(speedup >= INT8_SPEEDUP_TARGET)})")
    profile = result.get("runtime_process_int8")
    if profile:
        rss = profile["peak_rss_mib"]
        lines.append(f"runtime peak RSS with int8: {rss:.0f} MiB (target <= "
                     f"{INT8_RSS_TARGET_MIB:g} MiB: {verdict(rss <= INT8_RSS_TARGET_MIB)})")
    return "\n".join(lines)
