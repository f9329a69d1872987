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

Beside it, the two programs the node's PACS tests and ``benchmarks/node.py`` put around it:
dcmtk's ``storescu`` (the scanner: :func:`storescu`, :func:`acknowledged_files`) and
``spinefx node`` as a subprocess (:class:`NodeProcess`, :func:`node_status`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom

NODE_AET = "SPINEFX"
SCANNER_AET = "SCANNER"
#: Orthanc takes C-STORE only from declared AE titles: declare the node's. The port matters
#: only for Orthanc sending to the node (``add_modality`` sets the real one then).
NODE_PEER = {"node": (NODE_AET, "127.0.0.1", 104)}
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


def dcmtk_tool(name: str) -> str | None:
    """dcmtk's executable ``name`` on PATH: the first that is a compiled program. An activated
    virtualenv puts pynetdicom's Python script of the same name (``storescu``, other options)
    first on PATH, so a plain ``shutil.which`` would find that one."""
    for folder in os.get_exec_path():
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return str(candidate)
    return None


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
                 root: Path | None = None, accept_unknown: bool = False) -> None:
        self.aet = aet
        self.accept_unknown = accept_unknown
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.folder = Path(tempfile.mkdtemp(prefix="orthanc-", dir=root))
        self.process: subprocess.Popen[bytes] | None = None
        self._received_from = 0  # log offset: received() counts what arrived after it

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
            # C-STORE only from the declared modalities' AE titles (any port, loopback): a
            # node that calls with another AE title than its own is refused, as by a PACS
            "DicomAlwaysAllowStore": self.accept_unknown,
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
            with self.log_path.open("rb") as log:
                log.seek(self._received_from)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return Counter()
        return Counter(line.split(RECEIVED_MARK, 1)[1].strip()
                       for line in lines if RECEIVED_MARK in line)

    def reset_received(self) -> None:
        """From now on :meth:`received` counts only what arrives after this call."""
        self._received_from = self.log_path.stat().st_size if self.log_path.exists() else 0

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
        """Poll ``predicate()`` until it is true (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True


def dicom_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob("*.dcm"))


def study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True).StudyInstanceUID)


# --- sending ----------------------------------------------------------------------------------
def storescu_command(folder: Path, port: int, calling: str = SCANNER_AET,
                     called: str = NODE_AET) -> list[str]:
    """dcmtk's storescu sending every .dcm under ``folder`` in one association (-v: one
    'Received Store Response' line per instance, which tests read)."""
    binary = dcmtk_tool("storescu")
    if binary is None:
        raise FileNotFoundError("dcmtk's storescu is not installed (apt-get install dcmtk)")
    return [binary, "-v", "-aet", calling, "-aec", called, "+sd", "+r", "+sp", "*.dcm",
            "127.0.0.1", str(port), str(folder)]


def storescu(folder: Path, port: int, calling: str = SCANNER_AET,
             called: str = NODE_AET, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(storescu_command(folder, port, calling, called), capture_output=True,
                          text=True, timeout=timeout)


def acknowledged_files(storescu_log: str) -> list[Path]:
    """The files storescu -v saw a successful C-STORE response for."""
    acked, current = [], None
    for line in storescu_log.splitlines():
        if "Sending file: " in line:
            current = Path(line.split("Sending file: ", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    return acked


# --- the node ---------------------------------------------------------------------------------
class NodeProcess:
    """``python -m spinefx node ...`` in its own process group; stdout+stderr to ``log``."""

    def __init__(self, data: Path, dest_port: int, log: Path, port: int | None = None,
                 allow: tuple[str, ...] = (), idle_seconds: float = 1.0,
                 config: dict[str, Any] | None = None, dest_aet: str = "ORTHANC") -> None:
        self.data, self.log = data, log
        self.port = port or free_port()
        self.command = [sys.executable, "-m", "spinefx", "node", "--data", str(data),
                        "--port", str(self.port), "--ae-title", NODE_AET,
                        "--dest", f"{dest_aet}@127.0.0.1:{dest_port}",
                        "--idle-seconds", str(idle_seconds)]
        if allow:
            self.command += ["--allow", ",".join(allow)]
        if config:
            config_file = log.with_suffix(".config.json")
            config_file.write_text(json.dumps(config))
            self.command += ["--config", str(config_file)]
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0  # where this run's output starts in the shared log

    def spawn(self) -> NodeProcess:
        """Start the process and return at once (a benchmark times what follows)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        return self

    def start(self, timeout: float = 60.0) -> NodeProcess:
        """Start it and wait until it prints that it is listening."""
        self.spawn()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while "listening" not in self.output()[self._offset:]:
            problem = (f"exited with {self.process.returncode}" if self.process.poll() is not None
                       else f"not listening after {timeout:.0f} s"
                       if time.monotonic() > deadline else None)
            if problem:
                self.kill()
                raise RuntimeError(f"spinefx node {problem}:\n"
                                   f"{self.output()[self._offset:][-3000:]}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        """Everything every run of this node printed (stdout and stderr)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the crash the node must survive (no handler, no flush, no clean-up)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def status_command(data: Path, as_json: bool = True) -> list[str]:
    command = [sys.executable, "-m", "spinefx", "node", "status", "--data", str(data)]
    return [*command, "--json"] if as_json else command


def node_status(data: Path) -> tuple[Any, str]:
    """``spinefx node status --data DATA --json``: (the parsed document, its raw text)."""
    run = subprocess.run(status_command(data), capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    if run.returncode != 0:
        raise RuntimeError(f"spinefx node status failed ({run.returncode}): "
                           f"{run.stdout}{run.stderr}")
    return json.loads(run.stdout), run.stdout + run.stderr


def jobs_of(status: Any) -> list[dict[str, Any]]:
    """The job rows of a status document (``{"jobs": [...], "counts": {...}}``)."""
    return list(status["jobs"])
