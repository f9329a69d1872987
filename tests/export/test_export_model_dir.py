"""The model folder: model.json contract, sha256 integrity, the runtime Predictor, the CLI."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from spinefx.runtime import PreprocessConfig, prepare_case
from spinefx.runtime.inference import Predictor
from spinefx.runtime.model_files import FORMAT, ModelIntegrityError, read_model_spec, sha256_file


def test_model_json_round_trip(settings, exported, model):
    out, spec = exported
    read = read_model_spec(out)
    assert read.raw["format"] == FORMAT and read.name == "tiny"
    assert read.preprocessing == PreprocessConfig(image_size=settings.image_size)
    assert read.threshold == settings.threshold and read.classes == ("benign", "malignant")
    assert read.input_name == "input" and read.output_names == ("probability", "cam")
    assert read.raw["input"]["channels"] == list(PreprocessConfig().channel_names)
    assert read.synthetic
    assert read.raw["training_data"]["description"] == \
        f"synthetic phantom cohort, {settings.n_cases} cases (5 malignant), seed 1"
    assert read.raw["metrics"]["pooled"]["auc"]["value"] == 0.8
    for variant, entry in spec["files"].items():
        assert sha256_file(out / entry["path"]) == entry["sha256"]
        assert read.file(variant)[2] == entry["sha256"]


def test_tampering_one_byte_is_refused(exported, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(exported[0], copy)
    target = copy / "model.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        Predictor(copy, variant="fp32")
    Predictor(copy, variant="int8")              # the untouched file still loads


def test_runtime_predictor_matches_torch(settings, exported, model, inputs):
    out, spec = exported
    x, _, cases = inputs
    predictor = Predictor(out, variant="fp32", snap_roi=False)   # torch's box: as given
    prob, cam = predictor.run(x)
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(x))).double().numpy()
    assert np.abs(prob - ref).max() <= 1e-4
    assert cam.shape == (len(x), 2, 2)
    # end to end from the DICOM files, through the runtime's own preprocessing
    prediction = predictor.predict_case(cases[0])
    arr = prepare_case(cases[0], PreprocessConfig(image_size=settings.image_size)).array
    with torch.no_grad():
        expected = float(torch.sigmoid(model(torch.from_numpy(arr[None])))[0])
    assert abs(prediction.probability - expected) <= 1e-4
    assert prediction.label == ("malignant" if expected >= settings.threshold else "benign")
    # int8 promises what its gate measured: on the gate's held-out cases (never the ones it
    # was calibrated on), |p_int8 - p_fp32| within the bound. Re-measured here on this CPU.
    gate = spec["int8"]
    held = [i for i, c in enumerate(cases) if c.case_id not in set(gate["calibration_case_ids"])]
    assert len(held) == gate["held_out_cases"]
    int8 = Predictor(out)                       # default variant: int8 when its gate passed
    if not gate["passed"]:
        assert int8.variant == "fp32" and "int8" not in spec["files"], gate["failures"]
        return
    assert int8.variant == "int8"
    p8, p32 = int8.run(x[held])[0], predictor.run(x[held])[0]
    diff = float(np.abs(p8 - p32).max())
    assert diff <= gate["probability_diff_bound"]
    assert diff == pytest.approx(gate["max_abs_probability_diff"], abs=1e-5)  # same measurement
    # against torch: the gate's bound plus the fp32 parity bound asserted above
    assert np.abs(p8 - ref[held]).max() <= gate["probability_diff_bound"] + 1e-4


def test_refuses_a_foreign_non_empty_folder(run_dir, tmp_path):
    from spinefx.export import ExportError, export_model

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing to overwrite"):
        export_model(run_dir, out, log=None)
    assert (out / "notes.txt").read_text() == "keep me"


def test_cli_export_and_errors(run_dir, tmp_path, capsys):
    from spinefx.cli import bench as bench_command
    from spinefx.cli import export as export_command
    from spinefx.export.onnx_export import ExportError

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    export_command.register(sub)
    bench_command.register(sub)
    args = parser.parse_args(["bench", "--batch", "1", "--batch", "8", "--runs", "3"])
    assert args.batch == [1, 8] and args.image_size == 224
    args = parser.parse_args(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "m")])
    with pytest.raises(ExportError, match="config.json is missing"):
        args.run(args)
    args = parser.parse_args(["export", str(run_dir), "--out", str(tmp_path / "m"),
                              "--name", "cli"])
    assert args.run(args) == 0
    assert "fp32:" in capsys.readouterr().out
    assert read_model_spec(tmp_path / "m").name == "cli"


def test_cli_module_loads_no_torch():
    code = ("import sys, spinefx.cli, spinefx.cli.export, spinefx.cli.bench; "
            "spinefx.cli.build_parser(); "
            "print(','.join(m for m in ('torch', 'onnx', 'onnxruntime', 'pytorch_grad_cam') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
