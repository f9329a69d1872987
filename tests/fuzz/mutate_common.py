"""Mutation tools shared by the families: byte flips, truncation, fresh case folders."""
from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path

from pydicom import config as dcm_config

# --------------------------------------------------------------------------- mutation tools


def flip_bytes(data: bytes, rng: random.Random, n: int | None = None,
               region: int | None = None) -> bytes:
    b = bytearray(data)
    if not b:
        return bytes(b)
    n = n or rng.randint(1, 16)
    hi = min(len(b), region) if region else len(b)
    for _ in range(n):
        i = rng.randrange(hi)
        mode = rng.random()
        if mode < 0.5:
            b[i] ^= 1 << rng.randrange(8)
        elif mode < 0.8:
            b[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(b)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data) + 1)] if data else data


@contextlib.contextmanager
def _lenient_pydicom():
    """Let pydicom write any value (restored afterwards: the code under test keeps defaults)."""
    s = dcm_config.settings
    saved = (s.reading_validation_mode, s.writing_validation_mode)
    s.reading_validation_mode = dcm_config.IGNORE
    s.writing_validation_mode = dcm_config.IGNORE
    try:
        yield
    finally:
        s.reading_validation_mode, s.writing_validation_mode = saved


def _fresh(out: Path, name: str) -> Path:
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def _copy_series(src: Path, out: Path, name: str) -> tuple[Path, list[Path]]:
    dest = _fresh(out, name)
    for f in sorted(src.iterdir()):
        shutil.copy2(f, dest / f.name)
    return dest, sorted(dest.iterdir())


