"""What an upload is on disk, and for how long.

:class:`Staging`: one request's private folder. Uploaded files get neutral names
(``f00001.dcm``; user file names can carry patient names); zip archives are extracted
defensively: member names are never used as paths (no traversal), links and nested archives are
skipped, and the number of members and the bytes actually written are capped (a zip bomb's
headers can lie). :class:`UploadJanitor` deletes gradio's cached copies once no request needs
them. :class:`Memo` is the process-wide cache of what is computed from an upload or example,
keyed by :func:`content_key` for uploads (the same bytes are decoded and predicted once).
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Iterable, TypeVar

from spinefx.runtime import SpineFXError

log = logging.getLogger("spinefx.demo")

MAX_FILES = 4000                      # files in one upload (a spine study: a few hundred)
MAX_UPLOAD_BYTES = 1 << 30            # 1 GiB in all, zips counted by what they unpack to
MAX_ZIP_MEMBERS = 4000
_CHUNK = 1 << 20


class UploadError(SpineFXError):
    """The upload as a whole is unusable (empty, too big, wrong kind of file...)."""


class Staging:
    """A private folder for one request's files; ``names`` maps neutral -> original names."""

    def __init__(self, root: str | PathLike | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="upload-", dir=root))
        self.names: dict[str, str] = {}
        self.bytes = 0
        self.count = 0

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _target(self, original: str, suffix: str) -> Path:
        self.count += 1
        if self.count > MAX_FILES:
            raise UploadError(f"more than {MAX_FILES} files in one upload; upload one study")
        suffix = suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix or "") else ""
        name = f"f{self.count:05d}{suffix}"
        self.names[name] = display_name(original)
        return self.folder / name

    def _budget(self, n: int) -> None:
        self.bytes += n
        if self.bytes > MAX_UPLOAD_BYTES:
            raise UploadError(f"the upload unpacks to more than {MAX_UPLOAD_BYTES >> 20} MiB; "
                              "upload the sagittal T1 and T2 series only")

    def add_file(self, path: str | PathLike) -> None:
        path = Path(path)
        if not path.is_file():
            raise UploadError(f"{display_name(path.name)}: the uploaded file is no longer on "
                              "the server (uploads expire); upload it again")
        if zipfile.is_zipfile(path):
            self.add_zip(path)
            return
        size = path.stat().st_size
        self._budget(size)
        shutil.copyfile(path, self._target(path.name, path.suffix))

    def add_zip(self, path: Path) -> None:
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) > MAX_ZIP_MEMBERS:
                    raise UploadError(f"{display_name(path.name)}: {len(members)} files in the "
                                      f"archive (at most {MAX_ZIP_MEMBERS})")
                for m in members:
                    mode = m.external_attr >> 16
                    base = m.filename.replace("\\", "/").rsplit("/", 1)[-1]
                    if stat.S_ISLNK(mode) or base.startswith("._") or "__MACOSX/" in m.filename:
                        continue  # links, macOS resource forks: never followed or read
                    if base.lower().endswith(".zip"):
                        continue  # nested archives are not unpacked
                    if m.file_size > MAX_UPLOAD_BYTES:
                        raise UploadError(f"{display_name(path.name)}: member {base!r} is too "
                                          "large")
                    target = self._target(base, Path(base).suffix)
                    with zf.open(m) as src, open(target, "wb") as dst:
                        while block := src.read(_CHUNK):
                            self._budget(len(block))  # what is written, not what headers say
                            dst.write(block)
        except zipfile.BadZipFile as exc:
            raise UploadError(f"{display_name(path.name)}: damaged zip archive ({exc})") from None
        except (RuntimeError, NotImplementedError) as exc:  # encrypted / unsupported method
            raise UploadError(f"{display_name(path.name)}: cannot unpack ({exc})") from None

    def humanise(self, text: str) -> str:
        """A message with staged paths replaced by the names the user uploaded."""
        for neutral, original in self.names.items():
            text = text.replace(str(self.folder / neutral), original)
        return text.replace(str(self.folder), "upload")


def display_name(name: str) -> str:
    """The base name of an uploaded file (gradio caches uploads under a hash folder)."""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    return name[:120] or "unnamed file"


class UploadJanitor:
    """Deletes gradio's cached copies of uploaded files once no request needs them.

    Gradio stores uploads by content hash, so two users uploading the same file share one
    cached path (and a request may sit in the queue after its upload). Each request
    ``hold``s its paths and ``release``s them when done; a path is deleted ``grace_s`` seconds
    after its last release, if nobody holds it again by then. Only paths inside ``roots`` are
    ever touched; the hash folder goes too when it is empty.
    """

    def __init__(self, roots: Iterable[str | PathLike], grace_s: float = 20.0):
        self.roots = [Path(r).resolve() for r in roots if r]
        self.grace_s = float(grace_s)
        self._lock = threading.Lock()
        self._held: dict[Path, int] = {}
        self._released: dict[Path, float] = {}

    def _mine(self, paths) -> list[Path]:
        out = []
        for p in paths:
            if p:
                path = Path(p).resolve()
                if any(path.is_relative_to(r) and path != r for r in self.roots):
                    out.append(path)
        return out

    def hold(self, paths) -> list[Path]:
        mine = self._mine(paths)
        with self._lock:
            for p in mine:
                self._held[p] = self._held.get(p, 0) + 1
        return mine

    def release(self, paths) -> None:
        mine = self._mine(paths)
        now = time.monotonic()
        with self._lock:
            for p in mine:
                n = self._held.get(p, 0) - 1
                if n > 0:
                    self._held[p] = n
                else:
                    self._held.pop(p, None)
                    self._released[p] = now
        if self.grace_s <= 0:
            self.sweep()
        else:
            timer = threading.Timer(self.grace_s + 0.05, self.sweep)
            timer.daemon = True
            timer.start()

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [p for p, t in self._released.items()
                   if p not in self._held and now - t >= self.grace_s]
            for p in due:
                self._released.pop(p, None)
        for path in due:
            try:
                path.unlink(missing_ok=True)
                parent = path.parent
                if parent not in self.roots and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
            except OSError:
                log.debug("could not remove a cached upload", exc_info=True)


V = TypeVar("V")


class Memo(Generic[V]):
    """A bounded, thread-safe LRU of computed values: each key is computed once even when
    several sessions ask at the same moment (the others wait for it); a failure is not kept.
    ``computed`` counts the computations (tests read it); ``on_evict`` gets a dropped value."""

    def __init__(self, size: int, on_evict: Callable[[V], None] | None = None):
        self.size = max(1, int(size))
        self.on_evict = on_evict
        self.computed = 0
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Lock] = {}

    def _hit(self, key: Hashable) -> tuple[bool, V | None]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return True, self._items[key]
        return False, None

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        found, value = self._hit(key)
        if found:
            return value  # type: ignore[return-value]
        with self._lock:
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            found, value = self._hit(key)
            if found:
                return value  # type: ignore[return-value]
            try:
                fresh = compute()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            self._store(key, fresh)
            return fresh

    def _store(self, key: Hashable, value: V) -> None:
        dropped = []
        with self._lock:
            self._items[key] = value
            self.computed += 1
            while len(self._items) > self.size:
                dropped.append(self._items.popitem(last=False)[1])
        for old in dropped:
            if self.on_evict is not None:
                self.on_evict(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def remove_files(paths: Iterable[str | None]) -> None:
    """Delete files a cache entry owned (missing ones are fine)."""
    for p in paths:
        if p:
            try:
                Path(p).unlink(missing_ok=True)
            except OSError:
                pass


def content_key(paths: Iterable[str], *extra: Any) -> str:
    """The SHA-256 of the files' bytes (in name-independent sorted order of their digests) and
    ``extra``: the same upload has the same key whatever gradio named its copies."""
    digests = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        digests.append(h.hexdigest())
    text = "|".join(sorted(digests)) + "|" + repr(extra)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
