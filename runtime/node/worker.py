"""The node's worker thread: complete idle studies, analyse them one at a time, send results.

One job at a time (the analysis takes the CPU; a second would only slow the first). The model
loads when the first study starts arriving (or a few seconds after start), never in the first
moments after "listening": loading holds the interpreter, and a C-ECHO then waited 0.3-0.4 s.
After each job the memory the analysis used goes back to the system (:func:`release_memory`),
so the node's RSS stays flat over a day of studies. Result UIDs derive
from the study's StudyInstanceUID and the model's sha256 (+ the revision), so a job run twice
(after a crash) builds the same objects, and the sent log skips those already confirmed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.files import atomic_write_bytes

from .config import NodeConfig
from .sender import DestinationDown, SendRefused, send_files
from .store import Job, JobStore, uid_key

__all__ = ["DestinationDown", "SKIPPED_NOTE", "SendRefused", "Worker", "analyse_folder",
           "redact", "release_memory", "result_seed", "send_files", "study_facts"]

log = logging.getLogger("spinefx.node")

#: Patient- and study-level values scrubbed from every reason and log line (the analysis's
#: messages name series and files, and must never carry these).
PHI_KEYWORDS = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate",
                "PatientAddress", "PatientTelephoneNumbers", "AccessionNumber", "StudyID",
                "StudyDescription", "StudyInstanceUID", "ReferringPhysicianName",
                "InstitutionName", "PerformingPhysicianName", "OperatorsName")


#: in a job's results folder: the job was skipped and its results are the not-analysed SR;
#: the text is the reason (a file, so a crash between building and sending keeps it)
SKIPPED_NOTE = "skipped.txt"


def result_seed(study_uid: str, model_sha256: str, revision: int) -> str:
    """The seed of a job's result UIDs: same study + same model + same revision, same UIDs."""
    seed = f"{study_uid.strip()}|{model_sha256}"
    return seed if revision == 0 else f"{seed}|r{revision}"


def analyse_folder(folder: Path, predictor: Any, seed: str,
                   stages: dict[str, float] | None = None,
                   parametric_map: bool = False) -> list[Any]:
    """The result datasets (SR, SEG, SC, + the Parametric Map with ``parametric_map``) of
    one study folder (tests replace this); the seconds of each stage go into ``stages``
    (analysis, dicom)."""
    from spinefx.runtime.api import analyse_study

    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    with analyse_study(folder, predictor=predictor) as result:
        t1 = time.perf_counter()
        datasets = list(result.dicom_objects(seed=seed, parametric_map=parametric_map))
    stages["analysis"], stages["dicom"] = t1 - t0, time.perf_counter() - t1
    return datasets


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another C library: nothing to call)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give back what one analysis left behind (measured on 10 phantom studies in one
    process: RSS +256 MiB without this, flat with it). Two holders: onnxruntime's CPU arena of
    the localiser session, which keeps the peak of every input size it has seen (the session
    is dropped here; the next job opens it again, ~0.1 s; the classifier releases its own
    arena after each run, ``Predictor(release_memory=True)``), and glibc's heaps, which keep
    freed pages until malloc_trim hands them back (~0.03 s; a gc.collect first would add
    ~0.15 s and measurably nothing: reference counting already freed the job's arrays)."""
    from spinefx.runtime import segmentation

    cached: Any = getattr(segmentation, "_session", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def study_facts(folder: Path) -> tuple[int, set[str], list[str]]:
    """(files, modalities, patient/study values to scrub) from the headers of a study."""
    import pydicom

    modalities: set[str] = set()
    secrets: set[str] = set()
    paths = sorted(folder.glob("*.dcm"))
    for i, path in enumerate(paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the analysis will name an unreadable file
            continue
        modalities.add(str(ds.get("Modality", "") or "").strip() or "unknown")
        if i < 3:  # these are study-level: the first files hold them
            secrets |= {str(ds.get(k, "") or "") for k in PHI_KEYWORDS}
            name = ds.get("PatientName")
            if name is not None:  # "Family^Given" also appears as its parts
                secrets |= {str(p) for p in str(name).split("^")}
    return len(paths), modalities, sorted((s for s in secrets if len(s.strip()) >= 3),
                                          key=len, reverse=True)


def _first_mr_file(folder: Path) -> Path:
    """The first received MR instance of a study (the not-analysed report joins its study)."""
    import pydicom

    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # noqa: BLE001 - another file will do
            continue
        if str(ds.get("Modality", "")).strip() == "MR":
            return path
    raise SpineFXError("no readable MR instance in the study", folder)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _encode(ds: Any) -> bytes:
    """A dataset as a DICOM file (file meta added when the builder left none)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = meta if meta is not None else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class Worker:
    """Runs the jobs of one :class:`JobStore`. ``load_predictor``: builds the model (called
    once, on the first analysis; default the configured model)."""

    poll_seconds = 0.1
    purge_every_seconds = 600.0
    #: with ``preload``, the model loads when a study starts arriving, or this long after start
    preload_after_seconds = 3.0

    def __init__(self, store: JobStore, config: NodeConfig,
                 load_predictor: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.config = config
        self._load = load_predictor or self._default_predictor
        self._predictor: Any = None
        self.clock = clock
        self._last_purge = 0.0

    def _default_predictor(self) -> Any:
        from spinefx.runtime.inference import Predictor

        return Predictor(self.config.model, variant=self.config.variant, release_memory=True,
                         spinning=False)

    def predictor(self) -> Any:
        if self._predictor is None:
            self._predictor = self._load()
        return self._predictor

    def run(self, stop: threading.Event, preload: bool = True) -> None:
        """Work until ``stop`` is set; an unexpected error is logged and the loop goes on.
        ``preload``: load the model before the first job needs it (see :meth:`preload_due`),
        so that study waits for nobody; a failure is reported on the jobs that need it."""
        started = self.clock()
        while not stop.is_set():
            if preload and self.preload_due(started):
                preload = False
                self._preload()
            try:
                busy = self.step()
            except Exception as exc:  # noqa: BLE001 - the node must keep running
                log.error("worker: %s (will retry)", type(exc).__name__)
                log.debug("worker error", exc_info=True)
                busy = False
            if not busy:
                stop.wait(self.poll_seconds)
        self.store.close()

    def preload_due(self, started: float) -> bool:
        """Time to load the model: a study is arriving (it needs the idle time to complete,
        the load fits in it) or ``preload_after_seconds`` have passed since ``started``. Not at
        once: right after "listening" a scanner's C-ECHO must be answered promptly."""
        if self._predictor is not None:
            return False
        return (self.clock() - started >= self.preload_after_seconds
                or self.store.has_unfinished_jobs())

    def _preload(self) -> None:
        try:
            self.predictor()
            # the analysis' and the DICOM builders' modules too (highdicom: ~0.4 s), so the
            # first study waits for none of it
            import highdicom  # noqa: F401

            import spinefx.runtime.dicom_outputs  # noqa: F401
            import spinefx.runtime.study_analysis  # noqa: F401
            log.info("model loaded")
        except Exception as exc:  # noqa: BLE001 - each job will say so
            log.error("the model could not be loaded (%s); jobs will fail until it can",
                      type(exc).__name__)

    def step(self) -> bool:
        """Do one piece of work; False when there was nothing to do."""
        now = self.clock()
        for job_id in self.store.complete_idle(self.config.idle_seconds, now):
            log.info("job %d: complete (%d instances)", job_id,
                     self.store.job(job_id).instances)
        job = self.store.next_job(now)
        if job is None:
            if now - self._last_purge >= self.purge_every_seconds:
                self._last_purge = now
                for job_id in self.store.purge(self.config.retention_days, now):
                    log.info("job %d: files removed (retention)", job_id)
            return False
        if job.state == "sending":
            self.send(job)
        else:
            self.analyse(job)
            release_memory()
        return True

    # -- analysis ------------------------------------------------------------------------
    def analyse(self, job: Job) -> None:
        """A claimed job (state analysing): skipped, failed, or results on disk and sent."""
        start = self.clock()
        log.info("job %d: analysing", job.id)
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        n_files, modalities, secrets = study_facts(self.store.study_folder(job))
        stages["headers"] = time.perf_counter() - t0
        if n_files == 0:
            return self._finish(job, "failed", "no received instance on disk", start)
        if "MR" not in modalities:
            return self._finish(job, "skipped", f"not an MR study (modality "
                                f"{', '.join(sorted(modalities))})", start)
        try:
            predictor = self.predictor()
        except Exception as exc:  # noqa: BLE001 - reported on the job; the node runs on
            return self._finish(job, "failed", redact(f"the model could not be loaded: "
                                                      f"{type(exc).__name__}: {exc}", secrets),
                                start)
        try:
            seed = result_seed(job.study_uid, str(predictor.sha256), job.revision)
            datasets = analyse_folder(self.store.study_folder(job), predictor, seed, stages,
                                      parametric_map=self.config.parametric_map)
        except SpineFXError as exc:  # what the runtime cannot analyse: refused politely
            reason = redact(str(exc), secrets)
            if self.config.report_skipped:
                return self._report_skipped(job, reason, predictor, seed, start)
            return self._finish(job, "skipped", reason, start)
        except Exception as exc:  # noqa: BLE001 - a bug or a broken file; the node runs on
            log.debug("job %d: analysis error", job.id, exc_info=True)
            return self._finish(job, "failed", redact(f"analysis error: "
                                                      f"{type(exc).__name__}: {exc}", secrets),
                                start)
        t0 = time.perf_counter()
        self._keep_results(job, datasets)
        stages["files"] = time.perf_counter() - t0
        if not self._to_sending(job, len(datasets), start):
            return
        log.info("job %d: %d results built in %.2f s", job.id, len(datasets),
                 self.clock() - start)
        t0 = time.perf_counter()
        self.send(self.store.job(job.id))
        stages["send"] = time.perf_counter() - t0
        log.info("job %d: stage seconds: %s", job.id,
                 ", ".join(f"{name} {seconds:.3f}" for name, seconds in stages.items()))

    def _to_sending(self, job: Job, results: int, start: float) -> bool:
        """Results on disk: the job goes to sending (False: instances arrived meanwhile, and
        the job receives again)."""
        if self.store.update(job.id, generation=job.generation, state="sending",
                             results=results, results_generation=job.generation,
                             analysis_seconds=self.clock() - start, runs=0, attempts=0,
                             next_attempt_at=None):
            return True
        log.info("job %d: new instances arrived during the analysis; receiving", job.id)
        self.store.reopen(job, new_revision=False)
        return False

    def _report_skipped(self, job: Job, reason: str, predictor: Any, seed: str,
                        start: float) -> None:
        """An MR study that cannot be analysed: a short SR saying why goes out like results;
        once it is sent the job ends skipped with the reason (:data:`SKIPPED_NOTE`)."""
        from spinefx.runtime.dicom_sr import skipped_report

        try:
            source = _first_mr_file(self.store.study_folder(job))
            datasets = [skipped_report(source, reason, predictor.spec, seed=seed)]
        except Exception as exc:  # noqa: BLE001 - the skip stands; say why no report came
            log.debug("job %d: not-analysed report error", job.id, exc_info=True)
            return self._finish(job, "skipped", f"{reason} (no not-analysed report: "
                                f"{type(exc).__name__})", start)
        self._keep_results(job, datasets)
        atomic_write_bytes(self.store.results_folder(job) / SKIPPED_NOTE, reason.encode())
        if self._to_sending(job, len(datasets), start):
            self.send(self.store.job(job.id))

    def _keep_results(self, job: Job, datasets: Sequence[Any]) -> None:
        """The results of this revision on disk (atomic files, named by UID hash), replacing
        whatever an interrupted earlier run left, so a retry sends exactly these."""
        folder = self.store.results_folder(job)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        for ds in datasets:
            atomic_write_bytes(folder / f"{uid_key(str(ds.SOPInstanceUID))}.dcm", _encode(ds))

    def _finish(self, job: Job, state: str, reason: str | None, start: float | None,
                generation: int | None = None) -> None:
        """A final state, unless instances arrived since ``generation`` (default: when the
        job was read); then the job receives again."""
        now = self.clock()
        values: dict[str, Any] = {"state": state, "reason": reason, "finished_at": now,
                                  "next_attempt_at": None}
        if start is not None:
            values["analysis_seconds"] = now - start
        generation = job.generation if generation is None else generation
        if not self.store.update(job.id, generation=generation, **values):
            log.info("job %d: new instances arrived meanwhile; receiving again", job.id)
            return self.store.reopen(job, new_revision=state == "done")
        if state == "done":
            log.info("job %d: done", job.id)
        else:
            log.warning("job %d: %s: %s", job.id, state, reason)

    # -- sending -------------------------------------------------------------------------
    def send(self, job: Job) -> None:
        """Send the job's kept results; done when all are confirmed (receiving again when
        instances arrived after the results were built), else a retry later."""
        built_from = job.generation if job.results_generation is None else \
            job.results_generation
        paths = sorted(self.store.results_folder(job).glob("*.dcm"))
        if job.results is not None and len(paths) < job.results:  # results lost: rebuild
            self.store.update(job.id, state="complete", completed_at=self.clock())
            return
        try:
            sent = send_files(self.config, paths, self.store, job)
        except DestinationDown as exc:
            return self._retry_later(job, str(exc))
        except SendRefused as exc:
            return self._finish(job, "failed", str(exc), None, built_from)
        except (OSError, RuntimeError) as exc:  # socket errors, an association torn down
            return self._retry_later(job, f"{type(exc).__name__}: {exc}")
        log.info("job %d: %d results sent to %s", job.id, sent, self.config.dest)
        note = self.store.results_folder(job) / SKIPPED_NOTE
        if note.is_file():  # the not-analysed report went out: the job stays a skip
            return self._finish(job, "skipped", note.read_text(encoding="utf-8"), None,
                                built_from)
        self._finish(job, "done", None, None, built_from)

    def _retry_later(self, job: Job, why: str) -> None:
        attempts = job.attempts + 1
        wait = min(self.config.retry_max_seconds,
                   self.config.retry_initial_seconds * 2 ** min(attempts - 1, 30))
        reason = f"destination {self.config.dest} unavailable ({why}); retry {attempts} in " \
                 f"{wait:g} s"
        self.store.update(job.id, attempts=attempts, next_attempt_at=self.clock() + wait,
                          reason=reason)
        log.warning("job %d: %s", job.id, reason)
