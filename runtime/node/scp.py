"""The node's DICOM listener: a pynetdicom Storage SCP (C-ECHO, C-STORE of every storage class).

Each received instance is written to disk and fsynced (:meth:`JobStore.store_instance`)
before the C-STORE response leaves, so an acknowledged instance survives a crash. Statuses:
0x0000 stored (or already held: a retry), 0xA900 no Study/SOP Instance UID, 0xA700 the disk
refused (full, read-only). With ``allow`` only those calling AE titles may associate (others
are rejected at association: "calling AE title not recognised"). With
``complete_on_release`` the studies an association brought are complete as soon as it is
released (an aborted one leaves them to the idle time).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from .config import NodeConfig
from .store import JobStore

__all__ = ["NODE_EXTRA_HINT", "import_pynetdicom", "start_scp"]

log = logging.getLogger("spinefx.node")

VERIFICATION = "1.2.840.10008.1.1"  # the C-ECHO SOP class
NODE_EXTRA_HINT = "spinefx node needs the 'node' extra: pip install 'spinefx[node]'"


def import_pynetdicom() -> Any:
    """pynetdicom, or a ModuleNotFoundError whose message says which extra brings it."""
    try:
        import pynetdicom
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{NODE_EXTRA_HINT} (no module named {exc.name!r})",
                                  name=exc.name) from None
    return pynetdicom


def _handle_echo(event: Any) -> int:
    return 0x0000


def _calling_aet(event: Any) -> str:
    return str(event.assoc.requestor.ae_title).strip()


class ReleaseTracker:
    """The studies each open association has stored instances of; on release, complete."""

    def __init__(self, store: JobStore):
        self.store = store
        self._studies: dict[int, set[str]] = {}
        self._lock = threading.Lock()

    def stored(self, event: Any, study_uid: str) -> None:
        with self._lock:
            self._studies.setdefault(id(event.assoc), set()).add(study_uid)

    def released(self, event: Any) -> None:
        with self._lock:
            studies = self._studies.pop(id(event.assoc), set())
        for job_id in self.store.complete_studies(studies):
            log.info("job %d: complete (its association was released)", job_id)

    def closed(self, event: Any) -> None:
        with self._lock:
            self._studies.pop(id(event.assoc), None)


def _handle_store(event: Any, store: JobStore, tracker: ReleaseTracker | None = None) -> int:
    """Keep one instance; the status tells the sender whether it is safe with us."""
    try:
        ds = event.dataset
        study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
    except Exception:  # noqa: BLE001 - undecodable: refuse this one, keep the association
        log.warning("refused an instance from %s: its data set cannot be decoded",
                    _calling_aet(event))
        return 0xC210
    if not study_uid or not sop_uid:
        log.warning("refused an instance from %s: no Study or SOP Instance UID",
                    _calling_aet(event))
        return 0xA900
    try:
        outcome, job_id = store.store_instance(event.encoded_dataset(), study_uid, sop_uid)
    except OSError as exc:  # disk full, permissions: the sender keeps it and retries
        log.error("cannot store an instance (%s: %s)", type(exc).__name__, exc.strerror)
        return 0xA700
    if outcome == "ours":
        log.info("ignored one of our own results sent back by %s", _calling_aet(event))
    elif job_id is not None and outcome == "stored":
        log.debug("job %d: instance stored", job_id)
    if tracker is not None and outcome != "ours":
        tracker.stored(event, study_uid)
    return 0x0000


def _handle_accepted(event: Any) -> None:
    log.info("association from %s accepted", _calling_aet(event))


def _handle_rejected(event: Any) -> None:
    log.warning("association from %s rejected", _calling_aet(event))


def start_scp(config: NodeConfig, store: JobStore) -> Any:
    """Listen (non-blocking) on config.host:config.port; returns the pynetdicom server
    (``server.server_address[1]`` is the port, useful with port 0; ``server.shutdown()``)."""
    pynetdicom = import_pynetdicom()
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    ae = pynetdicom.AE(ae_title=config.ae_title)
    # every storage class: a scanner sends localisers, reports and screenshots with the
    # images, and refusing them would make it retry the whole study
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    ae.maximum_associations = config.max_associations
    ae.require_calling_aet = list(config.allow)
    ae.require_called_aet = config.require_called_aet
    ae.network_timeout = ae.acse_timeout = 60
    ae.dimse_timeout = 120
    tracker = ReleaseTracker(store) if config.complete_on_release else None
    handlers = [(evt.EVT_C_ECHO, _handle_echo),
                (evt.EVT_C_STORE, _handle_store, [store, tracker]),
                (evt.EVT_ACCEPTED, _handle_accepted), (evt.EVT_REJECTED, _handle_rejected)]
    if tracker is not None:
        handlers += [(evt.EVT_RELEASED, tracker.released), (evt.EVT_ABORTED, tracker.closed),
                     (evt.EVT_CONN_CLOSE, tracker.closed)]
    return ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
