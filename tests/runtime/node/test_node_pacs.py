"""``spinefx node`` against a real PACS (Debian's Orthanc) on loopback: dcmtk's storescu plays
the scanner, the node runs as a subprocess, Orthanc is its destination.

- a SYNTHETIC phantom study in -> SR (TID 1500), SEG and Secondary Capture out, in the source
  study, the SR's per-level values equal to the runtime's own analysis of the study;
- SIGKILL while receiving and while analysing, restart on the same data: nothing lost, every
  job done once, one SR per study (Orthanc's Lua filter counts every C-STORE it receives);
- destination down: the job waits with a reason, results arrive once when it comes up;
- an unknown calling AE title is refused, a CT study is skipped with its reason, and the PHI
  canary appears in no log, no status output and no file name of the data folder.

Kept to a few tests (each node start loads the model): the suite runs on 2 shared cores.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import (
    ComprehensiveSRStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

from tests.helpers.orthanc import (
    NODE_PEER,
    NodeProcess,
    Orthanc,
    acknowledged_files,
    dicom_files,
    free_port,
    jobs_of,
    node_status,
    status_command,
    storescu,
    storescu_command,
    study_uid,
)

pytestmark = pytest.mark.slow
RESULT_CLASSES = {"SR": ComprehensiveSRStorage, "SEG": SegmentationStorage,
                  "SC": SecondaryCaptureImageStorage}
RESULT_TIMEOUT = 120.0  # 2 shared cores: the model loads and runs beside other test workers


def results_in(pacs: Orthanc, uid: str, classes: dict[str, str] = RESULT_CLASSES
               ) -> dict[str, list[str]]:
    """Orthanc ids of the node's result objects in the study with that StudyInstanceUID."""
    return {name: pacs.instances_of_class(cls, uid) for name, cls in classes.items()}


def wait_results(pacs: Orthanc, uid: str, node: NodeProcess,
                 classes: dict[str, str] = RESULT_CLASSES) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}

    def arrived() -> bool:
        found.update(results_in(pacs, uid, classes))
        return all(found.values())

    assert pacs.wait_for(arrived, RESULT_TIMEOUT, interval=0.5), \
        f"results of the study not in Orthanc: {found}\n{node.output()[-3000:]}"
    return found


def wait_jobs(data: Path, n: int, states: tuple[str, ...], timeout: float = RESULT_TIMEOUT
              ) -> list[dict[str, Any]]:
    """The job rows once ``n`` jobs are all in one of ``states`` (an assertion otherwise)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = jobs_of(node_status(data)[0])
        if len(jobs) == n and all(j["state"] in states for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"jobs not {states} after {timeout:.0f} s: {jobs}"
        time.sleep(0.5)


def sop_uids_on_disk(data: Path) -> set[str]:
    """SOP Instance UIDs of every DICOM file under the node's data folder (any layout)."""
    uids = set()
    for path in data.rglob("*"):
        if path.is_file() and path.suffix != ".sqlite" and "sqlite" not in path.name:
            try:
                uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            except Exception:  # noqa: BLE001 - not DICOM (the job table, a temporary file)
                continue
    return uids


def sop_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in dicom_files(folder)}


def assert_received_once(pacs: Orthanc, found: dict[str, list[str]]) -> None:
    """Each result object reached Orthanc in exactly one C-STORE (a resend would count 2)."""
    received = pacs.received()
    for ids in found.values():
        for instance in ids:
            uid = pacs.get(f"/instances/{instance}")["MainDicomTags"]["SOPInstanceUID"]
            assert received[uid] == 1, f"{uid} received {received[uid]} times"


def read(pacs: Orthanc, instance: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{instance}.dcm"
    path.write_bytes(pacs.instance_file(instance))
    return path


def sr_findings(report: Any) -> dict[str, dict[str, Any]]:
    """Level -> {measurement or evaluation name: value} of the SR's measurement groups
    (TID 1501, tracking identifier = the level)."""
    findings = {}
    for group in report.content.get_image_measurement_groups():
        values: dict[str, Any] = {m.name.meaning: float(m.value)
                                  for m in group.get_measurements()}
        values.update({q.name.meaning: q.value.meaning
                       for q in group.get_qualitative_evaluations()})
        findings[str(group.tracking_identifier)] = values
    return findings


def value(values: dict[str, Any], starts: str) -> Any:
    """The one value whose concept name starts with ``starts`` (None when absent)."""
    found = [v for name, v in values.items() if name.lower().startswith(starts.lower())]
    assert len(found) <= 1, (starts, values)
    return found[0] if found else None


def assert_findings_match(report: Any, document: dict[str, Any]) -> None:
    """The SR says what the runtime's result document says, level by level."""
    findings = sr_findings(report)
    assert list(findings) == [v["level"] for v in document["vertebrae"]]
    for vertebra in document["vertebrae"]:
        values = findings[vertebra["level"]]
        genant = value(values, "Genant")
        if vertebra["grade"] is None:
            assert genant.lower().startswith("not graded"), (vertebra["level"], genant)
        else:
            assert genant.startswith(f"Genant grade {vertebra['grade']}"), genant
            loss = value(values, "Vertebral body height")
            assert loss == pytest.approx(100 * vertebra["height_loss"], abs=0.1)
        if vertebra.get("probability") is not None:
            assert value(values, "Probability") == pytest.approx(vertebra["probability"],
                                                                 abs=1e-5)
            assert value(values, "Fracture class").lower() == vertebra["label"]


def text_values(ds: Any) -> list[str]:
    """Every TextValue of an SR's content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            found.append(str(item.TextValue))
        found += text_values(item)
    return found


def assert_report_says(report: Any, document: dict[str, Any], t1_uids: set[str]) -> None:
    """The per-level findings, the disclaimer, the model's sha256, the SYNTHETIC caveat of a
    phantom-trained model, and references to the T1 images it was measured on."""
    assert_findings_match(report, document)
    texts = text_values(report)
    assert document["disclaimer"] in texts
    assert any(document["model_sha256"] in t for t in texts), "no model sha256 in the SR"
    if document.get("synthetic_model"):
        assert any("SYNTHETIC" in t for t in texts), "phantom model without its caveat"
    sources = {str(image.referenced_sop_instance_uid)
               for group in report.content.get_image_measurement_groups()
               for image in group.source_images}
    assert sources and sources <= t1_uids, "SR groups reference images not sent"


def test_scanner_to_pacs_refusals_and_no_phi(pacs, start_node, canary_study, ct_study,
                                             tmp_path):
    """The canary study (a phantom as patient CANARY) in, SR + SEG + SC out, with the values
    the runtime computes; an unknown AE refused, a CT skipped; the canary in no log."""
    from spinefx.runtime import analyse_study

    canary, data = canary_study.folder, tmp_path / "data"
    node = start_node(data, pacs.dicom_port, idle_seconds=0.5, allow=("SCANNER",))
    intruder = storescu(canary, node.port, calling="INTRUDER")
    assert intruder.returncode != 0 and "Calling AE Title Not Recognized" in intruder.stderr, \
        intruder.stderr
    assert not sop_uids_on_disk(data) & sop_uids(canary), "an unknown AE was accepted"
    for study in (canary, ct_study):
        sent = storescu(study, node.port)
        assert sent.returncode == 0, sent.stderr

    uid = study_uid(canary)
    found = wait_results(pacs, uid, node)
    assert {k: len(v) for k, v in found.items()} == {"SR": 1, "SEG": 1, "SC": 1}
    assert_received_once(pacs, found)
    report = hd.sr.srread(read(pacs, found["SR"][0], tmp_path))
    seg = hd.seg.segread(read(pacs, found["SEG"][0], tmp_path))
    capture = pydicom.dcmread(read(pacs, found["SC"][0], tmp_path))
    source = pydicom.dcmread(dicom_files(canary / "t1")[0], stop_before_pixels=True)
    for obj in (report, seg, capture):
        assert (obj.StudyInstanceUID, obj.PatientID) == (uid, canary_study.patient_id)
    with analyse_study(canary) as expected:
        assert_report_says(report, expected.document, sop_uids(canary / "t1"))
    levels = list(sr_findings(report))
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == levels
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = {str(sop) for _, _, sop in seg.get_source_image_uids()}
    assert referenced and referenced <= sop_uids(canary / "t1")  # on the T1 series

    jobs = wait_jobs(data, 2, ("done", "skipped", "failed"))
    assert sorted(j["state"] for j in jobs) == ["done", "skipped"], jobs
    skipped = next(j for j in jobs if j["state"] == "skipped")
    assert "CT" in skipped["reason"], skipped
    assert not results_in(pacs, study_uid(ct_study))["SR"]

    # the canary reached the node (so its absence below means something) ...
    secrets = (canary_study.patient_name, canary_study.patient_id, "CANARY")
    assert secrets[1].encode() in b"".join(p.read_bytes() for p in data.rglob("*.dcm"))
    # ... and left no trace where a log reader, a status reader or `ls` would see it
    plain = subprocess.run(status_command(data, as_json=False), capture_output=True, text=True)
    texts = {"node output": node.output(), "status --json": node_status(data)[1],
             "status": plain.stdout + plain.stderr,
             "file names": "\n".join(str(p.relative_to(data)) for p in data.rglob("*"))}
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {where}"


def test_sigkill_while_receiving_loses_nothing(pacs, start_node, phantom_studies, tmp_path):
    # idle 6 s: the scanner's resend after the restart must land before the partial study
    # counts as complete (a site sets minutes); the restart takes 1-3 s on 2 busy cores
    study, data, idle = phantom_studies[1], tmp_path / "data", 6.0
    node = start_node(data, pacs.dicom_port, idle_seconds=idle)
    sender = subprocess.Popen(storescu_command(study, node.port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    assert sender.stderr is not None
    log, responses, crashed = [], 0, False
    for line in sender.stderr:
        log.append(line)
        responses += "Received Store Response (Success)" in line
        if responses == 5 and not crashed:
            crashed = True
            # pause the scanner mid-association, crash the node, let the scanner see it
            sender.send_signal(signal.SIGSTOP)
            node.kill()
            sender.send_signal(signal.SIGCONT)
    log.append(sender.stderr.read())
    sender.wait(timeout=60)
    acked = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
             for p in acknowledged_files("".join(log))}
    total = sop_uids(study)
    assert 5 <= len(acked) < len(total), "the kill did not land mid-study"
    # on disk as the crash left it, before any recovery could touch the folder
    assert acked <= sop_uids_on_disk(data), "acknowledged instances lost by the crash"

    node = start_node(data, pacs.dicom_port, idle_seconds=idle)
    resent = storescu(study, node.port)   # the scanner sends the whole study again
    assert resent.returncode == 0, resent.stderr
    found = wait_results(pacs, study_uid(study), node)
    assert len(found["SR"]) == 1
    assert_received_once(pacs, found)
    assert total <= sop_uids_on_disk(data)
    [job] = wait_jobs(data, 1, ("done",))
    assert (job["instances"], job["revision"]) == (len(total), 0), job


def test_sigkill_while_analysing_finishes_the_job_once(pacs, start_node, phantom_studies,
                                                      tmp_path):
    study, data = phantom_studies[0], tmp_path / "data"
    node = start_node(data, pacs.dicom_port, idle_seconds=0.5)
    sent = storescu(study, node.port)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not any(j["state"] == "analysing" for j in jobs_of(node_status(data)[0])):
        assert time.monotonic() < deadline, "the job was never seen analysing"
        time.sleep(0.05)
    node.kill()
    assert not results_in(pacs, study_uid(study))["SR"], "sent before the analysis ended"

    node = start_node(data, pacs.dicom_port, idle_seconds=0.5)
    found = wait_results(pacs, study_uid(study), node)
    assert {k: len(v) for k, v in found.items()} == {"SR": 1, "SEG": 1, "SC": 1}
    assert_received_once(pacs, found)
    assert sop_uids(study) <= sop_uids_on_disk(data)
    [job] = wait_jobs(data, 1, ("done",))
    assert (job["instances"], job["revision"]) == (len(sop_uids(study)), 0), job


def test_destination_down_then_up_results_arrive_once(orthanc_installed, start_node,
                                                       phantom_studies, tmp_path):
    study, data, dest_port = phantom_studies[0], tmp_path / "data", free_port()
    node = start_node(data, dest_port, idle_seconds=0.5,
                      config={"retry_initial_seconds": 0.5, "retry_max_seconds": 2.0})
    sent = storescu(study, node.port)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + RESULT_TIMEOUT
    while True:
        [job] = jobs_of(node_status(data)[0]) or [{}]
        if job.get("reason") and job.get("attempts", 0) >= 1:
            break  # waiting to retry, and saying why
        assert time.monotonic() < deadline, f"no retry reason shown: {job}"
        time.sleep(0.3)
    assert job["state"] not in ("done", "failed"), job

    with Orthanc(dicom_port=dest_port, modalities=NODE_PEER, root=tmp_path) as pacs:
        found = wait_results(pacs, study_uid(study), node)
        wait_jobs(data, 1, ("done",))
        time.sleep(2.5)  # longer than the largest back-off: a second send would show now
        assert_received_once(pacs, found)
        assert {k: len(v) for k, v in results_in(pacs, study_uid(study)).items()} == \
            {"SR": 1, "SEG": 1, "SC": 1}


def test_complete_on_release_sends_results_without_waiting_the_idle_time(pacs, start_node,
                                                                          phantom_studies,
                                                                          tmp_path):
    """storescu sends the study in one association and releases it: with an idle time far
    beyond the test's timeout, only the release can complete the study. The node was asked
    for the Parametric Map too: it arrives beside the three, on the T1 series' frames."""
    study, data = phantom_studies[1], tmp_path / "data"
    node = start_node(data, pacs.dicom_port, idle_seconds=3600,
                      config={"complete_on_release": True, "parametric_map": True})
    sent = storescu(study, node.port)
    assert sent.returncode == 0, sent.stderr
    classes = {**RESULT_CLASSES, "PM": ParametricMapStorage}
    found = wait_results(pacs, study_uid(study), node, classes)
    assert {k: len(v) for k, v in found.items()} == {"SR": 1, "SEG": 1, "SC": 1, "PM": 1}
    [job] = wait_jobs(data, 1, ("done",))
    assert "complete (its association was released)" in node.output()
    pm = pydicom.dcmread(read(pacs, found["PM"][0], tmp_path))
    t1_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
               for f in dicom_files(study)}
    referenced = {str(r.ReferencedSOPInstanceUID) for s in pm.ReferencedSeriesSequence
                  for r in s.ReferencedInstanceSequence}
    assert referenced and referenced <= t1_uids
    assert 0 < int(pm.pixel_array.max()) <= 1000 and pm.ContentQualification == "RESEARCH"
