"""Atomic writes for writers that insist on a file name (safetensors, numpy).

Everything else uses :mod:`spinefx.runtime.files` (bytes, text, JSON, CSV); this is the same
recipe — a unique temporary name in the target's folder, fsync, mode 0644, ``os.replace`` — for
libraries that write to a path themselves, so large arrays never pass through memory twice.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

from spinefx.runtime.files import FILE_MODE


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
