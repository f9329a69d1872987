"""Teaching sessions kept server-side: one SQLite file in a data folder.

The folder is ``$SPINEFX_TEACHING_DATA``, else ``$XDG_DATA_HOME/spinefx/teaching``
(``~/.local/share/spinefx/teaching``); nothing is written there until a teacher creates a
session or a resident joins one. It holds residents' names and calls (not PHI, but private to
the teaching room): the folder is created owner-only.

Tables: ``sessions`` (code, title, teacher key, the case ids at creation), ``residents``
(session, name; a name is unique within a session after trimming, case-insensitively) and
``reads`` (one committed call per resident and case). Every write is one ``BEGIN IMMEDIATE``
transaction on its own connection (WAL journal), so writes are atomic and gradio's worker
threads never share a connection.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Iterator, Sequence

from spinefx.runtime import SpineFXError
from spinefx.runtime.files import atomic_write_text

from .teaching import CALLS, Read

# Letters only, without I, L and O (read as 1 and 0): easy to say aloud and to type.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 6
KEY_LENGTH = 8
MAX_NAME = 40
DB_NAME = "teaching.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    code TEXT PRIMARY KEY, title TEXT NOT NULL, teacher_key TEXT NOT NULL,
    created REAL NOT NULL, case_ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS residents (
    id INTEGER PRIMARY KEY, session TEXT NOT NULL REFERENCES sessions(code),
    name TEXT NOT NULL, name_key TEXT NOT NULL, joined REAL NOT NULL,
    UNIQUE (session, name_key));
CREATE TABLE IF NOT EXISTS reads (
    id INTEGER PRIMARY KEY, resident INTEGER NOT NULL REFERENCES residents(id),
    case_id TEXT NOT NULL, call TEXT NOT NULL, truth TEXT NOT NULL,
    features_seen TEXT NOT NULL, features_truth TEXT NOT NULL,
    model_probability REAL, model_label TEXT, read_at REAL NOT NULL,
    UNIQUE (resident, case_id));
"""


def default_data_dir() -> Path:
    env = os.environ.get("SPINEFX_TEACHING_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "spinefx" / "teaching"


@dataclass(frozen=True)
class SessionInfo:
    code: str
    title: str
    created: float
    case_ids: tuple[str, ...]
    teacher_key: str = ""


@dataclass(frozen=True)
class Resident:
    id: int
    session: str
    name: str


def normalise_name(name: str | None) -> str:
    """A resident's name as stored: whitespace collapsed, control characters dropped, at most
    40 characters. Blank is refused: blank names would pool different residents' reads."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", name or "")
    text = re.sub(r"\s+", " ", text).strip()[:MAX_NAME].strip()
    if not text:
        raise SpineFXError("enter your name or initials: each resident needs their own")
    return text


def name_key(name: str) -> str:
    """Names that differ only in case or spacing are the same resident."""
    return normalise_name(name).casefold()


def normalise_code(code: str | None) -> str:
    text = re.sub(r"[\s\-]", "", code or "").upper()
    if not text:
        raise SpineFXError("enter the session code your teacher gave you")
    return text


def case_order(code: str, name: str, case_ids: Sequence[str]) -> list[str]:
    """This resident's order of the session's cases, the same on every reload and machine:
    cases sorted by a hash of (session code, resident's name case-insensitively, case id).
    A case added to the session later slots in without reordering the others."""
    def rank(case_id: str) -> bytes:
        return hashlib.sha256(f"{code}\n{name_key(name)}\n{case_id}".encode()).digest()
    return sorted(case_ids, key=rank)


def _random_code(length: int) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


class TeachingStore:
    """Sessions, residents and reads in ``folder/teaching.sqlite3`` (created on first use)."""

    def __init__(self, folder: str | PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_data_dir()
        self.path = self.folder / DB_NAME
        self._schema_lock = threading.Lock()
        self._ready = False

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 30000")
        if not self._ready:
            with self._schema_lock:
                con.execute("PRAGMA journal_mode = WAL")
                con.executescript(SCHEMA)
                self._ready = True
        con.execute("PRAGMA foreign_keys = ON")
        return con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: all of it is committed, or (on any error) none of it."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    # -- sessions ----------------------------------------------------------------------------
    def create_session(self, case_ids: Sequence[str], title: str = "") -> SessionInfo:
        if not case_ids:
            raise SpineFXError("a teaching session needs at least one case")
        title = re.sub(r"\s+", " ", title or "").strip()[:80]
        key = _random_code(KEY_LENGTH)
        for _ in range(50):   # 23^6 = 148 million codes: a collision is rare, not impossible
            code, created = _random_code(CODE_LENGTH), time.time()
            try:
                with self._transaction() as con:
                    con.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                                (code, title, key, created, json.dumps(list(case_ids))))
                return SessionInfo(code, title, created, tuple(case_ids), key)
            except sqlite3.IntegrityError:
                continue
        raise SpineFXError("could not find a free session code; try again")

    def session(self, code: str | None) -> SessionInfo:
        code = normalise_code(code)
        with self._reading() as con:
            row = con.execute("SELECT code, title, created, case_ids, teacher_key FROM sessions "
                              "WHERE code = ?", (code,)).fetchone()
        if row is None:
            raise SpineFXError(f"no teaching session has the code {code}: check it with your "
                               "teacher")
        return SessionInfo(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4])

    def teacher_session(self, code: str | None, key: str | None) -> SessionInfo:
        """The session, if ``key`` is its teacher key (the dashboard shows every resident's
        results, so the code residents join with does not open it)."""
        info = self.session(code)
        if not secrets.compare_digest((key or "").strip().upper(), info.teacher_key):
            raise SpineFXError(f"that is not the teacher key of session {info.code}")
        return info

    def add_case(self, code: str, case_id: str) -> SessionInfo:
        """Append a case to a session's list (an instructor's new case); read-modify-write in
        one transaction, so two additions at once both land."""
        code = normalise_code(code)
        with self._transaction() as con:
            row = con.execute("SELECT case_ids FROM sessions WHERE code = ?", (code,)).fetchone()
            if row is None:
                raise SpineFXError(f"no teaching session has the code {code}")
            ids = json.loads(row[0])
            if case_id not in ids:
                ids.append(case_id)
                con.execute("UPDATE sessions SET case_ids = ? WHERE code = ?",
                            (json.dumps(ids), code))
        return self.session(code)

    # -- residents ---------------------------------------------------------------------------
    def join(self, code: str | None, name: str | None) -> tuple[Resident, bool]:
        """(the resident, resumed): a name already in the session is that resident again (a
        reload, a second tab, another machine), so their progress continues."""
        info = self.session(code)
        shown = normalise_name(name)
        with self._transaction() as con:
            row = con.execute("SELECT id, name FROM residents WHERE session = ? AND name_key = ?",
                              (info.code, name_key(shown))).fetchone()
            if row is not None:
                return Resident(row[0], info.code, row[1]), True
            cur = con.execute("INSERT INTO residents (session, name, name_key, joined) "
                              "VALUES (?, ?, ?, ?)",
                              (info.code, shown, name_key(shown), time.time()))
            assert cur.lastrowid is not None
            return Resident(cur.lastrowid, info.code, shown), False

    def residents(self, code: str) -> list[Resident]:
        with self._reading() as con:
            rows = con.execute("SELECT id, session, name FROM residents WHERE session = ? "
                               "ORDER BY joined, id", (normalise_code(code),)).fetchall()
        return [Resident(*row) for row in rows]

    # -- reads -------------------------------------------------------------------------------
    def record_read(self, resident: Resident, read: Read) -> None:
        if read.call not in CALLS:
            raise SpineFXError("commit a call first: benign or malignant")
        try:
            with self._transaction() as con:
                con.execute(
                    "INSERT INTO reads (resident, case_id, call, truth, features_seen, "
                    "features_truth, model_probability, model_label, read_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (resident.id, read.case_id, read.call, read.truth,
                     json.dumps(read.features_seen), json.dumps(read.features_truth),
                     read.model_probability, read.model_label, time.time()))
        except sqlite3.IntegrityError:
            raise SpineFXError(f"case {read.case_id} is already committed by {resident.name} "
                               "(in another tab?): press 'Start / next case'") from None

    def reads_of(self, resident: Resident) -> list[Read]:
        with self._reading() as con:
            rows = con.execute(f"SELECT {_READ_COLUMNS} FROM reads WHERE resident = ? "
                               "ORDER BY id", (resident.id,)).fetchall()
        return [_read(row) for row in rows]

    def session_reads(self, code: str) -> list[tuple[str, Read]]:
        """(resident name, read) for every read of the session, residents in joining order."""
        with self._reading() as con:
            rows = con.execute(
                f"SELECT residents.name, {_READ_COLUMNS} FROM reads "
                "JOIN residents ON residents.id = reads.resident WHERE residents.session = ? "
                "ORDER BY residents.joined, residents.id, reads.id",
                (normalise_code(code),)).fetchall()
        return [(row[0], _read(row[1:])) for row in rows]

    # -- files -------------------------------------------------------------------------------
    @property
    def library_dir(self) -> Path:
        """The instructor's own teaching cases (see ``teaching_cases.py``)."""
        return self.folder / "library"

    @property
    def exports_dir(self) -> Path:
        """Where CSV downloads are written (served by gradio as static files: each lies in a
        folder named by an unguessable token, and nothing else lives here)."""
        return self.folder / "exports"

    def export(self, token: str, filename: str, text: str) -> Path:
        """Write (replace, atomically) ``exports/<token>/<filename>``."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,80}", token):
            raise ValueError(f"bad export token {token!r}")
        folder = self.exports_dir / token
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return atomic_write_text(folder / filename, text)


_READ_COLUMNS = ("reads.case_id, reads.call, reads.truth, reads.features_seen, "
                 "reads.features_truth, reads.model_probability, reads.model_label")


def _read(row: Sequence) -> Read:
    return Read(case_id=row[0], call=row[1], truth=row[2], features_seen=json.loads(row[3]),
                features_truth=json.loads(row[4]), model_probability=row[5],
                model_label=row[6])
