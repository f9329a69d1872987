"""The node's data folder: atomic instance files named by hashes, the job table's transitions,
crash recovery, the sent log and retention."""
from __future__ import annotations

import io
import sqlite3

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.node.store import STATES, JobStore, uid_key

CANARY = "CANARY^PHI7731"


def instance(study_uid: str, modality: str = "MR", sop_uid: str | None = None) -> Dataset:
    """A 4x4 MR (or CT) image with a PHI canary in the patient module."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage if modality == "MR" else CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = modality, CANARY, "PID-CANARY-7731"
    ds.StudyDescription = "CANARY STUDY DESCRIPTION"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(tmp_path / "data")


def test_instance_is_on_disk_under_hashed_names(store):
    study = generate_uid()
    ds = instance(study)
    outcome, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=100.0)
    assert outcome == "stored"
    path = store.instance_path(study, ds.SOPInstanceUID)
    assert path.is_file() and pydicom.dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    assert path.name == f"{uid_key(ds.SOPInstanceUID)}.dcm"
    names = [p.name for p in store.data.rglob("*")]
    assert not any(study in n or ds.SOPInstanceUID in n or "CANARY" in n for n in names)
    assert not list(store.studies.rglob(".*.tmp"))  # the temporary file was renamed
    job = store.job(job_id)
    assert (job.state, job.instances, job.first_instance_at, job.last_instance_at) == \
        ("receiving", 1, 100.0, 100.0)


def test_duplicate_is_not_counted_twice_and_keeps_the_study_open(store):
    study = generate_uid()
    ds = instance(study)
    store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=1.0)
    outcome, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=5.0)
    assert outcome == "duplicate"
    job = store.job(job_id)
    assert job.instances == 1 and job.last_instance_at == 5.0


def test_idle_study_becomes_complete_then_is_claimed(store):
    study = generate_uid()
    for t in (10.0, 11.0):
        ds = instance(study)
        store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=t)
    assert store.complete_idle(5.0, now=15.9) == []
    [job_id] = store.complete_idle(5.0, now=16.0)
    assert store.job(job_id).state == "complete" and store.job(job_id).instances == 2
    job = store.next_job(now=17.0)
    assert job is not None and job.id == job_id and job.state == "analysing"
    assert job.analysis_started_at == 17.0
    assert store.next_job(now=18.0) is None  # claimed once


def test_instance_during_analysis_reopens_the_job(store):
    study = generate_uid()
    ds = instance(study)
    store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=0.0)
    store.complete_idle(1.0, now=5.0)
    job = store.next_job(now=5.0)
    late = instance(study)
    store.store_instance(encode(late), study, late.SOPInstanceUID, now=6.0)
    assert not store.update(job.id, generation=job.generation, state="sending")
    store.reopen(job, new_revision=False)
    again = store.job(job.id)
    assert (again.state, again.instances, again.revision) == ("receiving", 2, 0)


def test_new_instance_of_a_finished_study_is_a_new_revision(store):
    study = generate_uid()
    ds = instance(study)
    _, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=0.0)
    store.update(job_id, state="done", finished_at=3.0, results=3, sent=3)
    store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=4.0)  # a re-send: ignored
    assert store.job(job_id).state == "done"
    more = instance(study)
    store.store_instance(encode(more), study, more.SOPInstanceUID, now=5.0)
    job = store.job(job_id)
    assert (job.state, job.revision, job.finished_at, job.results, job.sent) == \
        ("receiving", 1, None, None, 0)


def test_recover_after_a_crash(store):
    study = generate_uid()
    first = instance(study)
    _, job_id = store.store_instance(encode(first), study, first.SOPInstanceUID, now=0.0)
    # the crash: a file renamed but not recorded, a half-written temporary file
    orphan = instance(study)
    store.instance_path(study, orphan.SOPInstanceUID).write_bytes(encode(orphan))
    (store.studies / uid_key(study) / ".x.dcm.abc.tmp").write_bytes(b"half")
    other = generate_uid()  # a study whose first instance never reached the table
    lost = instance(other)
    store.instance_path(other, lost.SOPInstanceUID).parent.mkdir(parents=True)
    store.instance_path(other, lost.SOPInstanceUID).write_bytes(encode(lost))
    store.update(job_id, state="analysing")
    counts = JobStore(store.data).recover(now=50.0)
    assert counts == {"temporary_files": 1, "instances_found": 2, "jobs_resumed": 1,
                      "jobs_failed": 0}
    assert not list(store.studies.rglob("*.tmp"))
    job = store.job(job_id)
    assert (job.state, job.instances) == ("complete", 2)
    new = [j for j in store.jobs() if j.id != job_id]
    assert [(j.state, j.instances, j.study_uid) for j in new] == [("receiving", 1, other)]


def test_sending_job_goes_back_to_complete_on_restart(store):
    study = generate_uid()
    ds = instance(study)
    _, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=0.0)
    store.update(job_id, state="sending", results=3)
    assert JobStore(store.data).recover()["jobs_resumed"] == 1
    assert store.job(job_id).state == "complete"


def test_sent_log_is_exact_once_and_recognises_our_results(store):
    study = generate_uid()
    ds = instance(study)
    _, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID)
    result_uid = generate_uid()
    assert not store.was_sent(result_uid)
    store.mark_sent(job_id, result_uid, "1.2.840.10008.5.1.4.1.1.88.33")
    store.mark_sent(job_id, result_uid, "1.2.840.10008.5.1.4.1.1.88.33")
    assert store.was_sent(result_uid) and store.job(job_id).sent == 1
    echo = instance(study, sop_uid=result_uid)  # our SR routed back to us
    assert store.store_instance(encode(echo), study, result_uid)[0] == "ours"
    assert not store.instance_path(study, result_uid).exists()


def test_retention_removes_files_keeps_rows(store):
    study = generate_uid()
    ds = instance(study)
    _, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=0.0)
    store.update(job_id, state="done", finished_at=1000.0)
    assert store.purge(1.0, now=1000.0 + 3600) == []
    assert store.purge(0.0, now=1e9) == []  # 0 keeps everything
    assert store.purge(1.0, now=1000.0 + 86401) == [job_id]
    assert not store.study_folder(store.job(job_id)).exists()
    assert store.job(job_id).purged_at is not None
    # the study sent again stays a duplicate: no second analysis
    assert store.store_instance(encode(ds), study, ds.SOPInstanceUID)[0] == "duplicate"


def test_schema_journal_and_states(store):
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "instances", "sent"} <= tables
    assert STATES == ("receiving", "complete", "analysing", "sending", "done", "failed",
                      "skipped")


def test_readonly_store_needs_an_existing_table(tmp_path):
    with pytest.raises(SpineFXError, match="node.sqlite missing"):
        JobStore(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()


def test_an_analysis_interrupted_three_times_ends_failed(store):
    study = generate_uid()
    ds = instance(study)
    _, job_id = store.store_instance(encode(ds), study, ds.SOPInstanceUID, now=0.0)
    store.complete_idle(0.0, now=1.0)
    for run in (1, 2, 3):
        assert store.next_job(now=float(run)).runs == run  # the process dies in the analysis
        counts = JobStore(store.data).recover(now=10.0)
        assert (counts["jobs_resumed"], counts["jobs_failed"]) == ((1, 0) if run < 3 else (0, 1))
    job = store.job(job_id)
    assert job.state == "failed" and "interrupted 3 times" in job.reason
    more = instance(study)  # new data gives it a fresh start
    store.store_instance(encode(more), study, more.SOPInstanceUID, now=20.0)
    assert (store.job(job_id).state, store.job(job_id).runs) == ("receiving", 0)
