"""The sandboxed runner: a fuzz input, the targets it may call, and its outcome.

Each input runs in a forked child with ``RLIMIT_AS`` (default 3 GiB) and a wall-clock timeout,
so a hang or a huge allocation is reported as a finding, not a stuck test. An outcome is
``ok``, ``error`` (a ``SpineFXError`` naming the file) or ``finding`` (anything else).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import re
import resource
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spinefx.runtime import (
    align_pair,
    build_six_channel,
    load_series,
    load_volume,
    prepare_case,
    read_manifest,
    scan_study,
)
from spinefx.runtime.errors import SpineFXError

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEM_BYTES = 3 * 2**30
N_SLICES, ROWS, COLS = 6, 32, 32
SEED_BOX = (8.0, 8.0, 24.0, 24.0)


# ----------------------------------------------------------------------------------- cases


@dataclass
class FuzzInput:
    """One generated input: what to call (``target``) on which paths, and the names an error
    message must mention (any one of them)."""
    kind: str
    family: str
    target: str
    paths: tuple[str, ...]
    names: tuple[str, ...]
    desc: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Outcome:
    case: FuzzInput
    outcome: str  # ok | error | finding
    detail: str  # exception type + first line (error / finding)
    seconds: float

    @property
    def signature(self) -> str:
        return f"[{self.case.target}] {normalise_detail(self.detail)}"


def normalise_detail(detail: str) -> str:
    """Exception type + first line with paths and numbers generalised (for deduplication)."""
    line = detail.splitlines()[0] if detail else ""
    line = re.sub(r"(/[^\s:'\"),]+)+", "<path>", line)
    line = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", line)
    return line[:200]


# ---------------------------------------------------------------------------------- targets


def _target_scan(case: FuzzInput):
    scan_study(case.extra["list"] if "list" in case.extra else case.paths[0])


def _target_load_series(case: FuzzInput):
    load_series(case.extra["list"] if "list" in case.extra else case.paths[0])


def _target_load_volume(case: FuzzInput):
    vol = load_volume(case.paths[0])
    if not np.isfinite(vol.data).all():
        raise _Finding("non-finite voxels in a loaded Volume")


def _target_manifest(case: FuzzInput):
    read_manifest(case.paths[0])


def _target_e2e(case: FuzzInput):
    t1 = load_volume(case.paths[0], "T1")
    t2 = load_volume(case.paths[1], "T2")
    pair = align_pair(t1, t2)
    if "center" in case.extra:
        mi = build_six_channel(pair, case.extra.get("k", 2), center=case.extra["center"],
                               size_mm=case.extra.get("size_mm"))
    else:
        mi = build_six_channel(pair, case.extra.get("k", 2),
                               box=case.extra.get("box", SEED_BOX))
    arr = np.asarray(mi.array)
    if arr.ndim != 3 or arr.shape[0] != 6 or arr.dtype != np.float32:
        raise _Finding(f"model input has shape {arr.shape} dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise _Finding(f"non-finite model input ({int((~np.isfinite(arr)).sum())} values)")


def _target_manifest_e2e(case: FuzzInput):
    for c in read_manifest(case.paths[0]):
        arr = np.asarray(prepare_case(c).array)
        if not np.isfinite(arr).all():
            raise _Finding(f"non-finite model input for case {c.case_id}")


TARGETS: dict[str, Callable[[FuzzInput], None]] = {
    "manifest_e2e": _target_manifest_e2e,
    "scan": _target_scan,
    "load_series": _target_load_series,
    "load_volume": _target_load_volume,
    "manifest": _target_manifest,
    "e2e": _target_e2e,
}


class _Finding(Exception):
    """A contract breach detected by the harness itself (e.g. NaN in the model input)."""


# ----------------------------------------------------------------------------------- runner


def _mapped_bytes() -> int:
    """The address space this process maps now (VmSize), 0 where /proc cannot tell."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _child(case: FuzzInput, conn, mem_bytes: int) -> None:
    # the bound is on what the input makes us allocate: ``mem_bytes`` beyond what the forked
    # parent already maps (a pytest worker that imported torch maps several GiB itself)
    limit = _mapped_bytes() + mem_bytes
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    warnings.simplefilter("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)  # decoders' own chatter (Rust panic traces)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        TARGETS[case.target](case)
        result = ("ok", "")
    except SpineFXError as exc:
        msg = str(exc)
        if any(n and n in msg for n in case.names):
            result = ("error", f"{type(exc).__name__}: {msg}")
        else:
            result = ("finding", f"SpineFXError without the file's name: "
                                 f"{type(exc).__name__}: {msg}")
    except _Finding as exc:
        result = ("finding", f"ContractBreach: {exc}")
    except BaseException as exc:  # noqa: BLE001 - the point: anything else is a finding
        result = ("finding", f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
    try:
        conn.send(result)
    except BaseException:  # noqa: BLE001
        conn.send(("finding", "unpicklable result"))
    conn.close()


def run_case(case: FuzzInput, timeout: float = DEFAULT_TIMEOUT_S,
             mem_bytes: int = DEFAULT_MEM_BYTES) -> Outcome:
    """Run one input in a forked child under a memory limit and a wall-clock timeout."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    t0 = time.monotonic()
    proc = ctx.Process(target=_child, args=(case, send, mem_bytes), daemon=True)
    proc.start()
    send.close()
    result = None
    try:
        if recv.poll(timeout):
            try:
                result = recv.recv()
            except EOFError:
                result = None
        else:
            result = ("finding", f"Timeout: no result within {timeout:g} s")
            proc.kill()
    finally:
        recv.close()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if result is None:
        code = proc.exitcode
        result = ("finding", f"ChildDied: exit code {code} (killed by a signal or the "
                             "memory limit)" if code else "ChildDied: no result")
    return Outcome(case, result[0], result[1], time.monotonic() - t0)



@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0

    def counts(self) -> dict[str, Counter]:
        by_kind: dict[str, Counter] = {}
        for o in self.outcomes:
            by_kind.setdefault(f"{o.case.kind}/{o.case.target}", Counter())[o.outcome] += 1
        return by_kind

    def findings(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome == "finding"]

    def signatures(self) -> dict[str, list[Outcome]]:
        sigs: dict[str, list[Outcome]] = {}
        for o in self.findings():
            sigs.setdefault(o.signature, []).append(o)
        return sigs
