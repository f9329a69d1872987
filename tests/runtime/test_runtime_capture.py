"""The DICOM Secondary Capture of the overlay: valid per dicom3tools' dciodvfy, names in their
character set, and no patient value in any log, warning or screen while it is written."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from spinefx.phantom import write_phantom_study
from spinefx.runtime.outputs import secondary_capture, write_secondary_capture

SUMMARY = {"probability": 0.42, "threshold": 0.5, "label": "benign", "model": "tiny:fp32"}


def _dciodvfy() -> str:
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("CI"):  # .ci/run's first line installs it: missing there is a failure
            pytest.fail("dciodvfy (Debian package dicom3tools) is not installed")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; .ci/run does)")
    return exe


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    t1_dir, _, _ = write_phantom_study(root / "study", seed=3, label="malignant", case_id="p3")
    return sorted(t1_dir.iterdir())[0]


def _variant(source: Path, folder: Path, **attrs) -> Path:
    ds = pydicom.dcmread(source)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / source.name
    ds.save_as(out)
    return out


@pytest.mark.parametrize("charset, name", [
    ("ISO_IR 100", "SYNTHETIC^PHANTOM"),       # ASCII (the phantom's own)
    ("ISO_IR 192", "Müller^Jörg"),            # UTF-8
], ids=["ascii", "utf8"])
def test_capture_is_valid_dicom_and_keeps_the_name(source, tmp_path, charset, name) -> None:
    exe = _dciodvfy()
    src_file = _variant(source, tmp_path / "src", SpecificCharacterSet=charset, PatientName=name)
    out = write_secondary_capture(tmp_path / "sc.dcm", Image.new("RGB", (48, 32), "red"),
                                  src_file, SUMMARY)
    proc = subprocess.run([exe, str(out)], capture_output=True, timeout=60)
    report = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert not errors, report
    sc = pydicom.dcmread(out)
    assert sc.SpecificCharacterSet == charset
    assert str(sc.PatientName) == name
    raw = out.read_bytes()
    assert name.encode("utf-8" if charset == "ISO_IR 192" else "latin-1") in raw
    assert "PatientOrientation" in sc  # Type 2C, present (empty)
    assert sc.BodyPartExamined == "SPINE" and "Laterality" not in sc  # unpaired: no laterality
    warned = [line for line in report.splitlines() if line.startswith("Warning")]
    assert not warned, report  # measured: none left


def test_capture_of_a_paired_or_unknown_body_part_has_an_empty_laterality(source,
                                                                          tmp_path) -> None:
    exe = _dciodvfy()
    src_file = _variant(source, tmp_path / "src", BodyPartExamined="KNEE")
    out = write_secondary_capture(tmp_path / "sc.dcm", Image.new("RGB", (16, 16)), src_file,
                                  SUMMARY)
    proc = subprocess.run([exe, str(out)], capture_output=True, timeout=60)
    report = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    sc = pydicom.dcmread(out)
    assert sc.BodyPartExamined == "KNEE" and sc.Laterality == ""


def test_capture_of_an_invalid_birth_date_is_valid_dicom(source, tmp_path) -> None:
    exe = _dciodvfy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src_file = _variant(source, tmp_path / "src", PatientBirthDate="19XX0101",
                            StudyDate="2026-12-01")
    out = write_secondary_capture(tmp_path / "sc.dcm", Image.new("RGB", (16, 16)), src_file,
                                  SUMMARY)
    proc = subprocess.run([exe, str(out)], capture_output=True, timeout=60)
    report = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    sc = pydicom.dcmread(out)
    assert sc.PatientBirthDate == "" and sc.StudyDate == ""


def test_invalid_birth_date_never_reaches_a_log_a_warning_or_the_screen(source, tmp_path, capfd,
                                                                        caplog) -> None:
    bad = "19XX0101"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test's own edit of the source may complain
        src_file = _variant(source, tmp_path / "src", PatientBirthDate=bad)
    capfd.readouterr()
    caplog.clear()
    mode = pydicom.config.settings.reading_validation_mode
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        ds = secondary_capture(Image.new("RGB", (16, 16)), src_file, SUMMARY)
        out = write_secondary_capture(tmp_path / "sc.dcm", Image.new("RGB", (16, 16)),
                                      src_file, SUMMARY)
    captured = capfd.readouterr()
    seen = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    seen += [captured.out, captured.err, caplog.text]
    assert not [text for text in seen if bad in text], seen
    # Type 2: the invalid value is written empty, so the capture stays valid DICOM
    assert ds["PatientBirthDate"].value == ""
    sc = pydicom.dcmread(out)
    assert sc["PatientBirthDate"].value == "" and bad.encode() not in out.read_bytes()
    assert sc.PatientID == pydicom.dcmread(src_file).PatientID  # the rest is copied
    # and pydicom's settings and the logger are as they were
    assert not logging.getLogger("pydicom").filters
    assert pydicom.config.settings.reading_validation_mode == mode
