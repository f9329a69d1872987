"""The long fuzz run of spinefx.runtime's readers (a benchmark script, never a test).

    python benchmarks/fuzz.py --minutes 3 [--seed S] [--out report.json] [--families a,b]

Same harness as tests/fuzz/test_fuzz.py (tests/fuzz/harness.py): every family in turn, seeds
S, S+1, ... until the time is up; each input in a forked child (memory limit, timeout). Prints
the counts by input kind and outcome and the distinct finding signatures (exception type +
first line, paths and numbers generalised), each with one example input. Exit status 1 when
there is any finding.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: tests.fuzz is imported by name
    sys.path.insert(0, str(REPO))

from tests.fuzz import harness  # noqa: E402

THROTTLE_AFTER, THROTTLE_EVERY = 4, 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0, help="first seed (then +1, +2, ...)")
    ap.add_argument("--out", type=Path, help="write a JSON report here")
    ap.add_argument("--families", help="comma-separated subset of: " + ",".join(harness.FAMILIES))
    ap.add_argument("--timeout", type=float, default=harness.DEFAULT_TIMEOUT_S,
                    help="seconds per input")
    ap.add_argument("--mem-gib", type=float, default=harness.DEFAULT_MEM_BYTES / 2**30,
                    help="address-space limit per input")
    args = ap.parse_args(argv)
    families = args.families.split(",") if args.families else harness.FAMILIES
    unknown = [f for f in families if f not in harness.GENERATORS]
    if unknown:
        ap.error(f"unknown families: {unknown}")
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    report = harness.Report()
    throttled: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="spinefx-fuzz-") as tmp:
        seeds = harness.make_seeds(Path(tmp) / "seeds")
        s = args.seed
        while time.monotonic() < deadline:
            # a family that keeps timing out would eat the run: after THROTTLE_AFTER timeouts
            # it runs on every THROTTLE_EVERY-th seed only (said in the summary)
            timeouts = Counter(o.case.family for o in report.outcomes
                               if o.detail.startswith("Timeout"))
            throttled = {f for f, n in timeouts.items() if n >= THROTTLE_AFTER}
            todo = [f for f in families
                    if f not in throttled or (s - args.seed) % THROTTLE_EVERY == 0]
            harness.fuzz(todo, [s], Path(tmp), seeds, deadline=deadline,
                         timeout=args.timeout, mem_bytes=int(args.mem_gib * 2**30),
                         report=report)
            s += 1
    elapsed = time.monotonic() - t0
    counts = report.counts()
    print(f"{len(report.outcomes)} inputs in {elapsed:.0f} s (seeds {args.seed}..{s - 1}, "
          f"{report.skipped} unwritable mutations skipped)")
    if throttled:
        print(f"throttled after {THROTTLE_AFTER} timeouts (every {THROTTLE_EVERY}th seed): "
              f"{', '.join(sorted(throttled))}")
    print(f"{'kind/target':<22}{'ok':>7}{'error':>7}{'finding':>9}")
    for key in sorted(counts):
        c = counts[key]
        print(f"{key:<22}{c['ok']:>7}{c['error']:>7}{c['finding']:>9}")
    by_family: dict[str, dict[str, int]] = {}
    for o in report.outcomes:
        fam = by_family.setdefault(o.case.family, {"ok": 0, "error": 0, "finding": 0})
        fam[o.outcome] += 1
    print("\nby family:")
    for fam in sorted(by_family):
        c = by_family[fam]
        print(f"  {fam:<20}{c['ok']:>7}{c['error']:>7}{c['finding']:>9}")
    sigs = report.signatures()
    print(f"\n{len(report.findings())} findings, {len(sigs)} distinct signatures:")
    for sig, outs in sorted(sigs.items(), key=lambda kv: -len(kv[1])):
        ex = outs[0].case
        print(f"  {len(outs):>4} x {sig}\n         e.g. {ex.family}: {ex.desc[:120]}")
    slowest = sorted(report.outcomes, key=lambda o: -o.seconds)[:3]
    print("\nslowest inputs: " + "; ".join(f"{o.case.family} {o.seconds:.2f} s"
                                          for o in slowest))
    if args.out:
        args.out.write_text(json.dumps({
            "minutes": args.minutes, "first_seed": args.seed, "last_seed": s - 1,
            "inputs": len(report.outcomes), "skipped": report.skipped,
            "counts": {k: dict(v) for k, v in counts.items()},
            "by_family": by_family,
            "signatures": [{"signature": sig, "count": len(outs),
                            "families": sorted({o.case.family for o in outs}),
                            "example": {"family": outs[0].case.family,
                                        "desc": outs[0].case.desc,
                                        "detail": outs[0].detail[:500]}}
                           for sig, outs in sigs.items()],
        }, indent=2))
    return 1 if sigs else 0


if __name__ == "__main__":
    raise SystemExit(main())
