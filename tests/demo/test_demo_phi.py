"""No PHI: a study whose PatientName / PatientID / BirthDate are known strings goes through the
demo; the strings appear nowhere in its responses, in the logs (caplog + captured stdout and
stderr), or in any file left under the app's temporary and cache folders."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pydicom
import pytest
from gradio_client import handle_file

PHI = {"PatientName": "ZZQX^PHIPATIENT^SECRETNAME", "PatientID": "PHI-ID-73519",
       "PatientBirthDate": "19010203", "OtherPatientIDs": "PHI-OTHER-4412",
       "PatientAddress": "12 PHI STREET"}
NEEDLES = ["PHIPATIENT", "SECRETNAME", "PHI-ID-73519", "19010203", "PHI-OTHER-4412",
           "PHI STREET"]


@pytest.fixture(scope="module")
def phi_study(tmp_path_factory, phantom_study):
    t1_dir, t2_dir, case = phantom_study
    root = tmp_path_factory.mktemp("phi")
    files = []
    for series in (t1_dir, t2_dir):
        out = root / series.name
        out.mkdir()
        for p in sorted(series.glob("*.dcm")):
            ds = pydicom.dcmread(p)
            for key, value in PHI.items():
                setattr(ds, key, value)
            ds.save_as(out / p.name)
            files.append(str(out / p.name))
    assert PHI["PatientName"].encode() in Path(files[0]).read_bytes()
    return files, case


def _contains_phi(text: str) -> list[str]:
    return [n for n in NEEDLES if n.lower() in text.lower()]


def _files_with_phi(roots) -> list[str]:
    hits = []
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                if any(n.encode() in data for n in NEEDLES):
                    hits.append(str(p))
    return hits


def test_phi_never_leaves_the_request(client, demo_server, demo_roots, phi_study, caplog,
                                      capfd):
    app, _ = demo_server
    files, case = phi_study
    caplog.set_level(logging.DEBUG)
    box = ",".join(map(str, case.box))
    responses = []
    # a good request, a request with a bad box, and one with one sequence only
    responses.append(client.predict([handle_file(f) for f in files], "", "", case.slice, box,
                                    "", 0, api_name="/predict_case"))
    responses.append(client.predict([handle_file(f) for f in files], "", "", case.slice,
                                    "9000,9000,9100,9100", "", 0, api_name="/predict_case"))
    responses.append(client.predict([handle_file(f) for f in files[:5]], "", "", -1, box, "", 0,
                                    api_name="/predict_case"))
    assert responses[0][0]["status"] == "ok"
    assert [r[0]["status"] for r in responses[1:]] == ["error", "error"]
    for data, overlay in responses:
        assert _contains_phi(repr(data)) == []
        if overlay:
            assert not any(n.encode() in Path(overlay).read_bytes() for n in NEEDLES)
    out, err = capfd.readouterr()
    assert _contains_phi(out + err) == []
    assert _contains_phi(caplog.text) == []
    roots = [demo_roots["gradio"], demo_roots["work"], demo_roots["cache"],
             app.spinefx_workdir, app.spinefx_library.cache_dir]
    assert _files_with_phi(roots) == []


def test_study_objects_hold_no_phi(phi_study, tmp_path):
    """The in-memory study a session keeps: no identifiers, no paths to the staged files."""
    from spinefx.demo.ingest import load_dicom_upload

    files, _ = phi_study
    study = load_dicom_upload(files, tmp_path)
    assert list(tmp_path.iterdir()) == []  # staging removed
    text = repr(study.rows) + repr(study.labels) + repr(study.notes)
    for vol in (study.volume(k) for k in study.labels):
        text += repr(vol.metadata) + vol.source + repr(vol.slice_sources) + vol.description
    assert _contains_phi(text) == []
    assert os.fspath(tmp_path) not in text
