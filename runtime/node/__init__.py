"""``spinefx node``: the scanner-side DICOM node (research use, not a medical device).

A scanner or PACS sends a study over DICOM (C-STORE) or drops its files into a folder; with
nobody at the keyboard the node analyses it (:func:`spinefx.runtime.api.analyse_study`: the
sagittal T1/T2 pair, localise, grade, classify) and sends the results -- Comprehensive SR,
SEG, Secondary Capture, optionally a Parametric Map of the Grad-CAM -- to a destination
(C-STORE SCU), usually the same PACS.

Modules: :mod:`.config` (settings), :mod:`.store` (data folder + SQLite job table),
:mod:`.scp` (the listener), :mod:`.worker` (analysis; :mod:`.sender` sends), :mod:`.watch` (drop
folder), :mod:`.service` (all of them together, signals).

Job states (one job per StudyInstanceUID)::

    receiving --idle_seconds without a new instance--> complete --> analysing --> sending --> done
                                                                     |             |
                                      skipped (not MR, no sagittal T1/T2, ...)   (destination
                                      failed  (unexpected error) + reason          down: wait,
                                                                                   retry, back-off)

A new instance of a study in a final state reopens it (receiving, revision + 1: the results
will carry new UIDs); one arriving during the analysis sends the job back to receiving.

Crash safety. An instance is written to a temporary file in its study folder, fsynced and
renamed (and the folder fsynced) *before* the C-STORE response, then recorded; so whatever a
sender was told is stored is on disk. On start, :meth:`~.store.JobStore.recover` removes
temporary files, records instance files that have no row yet, and puts jobs left in
analysing or sending back to complete: they run again.

Exactly once. A job's result UIDs derive from a seed, the StudyInstanceUID + the model's
sha256 (+ the revision), so running it again builds objects with the same SOP Instance UIDs.
Each SOP Instance UID the destination confirmed goes into the ``sent`` table, and the worker
skips those; the one window left (confirmed, then a crash before the row) re-sends an object
the destination already holds under the same UID, which a PACS (Orthanc) keeps once. Our own
results sent back to the node (a routing loop) are recognised by the sent log and ignored.

Privacy. File and folder names are hashes of UIDs; ``spinefx node status`` shows a job
number, a short hash, states, counts, timings and reasons; reasons and logs are scrubbed of
the study's patient- and study-level values.
"""
from __future__ import annotations

from .config import Destination, NodeConfig
from .store import FINAL_STATES, STATES, Job, JobStore

__all__ = ["FINAL_STATES", "STATES", "Destination", "Job", "JobStore", "NodeConfig"]
