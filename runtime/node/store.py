"""The node's data folder: received instances on disk, the job table in SQLite.

Layout of ``DATA``::

    node.sqlite                        jobs, instances, sent (WAL journal)
    studies/<study key>/<sop key>.dcm  received instances, one folder per study
    results/<study key>/r<revision>/   the result objects of a job, as sent

A key is the sha256 of a UID (first 32 hex digits), so no file or folder name carries a
patient's or a study's identifier. Instances are written atomically (a temporary file in the
same folder, fsync, rename, then the folder fsynced) and recorded in the ``instances`` table
after that: a row always has its file. The files are the truth: :meth:`JobStore.recover`
records files that a crash left without a row.

SQLite: one connection per thread (pynetdicom serves each association in its own thread), WAL
so readers (``spinefx node status``) never block the node, ``synchronous=FULL`` so a committed
state survives a power loss, and every read-modify-write in ``BEGIN IMMEDIATE``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.files import atomic_write_bytes

__all__ = ["FINAL_STATES", "STATES", "Job", "JobStore", "uid_key"]

#: A job's life: receiving -> complete -> analysing -> sending -> done; or skipped (cannot be
#: analysed: not MR, no sagittal T1/T2 pair, ...) or failed (an unexpected error), with reason.
STATES = ("receiving", "complete", "analysing", "sending", "done", "failed", "skipped")
FINAL_STATES = ("done", "failed", "skipped")
DB_NAME = "node.sqlite"
#: a job whose analysis was interrupted this many times (a study that kills the process?)
#: ends failed instead of running again after each restart
MAX_RUNS = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the anonymous job number status shows
    study_key TEXT NOT NULL UNIQUE,        -- uid_key(StudyInstanceUID): the folder name
    study_uid TEXT NOT NULL,               -- for the result seed only; never shown or logged
    state TEXT NOT NULL,
    reason TEXT,                           -- why skipped/failed, or the last send error
    instances INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0,   -- +1 when new instances arrive after results left
    generation INTEGER NOT NULL DEFAULT 0, -- +1 per new instance (the worker notices arrivals)
    attempts INTEGER NOT NULL DEFAULT 0,   -- failed sends of this revision
    next_attempt_at REAL,                  -- back-off: not before this time
    results INTEGER,                       -- result objects of this revision
    results_generation INTEGER,            -- the generation they were built from
    runs INTEGER NOT NULL DEFAULT 0,       -- analyses started (a crash loop ends failed)
    sent INTEGER NOT NULL DEFAULT 0,       -- of them confirmed by the destination
    first_instance_at REAL, last_instance_at REAL, completed_at REAL,
    analysis_started_at REAL, analysis_seconds REAL, finished_at REAL, purged_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS instances (
    sop_key TEXT PRIMARY KEY,              -- uid_key(SOPInstanceUID): the file name
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    sop_instance_uid TEXT PRIMARY KEY,     -- a result object the destination confirmed
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    sop_class_uid TEXT,
    sent_at REAL NOT NULL
);
"""


def uid_key(uid: str) -> str:
    """A file-name-safe stand-in for a UID that reveals nothing about it."""
    return hashlib.sha256(uid.strip().encode("ascii", "replace")).hexdigest()[:32]


@dataclass(frozen=True)
class Job:
    """One study's row of the job table."""
    id: int
    study_key: str
    study_uid: str
    state: str
    reason: str | None
    instances: int
    revision: int
    generation: int
    attempts: int
    next_attempt_at: float | None
    results: int | None
    results_generation: int | None
    runs: int
    sent: int
    first_instance_at: float | None
    last_instance_at: float | None
    completed_at: float | None
    analysis_started_at: float | None
    analysis_seconds: float | None
    finished_at: float | None
    purged_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the entry lives in the directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename still holds
        pass
    finally:
        os.close(fd)


class JobStore:
    """The data folder of one node. Thread-safe: each thread gets its own connection."""

    def __init__(self, data: str | os.PathLike, readonly: bool = False):
        self.data = Path(data)
        self.db_path = self.data / DB_NAME
        self.studies = self.data / "studies"
        self.results = self.data / "results"
        self.readonly = readonly
        self._local = threading.local()
        if readonly:
            if not self.db_path.is_file():
                raise SpineFXError(f"no node data here ({DB_NAME} missing)", self.data)
        else:
            for folder in (self.data, self.studies, self.results):
                folder.mkdir(parents=True, exist_ok=True)
            self._connection().executescript(SCHEMA)

    # -- connections -------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.readonly:
                conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30,
                                       isolation_level=None)
            else:
                conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the database lock from its first read."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- receiving ---------------------------------------------------------------------
    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.studies / uid_key(study_uid) / f"{uid_key(sop_uid)}.dcm"

    def store_instance(self, encoded: bytes, study_uid: str, sop_uid: str,
                       now: float | None = None) -> tuple[str, int | None]:
        """Keep one instance (a DICOM file's bytes) of a study; returns (outcome, job id).

        ``stored``: new, durable on disk and recorded; ``duplicate``: held already (a sender's
        retry), nothing written; ``ours``: one of our own results coming back (a routing
        loop), not kept. Returns only once the file is fsynced, so a C-STORE response sent
        after it never acknowledges an instance a crash could lose."""
        now = time.time() if now is None else now
        conn = self._connection()
        if conn.execute("SELECT 1 FROM sent WHERE sop_instance_uid = ?", (sop_uid,)).fetchone():
            return "ours", None
        sop_key = uid_key(sop_uid)
        row = conn.execute("SELECT job_id FROM instances WHERE sop_key = ?",
                           (sop_key,)).fetchone()
        if row is None:
            path = self.instance_path(study_uid, sop_uid)
            atomic_write_bytes(path, encoded)
            _fsync_dir(path.parent)
        return self._record_instance(study_uid, sop_key, now)

    def _record_instance(self, study_uid: str, sop_key: str, now: float
                         ) -> tuple[str, int | None]:
        with self._write() as conn:
            job = conn.execute("SELECT * FROM jobs WHERE study_key = ?",
                               (uid_key(study_uid),)).fetchone()
            if job is None:
                job_id = conn.execute(
                    "INSERT INTO jobs (study_key, study_uid, state, first_instance_at) "
                    "VALUES (?, ?, 'receiving', ?)",
                    (uid_key(study_uid), study_uid.strip(), now)).lastrowid
                state = "receiving"
            else:
                job_id, state = job["id"], job["state"]
            new = conn.execute("INSERT OR IGNORE INTO instances VALUES (?, ?, ?)",
                               (sop_key, job_id, now)).rowcount == 1
            if not new:
                if state == "receiving":  # the sender is still at it: keep the study open
                    conn.execute("UPDATE jobs SET last_instance_at = ? WHERE id = ?",
                                 (now, job_id))
                return "duplicate", job_id
            conn.execute(self._arrival_sql(state), (now, job_id))
            return "stored", job_id

    @staticmethod
    def _arrival_sql(state: str) -> str:
        """How a new instance changes its job, by the job's state."""
        common = "instances = instances + 1, generation = generation + 1, last_instance_at = ?"
        if state in FINAL_STATES:  # more of a finished study: analyse again, new result UIDs
            return (f"UPDATE jobs SET {common}, state = 'receiving', revision = revision + 1, "
                    "reason = NULL, attempts = 0, next_attempt_at = NULL, results = NULL, "
                    "runs = 0, sent = 0, completed_at = NULL, analysis_started_at = NULL, "
                    "analysis_seconds = NULL, finished_at = NULL WHERE id = ?")
        if state == "complete":  # not started yet: wait for the rest
            return f"UPDATE jobs SET {common}, state = 'receiving' WHERE id = ?"
        # receiving; or analysing/sending, where the worker sees the generation change
        return f"UPDATE jobs SET {common} WHERE id = ?"

    # -- recovery ----------------------------------------------------------------------
    def recover(self, now: float | None = None) -> dict[str, int]:
        """After a start (perhaps after a crash): remove half-written temporary files, record
        instance files that have no row, and put interrupted jobs (analysing, sending) back
        to complete so they run again (deterministic UIDs + the sent log keep it exact-once).
        """
        now = time.time() if now is None else now
        counts = {"temporary_files": 0, "instances_found": 0, "jobs_resumed": 0,
                  "jobs_failed": 0}
        for tmp in list(self.studies.glob("*/.*.tmp")) + list(self.results.glob("*/*/.*.tmp")):
            tmp.unlink(missing_ok=True)
            counts["temporary_files"] += 1
        conn = self._connection()
        known = {r[0] for r in conn.execute("SELECT sop_key FROM instances")}
        for folder in sorted(p for p in self.studies.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("*.dcm")):
                if path.stem in known:
                    continue
                study_uid = self._study_uid_of(folder.name, path)
                if study_uid is not None:
                    self._record_instance(study_uid, path.stem, now)
                    counts["instances_found"] += 1
        with self._write() as conn:
            counts["jobs_failed"] = conn.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, reason = 'the analysis "
                "was interrupted ' || runs || ' times (the node stopped or crashed during "
                "it); not tried again' WHERE state = 'analysing' AND runs >= ?",
                (now, MAX_RUNS)).rowcount
            counts["jobs_resumed"] = conn.execute(
                "UPDATE jobs SET state = 'complete', completed_at = COALESCE(completed_at, ?) "
                "WHERE state IN ('analysing', 'sending')", (now,)).rowcount
        return counts

    def _study_uid_of(self, study_key: str, path: Path) -> str | None:
        row = self._connection().execute("SELECT study_uid FROM jobs WHERE study_key = ?",
                                         (study_key,)).fetchone()
        if row is not None:
            return str(row[0])
        import pydicom

        try:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True,
                                      specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
        except Exception:  # noqa: BLE001 - a file we wrote and cannot read: leave it be
            return None
        return uid if uid_key(uid) == study_key else None

    # -- the worker's transitions --------------------------------------------------------
    def complete_idle(self, idle_seconds: float, now: float | None = None) -> list[int]:
        """Receiving jobs without a new instance for ``idle_seconds`` become complete."""
        now = time.time() if now is None else now
        due = "state = 'receiving' AND last_instance_at <= ?"
        # a plain read first: the worker asks often, and a write lock would stall receivers
        if self._connection().execute(f"SELECT 1 FROM jobs WHERE {due} LIMIT 1",
                                      (now - idle_seconds,)).fetchone() is None:
            return []
        with self._write() as conn:
            ids = [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE {due}",
                                              (now - idle_seconds,))]
            conn.executemany("UPDATE jobs SET state = 'complete', completed_at = ? WHERE id = ?",
                             [(now, i) for i in ids])
        return ids

    def complete_studies(self, study_uids: Iterable[str], now: float | None = None
                         ) -> list[int]:
        """The receiving jobs of these studies become complete now (their sender said it is
        done: the association that brought them was released)."""
        now = time.time() if now is None else now
        keys = sorted({uid_key(uid) for uid in study_uids})
        if not keys:
            return []
        marks = ", ".join("?" for _ in keys)
        with self._write() as conn:
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM jobs WHERE state = 'receiving' AND study_key IN ({marks})",
                keys)]
            conn.executemany("UPDATE jobs SET state = 'complete', completed_at = ? WHERE id = ?",
                             [(now, i) for i in ids])
        return ids

    def next_job(self, now: float | None = None) -> Job | None:
        """The next thing to do: a send whose back-off has passed, else the oldest complete
        job (claimed: set to analysing, with its start time)."""
        now = time.time() if now is None else now
        if self._connection().execute(
                "SELECT 1 FROM jobs WHERE state = 'complete' OR (state = 'sending' AND "
                "COALESCE(next_attempt_at, 0) <= ?) LIMIT 1", (now,)).fetchone() is None:
            return None
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE state = 'sending' AND "
                               "COALESCE(next_attempt_at, 0) <= ? ORDER BY next_attempt_at, id "
                               "LIMIT 1", (now,)).fetchone()
            if row is not None:
                return Job.from_row(row)
            row = conn.execute("SELECT * FROM jobs WHERE state = 'complete' "
                               "ORDER BY completed_at, id LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute("UPDATE jobs SET state = 'analysing', runs = runs + 1, "
                         "analysis_started_at = ?, "
                         "reason = NULL WHERE id = ?", (now, row["id"]))
        return self.job(row["id"])

    def job(self, job_id: int) -> Job:
        row = self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return Job.from_row(row)

    def has_unfinished_jobs(self) -> bool:
        """Any job not in a final state (a study arriving, waiting or in work)."""
        marks = ", ".join("?" for _ in FINAL_STATES)
        return self._connection().execute(
            f"SELECT 1 FROM jobs WHERE state NOT IN ({marks}) LIMIT 1",
            FINAL_STATES).fetchone() is not None

    def jobs(self) -> list[Job]:
        return [Job.from_row(r) for r in self._connection().execute(
            "SELECT * FROM jobs ORDER BY id")]

    def update(self, job_id: int, generation: int | None = None, **values: Any) -> bool:
        """Set columns of a job. With ``generation``: only if no instance arrived since the
        worker read that generation (else nothing changes and False comes back)."""
        unknown = set(values) - {f.name for f in fields(Job)}
        if unknown or not values:
            raise ValueError(f"cannot update {sorted(unknown) or 'nothing'}")
        sets = ", ".join(f"{k} = ?" for k in values)
        sql, params = f"UPDATE jobs SET {sets} WHERE id = ?", [*values.values(), job_id]
        if generation is not None:
            sql, params = sql + " AND generation = ?", [*params, generation]
        with self._write() as conn:
            return conn.execute(sql, params).rowcount == 1

    def reopen(self, job: Job, new_revision: bool) -> None:
        """New instances arrived while the worker had the job: receive again (a new revision
        when results of the old one may have left already)."""
        bump = ", revision = revision + 1, sent = 0, attempts = 0" if new_revision else ""
        with self._write() as conn:
            conn.execute(f"UPDATE jobs SET state = 'receiving', results = NULL, runs = 0, "
                         f"completed_at = NULL, analysis_started_at = NULL{bump} WHERE id = ?",
                         (job.id,))

    # -- the sent log --------------------------------------------------------------------
    def was_sent(self, sop_instance_uid: str) -> bool:
        return self._connection().execute("SELECT 1 FROM sent WHERE sop_instance_uid = ?",
                                          (sop_instance_uid,)).fetchone() is not None

    def mark_sent(self, job_id: int, sop_instance_uid: str, sop_class_uid: str,
                  now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._write() as conn:
            if conn.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?)",
                            (sop_instance_uid, job_id, sop_class_uid, now)).rowcount:
                conn.execute("UPDATE jobs SET sent = sent + 1 WHERE id = ?", (job_id,))

    # -- folders and retention -------------------------------------------------------------
    def study_folder(self, job: Job) -> Path:
        return self.studies / job.study_key

    def results_folder(self, job: Job) -> Path:
        return self.results / job.study_key / f"r{job.revision}"

    def purge(self, retention_days: float, now: float | None = None) -> list[int]:
        """Delete the instances and results of jobs finished more than ``retention_days``
        ago (0: keep everything). The rows stay, so a re-sent study stays a duplicate."""
        now = time.time() if now is None else now
        if retention_days <= 0:
            return []
        cutoff = now - retention_days * 86400.0
        rows = self._connection().execute(
            "SELECT * FROM jobs WHERE state IN ('done', 'failed', 'skipped') AND "
            "purged_at IS NULL AND finished_at <= ?", (cutoff,)).fetchall()
        purged = []
        for job in map(Job.from_row, rows):
            for folder in (self.study_folder(job), self.results / job.study_key):
                shutil.rmtree(folder, ignore_errors=True)
            if self.update(job.id, generation=job.generation, purged_at=now):
                purged.append(job.id)
        return purged
