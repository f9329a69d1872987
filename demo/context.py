"""What the demo's handlers share: the :class:`DemoContext` (model, case library, output files,
upload janitor), one session's :class:`ReadState`, and the guards that turn any failure into a
readable line (the page never shows a traceback).

Handlers are module-level functions ``handler(ctx, *inputs) -> dict`` keyed by the names of the
page's components (``"status"``, ``"slice_img"``...); ``app.py`` maps names to components.
Tests call handlers with a context and no server.
"""
from __future__ import annotations

import atexit
import functools
import io
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from spinefx.runtime import PreprocessConfig, SpineFXError
from spinefx.runtime.files import atomic_write_text
from spinefx.runtime.service import Result, error_json
from spinefx.runtime.study import SeriesPair, Study
from spinefx.runtime.study_analysis import SpineAnalysis

from .library import Library
from .service import ModelState, load_model
from .uploads import Memo, UploadJanitor, remove_files
from .viewer import View, ViewCache
from .views import error_markdown

log = logging.getLogger("spinefx.demo")

Updates = dict[str, Any]


PNG_COMPRESS_LEVEL = 1   # fast zlib: these PNGs live minutes and travel over a local network
CACHED_PNG_COMPRESS_LEVEL = 6   # encoded once, sent to every session: smaller is cheaper


class Outbox:
    """Output pictures as PNG files with unique names, each encoded once (compress level 1;
    6 for the caches' pictures, sent many times) and renamed into place complete (no fsync:
    they are temporary).

    Gradio caches a returned PIL image/array by rewriting ``<hash>/image.png`` in place, so two
    sessions producing the same picture at once can serve each other a truncated file; a file
    path is instead copied into the cache. Files here are pruned after ``keep_s`` seconds
    (gradio has its own copy by then); ``keep_s=None`` keeps them until they are removed
    (the process-wide caches' pictures) or the work folder goes at shutdown."""

    def __init__(self, folder: Path, keep_s: float | None = 300.0,
                 compress_level: int = PNG_COMPRESS_LEVEL):
        self.folder = folder
        self.compress_level = compress_level
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_s = keep_s
        self.private = False       # a session's own folder: removed at session end
        self._last_prune = time.monotonic()

    def png(self, image: Image.Image | np.ndarray | None) -> str | None:
        if image is None:
            return None
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG", compress_level=self.compress_level)
        name = uuid.uuid4().hex
        partial, final = self.folder / f".{name}.part", self.folder / f"{name}.png"
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, final)
        self._prune()
        return str(final)

    def gallery(self, items: list[tuple[Any, str]]) -> list[tuple[str | None, str]]:
        return [(self.png(img), caption) for img, caption in items]

    def _prune(self) -> None:
        now = time.monotonic()
        if self.keep_s is None or now - self._last_prune < 60:
            return
        self._last_prune = now
        cutoff = time.time() - self.keep_s
        for p in self.folder.glob("*.png"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass


EXAMPLE_CACHE = 16       # examples: a handful, each computed once per process
UPLOAD_CACHE = 4         # decoded uploads (a study can be ~0.5 GiB): a few
RESULT_CACHE = 32        # API results of an upload + ROI: a small document and one PNG each


@dataclass
class DemoContext:
    """Everything a handler needs that outlives one request (one per app). ``examples``,
    ``studies`` and ``results`` are the process-wide caches (see :class:`Memo`); ``kept`` holds
    their pictures (never pruned; removed with the entry or at shutdown)."""
    model: ModelState
    library: Library
    work: Path
    outbox: Outbox
    janitor: UploadJanitor
    kept: Outbox = field(init=False)
    examples: Memo[Any] = field(init=False)
    studies: Memo[Study] = field(init=False)
    results: Memo[tuple[dict, str | None]] = field(init=False)

    def __post_init__(self) -> None:
        self.kept = Outbox(self.work / "kept", keep_s=None,
                           compress_level=CACHED_PNG_COMPRESS_LEVEL)
        self.examples = Memo(EXAMPLE_CACHE)
        self.studies = Memo(UPLOAD_CACHE)
        self.results = Memo(RESULT_CACHE, on_evict=lambda value: remove_files([value[1]]))

    @property
    def config(self) -> PreprocessConfig:
        return self.model.config

    @classmethod
    def create(cls, model: str | PathLike | None, cases_dir: str | PathLike | None,
               cache_dir: str | PathLike | None, concurrency: int,
               temp_dir: str | PathLike | None, upload_folders: list[str],
               upload_grace_s: float, allow_outside: bool = False) -> "DemoContext":
        work = Path(tempfile.mkdtemp(prefix="spinefx-demo-", dir=temp_dir))
        atexit.register(shutil.rmtree, work, True)
        return cls(model=load_model(model, concurrency),
                   library=Library(cache_dir=cache_dir, cases_dir=cases_dir,
                                   allow_outside=allow_outside), work=work,
                   outbox=Outbox(work / "out"),
                   janitor=UploadJanitor(upload_folders, upload_grace_s))

    def session_outbox(self, st: "ReadState") -> Outbox:
        """The session's own folder for its pictures and files (removed at session end by
        :func:`drop_state`); a session built for a cache writes to ``kept``."""
        if st.outbox is None:
            sessions = self.work / "sessions"
            sessions.mkdir(parents=True, exist_ok=True)
            st.outbox = Outbox(Path(tempfile.mkdtemp(prefix="session-", dir=sessions)))
            st.outbox.private = True
        return st.outbox

    def close(self) -> None:
        """Shutdown: the caches emptied and the work folder (every output, report, session
        folder) removed."""
        for memo in (self.examples, self.studies, self.results):
            memo.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    def reads_file(self, reader: str, text: str) -> str:
        """A teaching session's CSV in a fresh private folder (never overwrites another's)."""
        folder = Path(tempfile.mkdtemp(prefix="reads-", dir=self.work))
        path = folder / f"spinefx_reads_{reader}.csv"
        atomic_write_text(path, text)
        return str(path)


@dataclass
class ReadState:
    """One browser session's read-mode data (in memory; no PHI). ``last`` is the result on
    screen (None once a slice/box/series change made it out of date); ``spine`` the
    localiser's whole-spine analysis, ``picked`` the vertebra chosen from it."""
    study: Study | None = None
    pair: SeriesPair | None = None
    center: tuple[float, float] | None = None
    view: View = field(default_factory=View)
    last: Result | None = None
    last_k: int | None = None
    notes: list[str] = field(default_factory=list)
    level: float = 50.0            # window/level in percent of each series' 1-99% range
    width: float = 100.0
    zoom: float = 1.0
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    views: ViewCache = field(default_factory=ViewCache)
    spine: SpineAnalysis | None = None
    spine_error: str = ""
    picked: int | None = None
    report: str | None = None     # the session's latest report file
    dicom_zip: str | None = None  # the session's DICOM results (SR, SEG, SC) of a DICOM upload
    outbox: Outbox | None = None  # the session's own files (DemoContext.session_outbox)
    source: str = "the loaded study"   # what the report calls it (never an upload's file names)

    def for_session(self, outbox: Outbox | None) -> "ReadState":
        """A copy for one session of a cached state (an example's): shared read-only parts
        (study, analysis, result, pictures), its own lists, caches and folder."""
        return replace(self, outbox=outbox, notes=list(self.notes), spans=dict(self.spans),
                       views=self.views.copy(), report=None, dicom_zip=None)

    def require(self) -> tuple[Study, SeriesPair]:
        if self.study is None or self.pair is None:
            raise SpineFXError("load a study first: upload files or pick an example")
        return self.study, self.pair


def drop_state(value: Any) -> None:
    """gr.State delete callback (the session ended or expired): its memory released and its
    own folder (pictures, report, DICOM results) removed; the caches' shared pictures stay."""
    if isinstance(value, ReadState):
        value.study = None
        value.last = None
        value.spine = None
        outbox, value.outbox = value.outbox, None
        if outbox is not None and outbox.private:
            shutil.rmtree(outbox.folder, ignore_errors=True)


class StudyError(SpineFXError):
    """A problem with one study (its series choice, its ROI...), the message naming the study."""


def naming_study(exc: SpineFXError, study: Study | None) -> SpineFXError:
    """``exc``, or a :class:`StudyError` whose message starts with the study's title (the
    upload's or folder's name) when ``exc`` does not name it already: "T2 series 7 not found"
    alone does not say which of a user's studies it is about."""
    title = study.title if study is not None else ""
    if not title or title in str(exc):
        return exc
    return StudyError(f"study {title!r}: {exc}")


@contextmanager
def about_study(study: Study) -> Iterator[None]:
    """A SpineFXError raised inside names ``study`` (:func:`naming_study`)."""
    try:
        yield
    except SpineFXError as exc:
        named = naming_study(exc, study)
        if named is exc:
            raise
        raise named from exc


def _study_in(args: tuple) -> Study | None:
    """The study a handler works on: a Study argument or a session's loaded study."""
    for arg in args:
        if isinstance(arg, Study):
            return arg
        if isinstance(arg, ReadState) and arg.study is not None:
            return arg.study
    return None


def upload_title(paths: list[str], kind: str) -> str:
    """A study's title from its uploaded files' names ("spine.zip", "IM1.dcm and 11 more
    files"), so messages about it name what the user uploaded; ``kind`` when there are none."""
    names = [Path(p).name for p in paths if Path(p).name]
    if not names:
        return kind
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more files"


def page_guard(status: str, fallback: Updates | None = None) -> Callable:
    """Turn any exception into a readable line in the component named ``status``.
    SpineFXError messages are shown naming the session's study (:func:`naming_study`);
    anything else is logged with its traceback and summarised."""
    def deco(fn: Callable[..., Updates]) -> Callable[..., Updates]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Updates:
            try:
                return fn(*args, **kwargs)
            except SpineFXError as exc:
                log.info("input rejected (%s)", type(exc).__name__)
                exc = naming_study(exc, _study_in(args))
                return {**(fallback or {}), status: error_markdown(str(exc))}
            except MemoryError:
                log.error("out of memory in %s", fn.__name__)
                return {**(fallback or {}), status: error_markdown(
                    "the input is too large for this server's memory")}
            except Exception as exc:  # noqa: BLE001 - last line of defence for the page
                log.exception("unexpected error in %s", fn.__name__)
                return {**(fallback or {}), status: error_markdown(
                    f"unexpected {type(exc).__name__}; the input may be unusual. Details are in "
                    "the server log.")}
        return wrapper
    return deco


def api_guard(fn: Callable[..., tuple]) -> Callable[..., tuple]:
    """API endpoints answer ``({"status": "error", "error": ...}, None)`` on any failure."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> tuple:
        try:
            return fn(*args, **kwargs)
        except SpineFXError as exc:
            log.info("api input rejected (%s)", type(exc).__name__)
            return error_json(exc), None
        except MemoryError:
            return {"status": "error", "error": "the input is too large for this server"}, None
        except Exception as exc:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            return {"status": "error", "error": f"unexpected {type(exc).__name__}; see the "
                    "server log"}, None
    return wrapper


def upload_paths(files: Any) -> list[str]:
    """Gradio's file values (paths or objects with ``.name``) as paths."""
    if not files:
        return []
    files = files if isinstance(files, (list, tuple)) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files if f]
