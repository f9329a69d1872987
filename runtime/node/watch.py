"""Watch-folder mode: DICOM files dropped into a folder are taken in like received instances.

For sites that copy files instead of sending them. A file is taken once it has stopped
changing (same size and modification time on two looks, and older than ``settle_seconds``),
so a copy in progress is never read half-way. It is removed from the drop folder only after
:meth:`JobStore.store_instance` has it fsynced in the data folder; a crash in between leaves
it in the drop folder, and taking it again is a harmless duplicate. Files that are not DICOM
(or lack the UIDs) move to ``<watch>/.rejected/``, so they are not read again and again.
Folders and files whose names start with a dot are ignored (temporary files of copiers).
"""
from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path

from .store import JobStore

__all__ = ["FolderWatcher"]

log = logging.getLogger("spinefx.node")

REJECTED = ".rejected"


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class FolderWatcher:
    """Polls ``folder`` (and its sub-folders) and feeds settled files to ``store``."""

    def __init__(self, folder: str | os.PathLike, store: JobStore, poll_seconds: float = 0.5,
                 settle_seconds: float = 1.0):
        self.folder = Path(folder)
        self.store = store
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self._seen: dict[Path, tuple[int, int]] = {}
        self.folder.mkdir(parents=True, exist_ok=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except Exception as exc:  # noqa: BLE001 - the node must keep running
                log.error("watch folder: %s (will retry)", type(exc).__name__)
            stop.wait(self.poll_seconds)
        self.store.close()

    def _candidates(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
        return found

    def scan(self, now: float | None = None) -> int:
        """One look at the folder; returns how many files were taken in."""
        now = time.time() if now is None else now
        taken = 0
        current = self._candidates()
        for path in current:
            signature = _signature(path)
            if signature is None:
                continue
            settled = (self._seen.get(path) == signature
                       and now - signature[1] / 1e9 >= self.settle_seconds)
            self._seen[path] = signature
            if settled and self.take(path):
                taken += 1
        self._seen = {p: s for p, s in self._seen.items() if p in set(current) and p.exists()}
        return taken

    def take(self, path: Path) -> bool:
        """Store one settled file, then remove it; non-DICOM files go to .rejected/."""
        import pydicom

        try:
            data = path.read_bytes()
        except OSError:
            return False  # gone or unreadable for now: the next look tries again
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
            sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        except Exception:  # noqa: BLE001 - not DICOM (or broken): set aside
            study_uid = sop_uid = ""
        if study_uid and sop_uid:
            try:
                data = _as_part10(data)
            except Exception:  # noqa: BLE001 - no transfer syntax to write it with
                study_uid = ""
        if not study_uid or not sop_uid:
            self._reject(path)
            return False
        try:
            self.store.store_instance(data, study_uid, sop_uid)
        except OSError as exc:
            log.error("watch folder: cannot store a file (%s)", type(exc).__name__)
            return False
        path.unlink(missing_ok=True)
        self._seen.pop(path, None)
        return True

    def _reject(self, path: Path) -> None:
        target = self.folder / REJECTED / path.relative_to(self.folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:
            return
        self._seen.pop(path, None)
        log.warning("watch folder: a file is not a DICOM instance with Study and SOP "
                    "Instance UIDs; moved to %s", REJECTED)


def _as_part10(data: bytes) -> bytes:
    """Files without the DICOM preamble and file meta get them (the analysis reads files)."""
    if len(data) > 132 and data[128:132] == b"DICM":
        return data
    import pydicom

    full = pydicom.dcmread(io.BytesIO(data), force=True)
    buf = io.BytesIO()
    full.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
