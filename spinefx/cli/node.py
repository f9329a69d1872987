"""``spinefx node``: the scanner-side DICOM node (:mod:`spinefx.runtime.node`), and
``spinefx node status``: its jobs, without PHI."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ._common import EPILOG

#: option dest -> NodeConfig key (the config file uses the same keys)
OPTION_KEYS = ("data", "port", "ae_title", "dest", "host", "allow", "idle_seconds",
               "complete_on_release", "report_skipped", "parametric_map", "watch",
               "retention_days", "model", "variant")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "node", help="DICOM node: receive studies, analyse them, send SR/SEG/SC to a PACS",
        description="Listen as a DICOM Storage SCP (C-ECHO, C-STORE), keep each instance on "
                    "disk before answering, analyse each study once no instance arrived for "
                    "--idle-seconds (sagittal T1/T2 pair, vertebrae, grades, the classifier) "
                    "and send a Comprehensive SR, a SEG and a Secondary Capture (and with "
                    "--parametric-map a Parametric Map of the Grad-CAM) to --dest. "
                    "Studies that cannot be analysed (not MR, no sagittal T1/T2) end "
                    "'skipped' with the reason. Crash-safe: restart after any crash and every "
                    "job finishes once. Prints 'spinefx node: listening as AET on HOST:PORT' "
                    "when ready. 'spinefx node status --data DIR' lists the jobs (no PHI).",
        epilog=EPILOG)
    p.add_argument("action", nargs="?", choices=["status"],
                   help="'status': list the jobs of --data (job number, state, timings, "
                        "error) and exit")
    p.add_argument("--data", metavar="DIR",
                   help="data folder: received instances, results, job table")
    p.add_argument("--port", metavar="P", help="port to listen on (0: any free port, printed)")
    p.add_argument("--ae-title", dest="ae_title", metavar="AET", help="the node's AE title")
    p.add_argument("--dest", metavar="AET@HOST:PORT",
                   help="where results go (a Storage SCP, e.g. ORTHANC@127.0.0.1:4242)")
    p.add_argument("--host", metavar="HOST",
                   help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 for the network, with --allow)")
    p.add_argument("--allow", metavar="AET,...",
                   help="calling AE titles allowed to send (default: any)")
    p.add_argument("--idle-seconds", dest="idle_seconds", type=float, metavar="S",
                   help="a study is complete after this many seconds without a new instance "
                        "(default 10)")
    p.add_argument("--complete-on-release", dest="complete_on_release", action="store_true",
                   default=None,
                   help="a study is also complete as soon as the association that sent it is "
                        "released, without waiting --idle-seconds (for senders that send each "
                        "study in one association, as storescu and most scanners do)")
    p.add_argument("--report-skipped", dest="report_skipped", action="store_true",
                   default=None,
                   help="send a short SR into an MR study the node cannot analyse (no sagittal "
                        "T1/T2 pair, ...) saying so and why; never into a study that is not MR")
    p.add_argument("--parametric-map", dest="parametric_map", action="store_true",
                   default=None,
                   help="also send a DICOM Parametric Map of the classifier's Grad-CAM of "
                        "each classified vertebra, on the T1 series (relative evidence, 0-1)")
    p.add_argument("--watch", metavar="DIR",
                   help="also take DICOM files dropped into this folder (removed "
                   "once stored)")
    p.add_argument("--retention-days", dest="retention_days", type=float, metavar="DAYS",
                   help="delete instances and results of finished jobs after this many days "
                        "(default 7; 0 keeps them)")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--variant", metavar="NAME",
                   help="ONNX variant of the model (fp32, int8; default "
                   "model.json's)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="JSON file with the same keys (ae_title, port, data, dest, allow, "
                        "idle_seconds, ...); options given here win")
    p.add_argument("--json", action="store_true", help="with status: print JSON")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from spinefx.runtime.errors import SpineFXError

    from ._common import UsageError

    if args.action == "status":
        if not args.data:
            raise UsageError("spinefx node status needs --data DIR")
        return status(Path(args.data), args.json)
    if args.json:
        raise UsageError("--json belongs to 'spinefx node status'")
    from spinefx.runtime.node.config import NodeConfig
    from spinefx.runtime.node.service import run_node

    config = NodeConfig.from_sources({k: getattr(args, k) for k in OPTION_KEYS}, args.config)
    try:
        return run_node(config)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("pynetdicom", "highdicom"):
            raise
        raise SpineFXError(str(exc) if "spinefx[node]" in str(exc) else
                           f"spinefx node needs the 'node' extra: pip install "
                           f"'spinefx[node]' (no module named {exc.name!r})") from None


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.gmtime(epoch))


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def job_summary(job: Any) -> dict[str, Any]:
    """What status shows of a job: no UID, no patient or study value."""
    latency = None if job.finished_at is None or job.last_instance_at is None else \
        job.finished_at - job.last_instance_at
    return {"job": job.id, "study": job.study_key[:8], "state": job.state,
            "instances": job.instances, "revision": job.revision, "results": job.results,
            "sent": job.sent, "attempts": job.attempts, "reason": job.reason,
            "first_instance_at": job.first_instance_at,
            "last_instance_at": job.last_instance_at, "completed_at": job.completed_at,
            "analysis_started_at": job.analysis_started_at,
            "analysis_seconds": _seconds(job.analysis_seconds),
            "finished_at": job.finished_at, "latency_seconds": _seconds(latency),
            "next_attempt_at": job.next_attempt_at, "files_removed": job.purged_at is not None}


def status(data: Path, as_json: bool) -> int:
    """Print the job table of a data folder (read-only: works while the node runs)."""
    from spinefx.runtime.node.store import STATES, JobStore

    store = JobStore(data, readonly=True)
    jobs = [job_summary(j) for j in store.jobs()]
    store.close()
    counts = {s: sum(j["state"] == s for j in jobs) for s in STATES}
    if as_json:
        print(json.dumps({"jobs": jobs, "counts": counts}, indent=2))
        return 0
    by_state = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    print(f"{len(jobs)} job{'' if len(jobs) == 1 else 's'}: {by_state}")
    if not jobs:
        return 0
    print(f"{'job':>5}  {'study':8}  {'state':9}  {'inst':>5}  {'last instance (UTC)':19}  "
          f"{'analysis s':>10}  {'latency s':>9}  {'sent':>5}  {'tries':>5}  reason")
    for j in jobs:
        sent = f"{j['sent']}/{j['results']}" if j["results"] is not None else "-"
        analysis = "-" if j["analysis_seconds"] is None else f"{j['analysis_seconds']:.2f}"
        latency = "-" if j["latency_seconds"] is None else f"{j['latency_seconds']:.2f}"
        print(f"{j['job']:>5}  {j['study']:8}  {j['state']:9}  {j['instances']:>5}  "
              f"{_when(j['last_instance_at']):19}  {analysis:>10}  {latency:>9}  {sent:>5}  "
              f"{j['attempts']:>5}  {j['reason'] or ''}", file=sys.stdout)
    return 0
