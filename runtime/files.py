"""Small file helpers every stage shares: atomic writes and JSON reading.

Atomic = written to a temporary file in the same folder, flushed to disk (fsync), then renamed
over the target, so a crash never leaves half a file and a reader never sees one. The temporary
name is unique per write (two writers never share it) and the result gets mode 0644 unless the
caller asks otherwise (``mkstemp`` alone would leave 0600, unreadable for a web server or a
second user of the workstation). :func:`atomic_path` is the same recipe for libraries that
insist on writing to a file name themselves (safetensors, ``np.save``).
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from PIL import Image

from .errors import ConfigError

FILE_MODE = 0o644


def atomic_write_bytes(path: str | PathLike, data: bytes, mode: int = FILE_MODE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | PathLike, text: str, mode: int = FILE_MODE) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def _json_default(o: Any) -> Any:
    """numpy scalars/arrays and paths appear in results; JSON has no type for them."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def atomic_write_json(path: str | PathLike, obj: Any, mode: int = FILE_MODE) -> Path:
    return atomic_write_text(path, json_text(obj), mode)


def atomic_write_csv(path: str | PathLike, columns: Sequence[str],
                     rows: Iterable[Mapping[str, Any]], mode: int = FILE_MODE) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue(), mode)


def atomic_write_png(path: str | PathLike, image: Image.Image, mode: int = FILE_MODE) -> Path:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)
    return atomic_write_bytes(path, buf.getvalue(), mode)


@contextmanager
def atomic_path(path: str | PathLike, suffix: str = ".tmp",
                mode: int = FILE_MODE) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a clean exit it is flushed to disk and
    renamed over ``path``, on an error it is removed. ``suffix``: for writers that append their
    own extension when it is missing (``np.save`` adds ``.npy``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "r+b") as fh:  # the writer closed its own handle: sync by name
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: str | PathLike, required: bool = True) -> Any:
    """The parsed JSON of ``path``.

    ``required=True``: a missing, unreadable or malformed file is a :class:`ConfigError`
    naming the file and the problem. ``required=False``: a missing file gives ``None``; a file
    that exists but cannot be read or parsed is still an error (it is there, so it is wrong).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError("the file is missing", path) from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read ({exc.__class__.__name__}: {exc})", path) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"is not valid JSON ({exc})", path) from None
