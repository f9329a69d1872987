"""The node's sender: C-STORE a job's result files to the destination, each at most once.

The sent log (:meth:`JobStore.mark_sent`) records every SOP Instance UID the destination
confirmed, so a job run again after a crash sends only what is missing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .config import NodeConfig
from .store import Job, JobStore

__all__ = ["DestinationDown", "SendRefused", "send_files"]


class DestinationDown(Exception):
    """The destination cannot take results now (no connection, rejected, out of resources):
    wait and retry."""


class SendRefused(Exception):
    """The destination refused a result object for good (its status says why)."""


def send_files(config: NodeConfig, paths: Sequence[Path], store: JobStore, job: Job) -> int:
    """C-STORE each result file not yet in the sent log to the destination; log each one the
    destination confirms. Returns how many were sent now. A file whose transfer syntax the
    destination accepted goes as its bytes on disk (pynetdicom's chunked send: no decoding
    and encoding again, ~0.3 s a job for the SR and SEG); any other is decoded and converted."""
    import pydicom
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, _config, build_context

    metas = [(path, read_file_meta_info(path)) for path in paths]
    todo = [(path, meta) for path, meta in metas
            if not store.was_sent(str(meta.MediaStorageSOPInstanceUID))]
    if not todo:
        return 0
    # per class: a context with the files' own syntax (a PACS picks by its own preference
    # among those offered together, often implicit VR), and one of the plain ones to fall back on
    proposed = {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for _, m in todo}
    contexts = [build_context(sop_class, ts) for sop_class, ts in sorted(proposed)]
    contexts += [build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
                 for sop_class in sorted({c for c, _ in proposed})]
    ae = AE(ae_title=config.ae_title)
    ae.connection_timeout = 5
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    dest = config.dest
    assoc = ae.associate(dest.host, dest.port, contexts=contexts, ae_title=dest.ae_title)
    if not assoc.is_established:
        raise DestinationDown(f"association rejected by {dest.ae_title}" if assoc.is_rejected
                              else "no connection, or the association was aborted")
    accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0]))
                for c in assoc.accepted_contexts}
    _config.STORE_SEND_CHUNKED_DATASET = True  # a path is sent as it is (the node sends paths)
    sent = 0
    try:
        for path, meta in todo:
            sop_class, sop_uid = str(meta.MediaStorageSOPClassUID), \
                str(meta.MediaStorageSOPInstanceUID)
            as_is = (sop_class, str(meta.TransferSyntaxUID)) in accepted
            status = assoc.send_c_store(path if as_is else pydicom.dcmread(path))
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise DestinationDown("no response to C-STORE (connection lost or timed out)")
            if 0xA700 <= code <= 0xA7FF:
                raise DestinationDown(f"out of resources (status 0x{code:04X})")
            if code != 0 and not 0xB000 <= code <= 0xBFFF:  # warnings mean stored
                raise SendRefused(f"destination refused a {UID(sop_class).name} object "
                                  f"(status 0x{code:04X})")
            store.mark_sent(job.id, sop_uid, sop_class)
            sent += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return sent
