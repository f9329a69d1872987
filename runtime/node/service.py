"""Run the node: recover the data folder, listen, then the worker and the watch folder, until
SIGTERM/SIGINT (or ``stop``) ends it cleanly.

Start order keeps a cold start fast: no model and no onnxruntime before the listener is up,
and none right after either (the worker loads the model when a study starts arriving, or a few
seconds after start: loading holds the interpreter, and a C-ECHO would wait for it). One line
on stdout says the node is ready::

    spinefx node: listening as SPINEFX on 127.0.0.1:11112

(with ``port`` 0 it names the port the system chose). Logs go to stderr and carry job
numbers, states and counts, never a patient's or a study's values.
"""
from __future__ import annotations

import importlib.util
import logging
import signal
import sqlite3
import sys
import threading
import warnings
from typing import IO, Any, Callable

from spinefx.runtime.errors import SpineFXError

from .config import NodeConfig
from .scp import NODE_EXTRA_HINT, start_scp
from .store import JobStore
from .watch import FolderWatcher
from .worker import Worker

__all__ = ["LISTENING", "DataFolderLock", "listening_line", "run_node"]

log = logging.getLogger("spinefx.node")

LISTENING = "spinefx node: listening as {ae_title} on {host}:{port}"


def listening_line(ae_title: str, host: str, port: int) -> str:
    return LISTENING.format(ae_title=ae_title, host=host, port=port)


class DataFolderLock:
    """One node per data folder (two would analyse and send the same jobs). The lock is an
    flock: the system drops it when the process dies, even by SIGKILL."""

    def __init__(self, store: JobStore):
        self.path = store.data / "node.lock"
        self._fh: IO[str] | None = None

    def __enter__(self) -> DataFolderLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise SpineFXError("another spinefx node is running on this data folder",
                               self.path.parent) from None
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _setup_logging() -> None:
    """Our lines on stderr, and nothing else: pydicom and highdicom quote the values they find
    odd (a birth date, a patient's name) in warnings and log records, and pynetdicom logs
    peers and PDUs. The node runs unattended, its log must never hold a patient's value, so
    the process drops all warnings and those libraries' records (job reasons carry what an
    operator needs, scrubbed)."""
    warnings.simplefilter("ignore")
    for name in ("pydicom", "highdicom", "pynetdicom"):
        library = logging.getLogger(name)
        library.setLevel(logging.CRITICAL + 1)
        library.propagate = False
    node = logging.getLogger("spinefx.node")
    if not node.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s spinefx node: %(message)s"))
        node.addHandler(handler)
        node.setLevel(logging.INFO)
        node.propagate = False


def _check_extras() -> None:
    for module in ("pynetdicom", "highdicom"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install, or blocked in sys.modules
            found = False
        if not found:
            raise ModuleNotFoundError(f"{NODE_EXTRA_HINT} (no module named {module!r})",
                                      name=module)


def run_node(config: NodeConfig, stop: threading.Event | None = None,
             load_predictor: Callable[[], Any] | None = None, out: IO[str] | None = None,
             handle_signals: bool = True) -> int:
    """Serve until ``stop`` is set (by SIGTERM/SIGINT when ``handle_signals`` and this is the
    main thread). Returns 0 after a clean shutdown."""
    _check_extras()
    _setup_logging()
    stop = stop if stop is not None else threading.Event()
    previous = _install_signals(stop) if handle_signals else {}
    try:
        return _serve(config, stop, load_predictor, out)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(config: NodeConfig, stop: threading.Event,
           load_predictor: Callable[[], Any] | None, out: IO[str] | None) -> int:
    try:
        store = JobStore(config.data)
    except (OSError, sqlite3.Error) as exc:
        raise SpineFXError(f"cannot use the data folder ({_why(exc)})", config.data) from None
    with DataFolderLock(store):
        counts = store.recover()
        if any(counts.values()):
            log.info("recovered: %(jobs_resumed)d interrupted jobs to run again, "
                     "%(jobs_failed)d failed (interrupted too often), %(instances_found)d "
                     "instances recorded, %(temporary_files)d partial files removed", counts)
        try:
            server = start_scp(config, store)
        except OSError as exc:
            raise SpineFXError(f"cannot listen on {config.host}:{config.port} "
                               f"({_why(exc)})") from None
        port = int(server.server_address[1])
        print(listening_line(config.ae_title, config.host, port), file=out or sys.stdout,
              flush=True)
        log.info("results go to %s; a study is complete after %g s without a new instance",
                 config.dest, config.idle_seconds)
        threads = [threading.Thread(target=Worker(store, config, load_predictor).run,
                                    args=(stop,), name="spinefx-node-worker", daemon=True)]
        if config.watch is not None:
            watcher = FolderWatcher(config.watch, store)
            threads.append(threading.Thread(target=watcher.run, args=(stop,), daemon=True,
                                            name="spinefx-node-watch"))
            log.info("watching a drop folder")
        for thread in threads:
            thread.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            log.info("stopping")
            server.shutdown()
            for assoc in list(getattr(server, "active_associations", [])):
                assoc.abort()
            for thread in threads:  # an analysis in progress may finish; a crash is also safe
                thread.join(timeout=15)
            store.close()
    return 0


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous
