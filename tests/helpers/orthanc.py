"""Test helper: a real PACS, Debian's Orthanc, on loopback with a throw-away configuration.

    with Orthanc(modalities={"node": ("SPINEFX", "127.0.0.1", 11112)}) as pacs:
        pacs.study_uids(); pacs.count_sop_class(COMPREHENSIVE_SR, study_uid)

Each instance gets its own folder (storage, index, log, config), free DICOM and HTTP ports on
127.0.0.1 (or a DICOM port the caller names: a destination that comes up late), no HTTP
authentication (the HTTP port is bound to loopback and ``RemoteAccessAllowed`` is false, so
nothing off this machine can reach it) and no plugins. ``DicomModalities`` names the peers it
may send to (C-STORE SCU) and accepts associations from; storage is accepted from any calling
AE title, the way a PACS in front of a scanner usually is. :meth:`stop` ends the server and
removes the folder. Only the Python standard library is used (urllib, not requests).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
RECEIVED_MARK = "spinefx-received "
# Orthanc's built-in Lua (not a plugin) sees every C-STORE before storage, duplicates included
# (a second copy of a stored instance leaves no trace in /changes): the log line lets a test
# count how many times each SOP instance arrived, so "sent once" can fail.
RECEIVED_FILTER_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
   print('{RECEIVED_MARK}' .. dicom.SOPInstanceUID)
   return true
end
"""


def orthanc_binary() -> str | None:
    """The Orthanc executable (Debian installs it in /usr/sbin, often off a user's PATH)."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def free_port() -> int:
    """A TCP port nothing listens on right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class OrthancError(RuntimeError):
    """Orthanc did not start, or a REST call failed (the message carries its log's tail)."""


class Orthanc:
    """One Orthanc server; a context manager (``start`` on enter, ``stop`` on exit)."""

    def __init__(self, aet: str = "ORTHANC", dicom_port: int | None = None,
                 modalities: dict[str, tuple[str, str, int]] | None = None,
                 root: Path | None = None) -> None:
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.folder = Path(tempfile.mkdtemp(prefix="orthanc-", dir=root))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "spinefx-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,   # loopback only: why no authentication is needed
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,  # the node's C-STORE is accepted from its own AE
            "DicomCheckModalityHost": False,
            "DicomModalities": {name: list(peer) for name, peer in self.modalities.items()},
            "DicomModalitiesInDatabase": False,
            "SaveJobs": False,
            "StorageCompression": False,
            "HttpCompressionEnabled": False,
            "LuaScripts": [str(self.folder / "received.lua")],
        }

    def start(self, timeout: float = 30.0) -> Orthanc:
        binary = orthanc_binary()
        if binary is None:
            raise OrthancError("Orthanc is not installed (apt-get install orthanc)")
        (self.folder / "received.lua").write_text(RECEIVED_FILTER_LUA)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        log = self.log_path.open("ab")
        # its own process group: stop() signals the server and nothing else
        self.process = subprocess.Popen([binary, str(config)], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, cwd=self.folder,
                                        start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                self.get("/system")
                if port_open(self.dicom_port):
                    return
            except (OSError, OrthancError):
                pass
            time.sleep(0.1)
        self.stop()
        raise OrthancError(f"Orthanc not ready after {timeout:.0f} s: {self.log_tail()}")

    def stop(self, remove: bool = True) -> None:
        """End the server (SIGTERM, then SIGKILL after 10 s); remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def received(self) -> Counter[str]:
        """SOP Instance UID -> how many times it was received (C-STORE or REST), duplicates
        included; read from the log the Lua filter writes."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return Counter()
        return Counter(line.split(RECEIVED_MARK, 1)[1].strip()
                       for line in lines if RECEIVED_MARK in line)

    # --- REST ---------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise OrthancError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post(self, path: str, payload: Any) -> Any:
        raw = self.request("POST", path, json.dumps(payload).encode())
        return json.loads(raw) if raw.strip() else None

    def studies(self) -> list[str]:
        """Orthanc's ids of every study it holds."""
        return list(self.get("/studies"))

    def study_uids(self) -> dict[str, str]:
        """StudyInstanceUID -> Orthanc study id."""
        return {self.get(f"/studies/{sid}")["MainDicomTags"]["StudyInstanceUID"]: sid
                for sid in self.studies()}

    def series(self, study_id: str | None = None) -> list[str]:
        if study_id is None:
            return list(self.get("/series"))
        return list(self.get(f"/studies/{study_id}")["Series"])

    def instances(self, study_id: str | None = None) -> list[str]:
        if study_id is None:
            return list(self.get("/instances"))
        return [i["ID"] for i in self.get(f"/studies/{study_id}/instances")]

    def instance_file(self, instance_id: str) -> bytes:
        """The instance's DICOM file, byte for byte as Orthanc stored it."""
        return self.request("GET", f"/instances/{instance_id}/file")

    def sop_class(self, instance_id: str) -> str:
        return self.request("GET", f"/instances/{instance_id}/metadata/SopClassUid").decode()

    def instances_of_class(self, sop_class_uid: str, study_uid: str | None = None) -> list[str]:
        """Ids of the instances of that SOP class (in that study when ``study_uid`` is given)."""
        if study_uid is None:
            ids = self.instances()
        else:
            study_id = self.study_uids().get(study_uid)
            ids = [] if study_id is None else self.instances(study_id)
        return [i for i in ids if self.sop_class(i) == sop_class_uid]

    def count_sop_class(self, sop_class_uid: str, study_uid: str | None = None) -> int:
        return len(self.instances_of_class(sop_class_uid, study_uid))

    def upload(self, path: Path) -> str:
        """Store one DICOM file over REST; its Orthanc instance id."""
        answer = json.loads(self.request("POST", "/instances", Path(path).read_bytes(),
                                         "application/dicom"))
        return str(answer["ID"])

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or replace) a peer at run time: ``DicomModalities`` without a restart."""
        self.request("PUT", f"/modalities/{name}",
                     json.dumps({"AET": aet, "Host": host, "Port": port}).encode())
        self.modalities[name] = (aet, host, port)

    def send(self, modality: str, resource_ids: list[str]) -> None:
        """C-STORE those resources (studies, series or instances) to a declared modality."""
        self.post(f"/modalities/{modality}/store", {"Resources": resource_ids,
                                                    "Synchronous": True})

    def delete_all(self) -> None:
        """Empty the archive (one server per test module; each test starts from nothing)."""
        for study_id in self.studies():
            self.request("DELETE", f"/studies/{study_id}")

    def wait_for(self, predicate: Any, timeout: float, interval: float = 0.2) -> bool:
        """Poll ``predicate()`` until it is true or ``timeout`` seconds pass; its last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
