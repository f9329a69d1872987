"""Load test of ``spinefx node``: S scanners push N phantom studies at one node, whose results
go to a real PACS (a benchmark, not a test).

    .venv/bin/python benchmarks/node.py --studies 50 --senders 5 --out node.json

Every study is SYNTHETIC: a phantom (T1 + T2, 15 sagittal slices each, 30 instances), one
seed per study. Orthanc (Debian's package, started by tests/helpers/orthanc.py) and
``spinefx node`` (a subprocess, the bundled model's int8 variant unless --model /
--variant) run on 127.0.0.1; the scanners are dcmtk's storescu, one association per study,
``--senders`` of them at once. A warm-up study (not counted) loads the model first.

Reports (issue 15's targets in brackets):

- cold start: ``spinefx node`` launched -> first C-ECHO answered [<= 1 s];
- lost: studies without their SR, SEG and Secondary Capture in Orthanc at the end, instances
  sent but not on the node [0]; duplicates: result objects Orthanc received more than once
  (its Lua filter counts every C-STORE) or more than one SR/SEG/SC per study [0];
- latency: a study's last instance acknowledged (its storescu exits) -> its three results
  stored in Orthanc, which includes --idle-seconds [median <= 2 s]; also without the idle time
  (with --complete-on-release the node waits for no idle time: both lines are then the same);
- node RSS after the warm-up (model loaded), at the end, the growth [<= 50 MiB];
- per-stage seconds of a job, medians over the counted ones (the node logs them: headers
  read, analysis, DICOM objects built, result files written, sent), and the load average at
  the start and the end (the machine may be shared: the numbers depend on it).

Research software: the numbers say how the node serves, not how well it predicts.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: tests.helpers is imported by name
    sys.path.insert(0, str(REPO))

from spinefx.runtime.node.store import uid_key  # noqa: E402
from tests.helpers.orthanc import (  # noqa: E402
    NODE_AET,
    NODE_PEER,
    NodeProcess,
    Orthanc,
    dicom_files,
    jobs_of,
    node_status,
    port_open,
    storescu,
    study_uid,
)

RESULT_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33": "SR", "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
                  "1.2.840.10008.5.1.4.1.1.7": "SC"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--senders", type=int, default=5, help="concurrent storescu scanners")
    ap.add_argument("--gap", type=float, default=0.0,
                    help="seconds each scanner waits before each study (0: back to back; a "
                         "gap longer than an analysis shows the latency without queueing)")
    ap.add_argument("--slices", type=int, default=15, help="slices per series")
    ap.add_argument("--idle-seconds", type=float, default=1.0,
                    help="the node's idle time that marks a study complete")
    ap.add_argument("--complete-on-release", action="store_true",
                    help="run the node with --complete-on-release (a study is complete when "
                         "its storescu association is released, without the idle time)")
    ap.add_argument("--model", default=None, help="model folder (default: bundled)")
    ap.add_argument("--variant", default="int8", help="ONNX variant of the model (int8, fp32)")
    ap.add_argument("--cold-starts", type=int, default=3,
                    help="cold starts timed (the last one is the node under load)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds to wait for all results (default 60 + 20 per study)")
    ap.add_argument("--out", default=None, help="write the report as JSON here")
    return ap.parse_args(argv)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def make_studies(work: Path, n: int, slices: int) -> list[Path]:
    """``n`` SYNTHETIC phantom studies (T1 + T2 TSE, ``slices`` each), alternately benign and
    malignant, seeds 1000 + i (study 0 of the list is the warm-up)."""
    from spinefx.phantom import write_phantom_study

    folders = []
    for i in range(n):
        folder = work / f"study_{i:03d}"
        write_phantom_study(folder, seed=1000 + i, label=("benign", "malignant")[i % 2],
                            case_id=f"bench{i:03d}", n_slices=slices, t2_variant="T2")
        folders.append(folder)
    return folders


def echo(port: int) -> bool:
    """One C-ECHO to the node: True when an association was accepted and answered."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def cold_start(node: NodeProcess, timeout: float = 60.0) -> dict[str, float]:
    """Seconds from launching the node to its first answered C-ECHO (and to "listening")."""
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # refused connections: expected
    t0 = time.perf_counter()
    node.spawn()
    listening = None
    while time.perf_counter() - t0 < timeout:
        if listening is None and "listening" in node.output():
            listening = time.perf_counter() - t0
        if port_open(node.port) and echo(node.port):  # the TCP probe is the cheaper poll
            return {"to_c_echo_s": round(time.perf_counter() - t0, 3),
                    "to_listening_line_s": round(listening or time.perf_counter() - t0, 3)}
        time.sleep(0.02)
    raise RuntimeError(f"the node answered no C-ECHO within {timeout:.0f} s:\n"
                       f"{node.output()[-2000:]}")


def cold_starts(work: Path, dest_port: int, probes: int) -> list[dict[str, float]]:
    """``probes`` extra cold starts, each on a fresh data folder, killed once it answered (the
    machine is shared: one start alone says little)."""
    timings = []
    for i in range(probes):
        probe = NodeProcess(work / f"cold_{i}", dest_port, work / f"cold_{i}.log")
        try:
            timings.append(cold_start(probe))
        finally:
            probe.kill()
    return timings


class ResultWatcher(threading.Thread):
    """Polls Orthanc's change log: when each (study, result class) was first stored; samples
    the node's RSS meanwhile."""

    def __init__(self, pacs: Orthanc, node_pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pacs, self.node_pid, self.interval = pacs, node_pid, interval
        self.stored: dict[tuple[str, str], float] = {}
        self.instances: dict[str, list[str]] = {}    # study UID -> result classes stored
        self.peak_rss = 0.0
        # studies with all results stored (the warm-up included) -> the node's RSS then
        self.rss_by_done: dict[int, float | None] = {}
        self.stop = threading.Event()
        self.last = self.pacs.get("/changes?last")["Last"]

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()
            self.peak_rss = max(self.peak_rss, rss_mib(self.node_pid) or 0.0)

    def poll(self) -> None:
        while True:
            page = self.pacs.get(f"/changes?since={self.last}&limit=100")
            for change in page["Changes"]:
                if change["ChangeType"] == "NewInstance":
                    self.record(change["ID"])
            self.last = page["Last"]
            if page["Done"]:
                return

    def record(self, instance: str) -> None:
        now = time.perf_counter()
        kind = RESULT_CLASSES.get(self.pacs.sop_class(instance))
        uid = self.pacs.get(f"/instances/{instance}/study")["MainDicomTags"]["StudyInstanceUID"]
        if kind is not None:
            self.stored.setdefault((uid, kind), now)
            self.instances.setdefault(uid, []).append(kind)
            done = sum(1 for u in self.instances if self.complete(u) is not None)
            if done not in self.rss_by_done:
                self.rss_by_done[done] = rss_mib(self.node_pid)

    def complete(self, uid: str) -> float | None:
        """When the last of the study's three results was stored (None: not all yet)."""
        times = [self.stored.get((uid, kind)) for kind in RESULT_CLASSES.values()]
        return None if None in times else max(t for t in times if t is not None)


def send_all(studies: list[Path], port: int, senders: int,
             gap: float = 0.0) -> dict[str, dict[str, Any]]:
    """Every study by one of ``senders`` concurrent storescu scanners, each waiting ``gap``
    seconds before each study: study UID -> (when its last instance was acknowledged,
    storescu's exit status)."""
    def send(folder: Path) -> tuple[str, dict[str, Any]]:
        time.sleep(gap)
        run = storescu(folder, port, timeout=300)
        return study_uid(folder), {"sent_at": time.perf_counter(), "rc": run.returncode,
                                   "error": run.stderr[-300:] if run.returncode else None}

    with ThreadPoolExecutor(max_workers=senders) as pool:
        return dict(pool.map(send, studies))


def wait_warm_up(watcher: ResultWatcher, node: NodeProcess, uid: str, timeout: float) -> float:
    """Seconds until the warm-up study's results are stored; stops at once when its job ends
    without them (the reason is the node's)."""
    t0 = time.perf_counter()
    while watcher.complete(uid) is None:
        jobs = jobs_of(node_status(node.data)[0]) if node.data.exists() else []
        ended = [j for j in jobs if j["state"] in ("failed", "skipped")]
        if ended or time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the warm-up study's results never reached Orthanc: {ended}")
        watcher.poll()
        time.sleep(0.2)
    return time.perf_counter() - t0


def all_ended(node: NodeProcess, n: int) -> bool:
    """Every job of the run (and the warm-up's) done, failed or skipped: nothing more comes."""
    jobs = jobs_of(node_status(node.data)[0])
    return len(jobs) > n and all(j["state"] in ("done", "failed", "skipped") for j in jobs)


STAGE_LINE = re.compile(r"job (\d+): stage seconds: (.+)")


def stage_medians(log_text: str, skip_jobs: int = 1) -> dict[str, float | None]:
    """Median seconds of each stage over the jobs the node's log times (the first
    ``skip_jobs`` job numbers, the warm-up, left out)."""
    per_stage: dict[str, list[float]] = {}
    for match in STAGE_LINE.finditer(log_text):
        if int(match.group(1)) <= skip_jobs:
            continue
        for part in match.group(2).split(","):
            name, seconds = part.split()
            per_stage.setdefault(name, []).append(float(seconds))
    return {name: rnd(statistics.median(v)) for name, v in per_stage.items()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rnd(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def latency_stats(latencies: list[float], minus: float = 0.0) -> dict[str, float | None]:
    """Median, p90 (nearest rank) and max of ``latencies`` less ``minus``, in seconds."""
    ordered = sorted(v - minus for v in latencies)
    if not ordered:
        return {"median": None, "p90": None, "max": None}
    p90 = ordered[min(len(ordered) - 1, int(0.9 * (len(ordered) - 1) + 0.5))]
    return {"median": rnd(statistics.median(ordered)), "p90": rnd(p90), "max": rnd(ordered[-1])}


def make_report(args: argparse.Namespace, studies: list[Path], sends: dict[str, dict[str, Any]],
                watcher: ResultWatcher, pacs: Orthanc, node: NodeProcess,
                extra: dict[str, Any]) -> dict[str, Any]:
    uids = [study_uid(s) for s in studies]
    latencies = [done - sends[u]["sent_at"] for u in uids
                 if (done := watcher.complete(u)) is not None]
    # a result stored twice under one UID (Orthanc's receive count) or under two UIDs
    repeated = sum(1 for n in pacs.received().values() if n > 1)
    extra_objects = sum(max(0, len(watcher.instances.get(u, [])) - 3) for u in uids)
    jobs = jobs_of(node_status(node.data)[0])
    counted = {uid_key(u)[:8] for u in uids}  # status names a study by its key, never its UID
    analysis = [float(j["analysis_seconds"]) for j in jobs
                if j["study"] in counted and j["analysis_seconds"] is not None]
    on_node = sum(int(j["instances"]) for j in jobs) - extra["warm_up_instances"]
    sent = sum(len(dicom_files(s)) for s in studies)
    growth = None if None in (extra["rss_end"], extra["rss_warm"]) else \
        extra["rss_end"] - extra["rss_warm"]
    return {
        "studies": len(studies), "senders": args.senders, "gap_s": args.gap,
        "instances_per_study": sent // max(1, len(studies)),
        "idle_seconds": args.idle_seconds, "complete_on_release": args.complete_on_release,
        "cpus": os.cpu_count(),
        "model": args.model or "bundled", "variant": args.variant,
        "cold_start": extra["cold_start"], "warm_up_s": rnd(extra["warm_up_s"]),
        "send_errors": sum(1 for s in sends.values() if s["rc"] != 0),
        "lost_studies": len(uids) - len(latencies), "lost_instances": sent - on_node,
        "duplicate_results": repeated + extra_objects,
        "jobs": {state: sum(j["state"] == state for j in jobs)
                 for state in sorted({j["state"] for j in jobs})},
        "latency_s": latency_stats(latencies),
        # with complete_on_release the node waited no idle time: nothing to subtract
        "latency_minus_idle_s": latency_stats(
            latencies, 0.0 if args.complete_on_release else args.idle_seconds),
        "analysis_s": latency_stats(analysis),
        "stage_s_median": stage_medians(node.output()),
        "load_average_1_5_15": {"start": extra["load_start"], "end": load_average()},
        "wall_s": rnd(extra["wall_s"]),
        "throughput_studies_per_min": rnd(60 * len(latencies) / extra["wall_s"]),
        "node_rss_mib_by_studies_done": {k: rnd(v) for k, v in watcher.rss_by_done.items()},
        "node_rss_mib": {"after_warm_up": rnd(extra["rss_warm"]), "peak": rnd(watcher.peak_rss),
                         "end": rnd(extra["rss_end"]), "growth": rnd(growth)},
    }


def print_table(report: dict[str, Any]) -> None:
    rows = [("studies x instances", f"{report['studies']} x {report['instances_per_study']}"),
            ("senders, gap before each study", f"{report['senders']}, {report['gap_s']} s"),
            ("complete on release", report["complete_on_release"]),
            ("cold start -> C-ECHO, median",
             f"{report['cold_start']['median_to_c_echo_s']} s of "
             + ", ".join(str(r["to_c_echo_s"]) for r in report["cold_start"]["runs"])
             + " (target <= 1)"),
            ("warm-up study (model load)", f"{report['warm_up_s']} s"),
            ("lost studies / instances",
             f"{report['lost_studies']} / {report['lost_instances']} (target 0)"),
            ("duplicate results", f"{report['duplicate_results']} (target 0)"),
            ("send errors", report["send_errors"]), ("jobs", report["jobs"]),
            ("latency median / p90 / max",
             " / ".join(str(report["latency_s"][k]) for k in ("median", "p90", "max"))
             + (" s (complete on release: no idle wait" if report["complete_on_release"]
                else f" s (incl. idle {report['idle_seconds']} s") + "; target median <= 2)"),
            ("  without idle median / p90 / max",
             " / ".join(str(report["latency_minus_idle_s"][k]) for k in ("median", "p90", "max"))
             + " s"),
            ("node RSS warm / peak / end",
             " / ".join(str(report["node_rss_mib"][k]) for k in ("after_warm_up", "peak", "end"))
             + " MiB"),
            ("node RSS growth", f"{report['node_rss_mib']['growth']} MiB (target <= 50)"),
            ("analysis per study median / p90 / max",
             " / ".join(str(report["analysis_s"][k]) for k in ("median", "p90", "max")) + " s"),
            ("stages of a job, median s", ", ".join(f"{k} {v}" for k, v in
                                                    report["stage_s_median"].items())),
            ("load average start / end", f"{report['load_average_1_5_15']['start']} / "
                                         f"{report['load_average_1_5_15']['end']}"),
            ("throughput", f"{report['throughput_studies_per_min']} studies/min"),
            ("wall", f"{report['wall_s']} s"), ("cpus", report["cpus"])]
    width = max(len(name) for name, _ in rows)
    print("spinefx node load test (SYNTHETIC phantom studies)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    """Run the load test, print its table (and write --out); 1 if anything was lost or
    duplicated."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="spinefx-node-bench-"))
    try:
        report = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    bad = report["lost_studies"] or report["lost_instances"] or report["duplicate_results"]
    return 1 if bad or report["send_errors"] else 0


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The load test in ``work``: its report."""
    load_start = load_average()
    studies = make_studies(work / "studies", args.studies + 1, args.slices)
    warm_up, studies = studies[0], studies[1:]
    timeout = args.timeout or 60.0 + 20.0 * args.studies
    config = {k: v for k, v in (("model", args.model), ("variant", args.variant),
                                ("complete_on_release", args.complete_on_release)) if v}
    with Orthanc(modalities=NODE_PEER, root=work) as pacs:
        node = NodeProcess(work / "data", pacs.dicom_port, work / "node.log",
                           idle_seconds=args.idle_seconds, config=config or None)
        try:
            starts = cold_starts(work, pacs.dicom_port, max(0, args.cold_starts - 1))
            starts.append(cold_start(node))
            extra: dict[str, Any] = {"load_start": load_start, "cold_start": {
                "runs": starts,
                "median_to_c_echo_s": statistics.median(s["to_c_echo_s"] for s in starts)}}
            assert node.process is not None
            watcher = ResultWatcher(pacs, node.process.pid)
            storescu(warm_up, node.port)
            extra["warm_up_s"] = wait_warm_up(watcher, node, study_uid(warm_up), timeout)
            extra["warm_up_instances"] = len(dicom_files(warm_up))
            extra["rss_warm"] = rss_mib(node.process.pid)
            watcher.start()
            t0 = time.perf_counter()
            sends = send_all(studies, node.port, args.senders, args.gap)
            uids = list(sends)
            while (any(watcher.complete(u) is None for u in uids)
                   and time.perf_counter() - t0 < timeout and not all_ended(node, len(uids))):
                time.sleep(1.0)
            extra["wall_s"] = time.perf_counter() - t0
            time.sleep(max(2.0, args.idle_seconds))  # a late second copy would show now
            watcher.stop.set()
            watcher.join()
            watcher.poll()
            extra["rss_end"] = rss_mib(node.process.pid)
            report = make_report(args, studies, sends, watcher, pacs, node, extra)
        finally:
            node.stop()
    return report


if __name__ == "__main__":
    sys.exit(main())
