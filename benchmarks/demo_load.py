"""Load test of the demo: N concurrent users x M requests each.

Starts the demo in a child process on 127.0.0.1 (the bundled model unless --model), with its
own gradio temp folder and work folder, then each simulated user alternates /predict_case
with an uploaded phantom DICOM study (T1 + T2: one .zip, or --upload files for its 24 files)
and /predict_example, as a light HTTP client by default (Gradio 6's HTTP API over the
standard library, all users as threads of one process: real users' clients run on their own
machines, not on the server's cores), or ``--client gradio_client`` for comparison. Reports
errors (not status ok, no probability, an HTTP error), throughput, latency median/p90/max,
the server's and the clients' CPU seconds, the server's resident memory at the start (after
one warm-up request of each kind) and the end, and the files left in its folders after it
shut down (SIGTERM -> app.close()). Prints a table; --out writes the JSON.

    python benchmarks/demo_load.py --users 20 --requests 10 --out load.json

Every user uploads the same phantom study, so after the first request the server answers
uploads from its per-content cache (decode and inference once); the upload itself over HTTP
is in every request's latency. Research and teaching software; the numbers say how
the demo serves, not how well it predicts.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from load_clients import GradioClientUser, HttpUser  # the script's folder is on sys.path

TARGETS = {"errors": 0, "throughput_rps": 7.98, "p90_s": 3.0, "rss_growth_mib": 50.0,
           "files_left": 0}   # issue 14: 3 x the 2.66 requests/s measured before


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS for the server process")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10, help="requests per user")
    ap.add_argument("--model", default=None, help="model folder (default: bundled)")
    ap.add_argument("--concurrency", type=int, default=None, help="server concurrency limit")
    ap.add_argument("--out", default=None, help="write the report as JSON here")
    ap.add_argument("--client", choices=tuple(USERS), default="http",
                    help="http: Gradio's HTTP API over the standard library (default); "
                         "gradio_client: for comparison")
    ap.add_argument("--client-procs", type=int, default=None,
                    help="client processes the users are spread over (default: 1 for http, "
                         "4 for gradio_client)")
    ap.add_argument("--http-sessions", choices=("user", "call"), default="user",
                    help="http: one gradio session per user (default, as gradio_client) or "
                         "per call (as plain curl calls: gradio keeps each call's session)")
    ap.add_argument("--upload", choices=("zip", "files"), default="zip",
                    help="upload the study as one .zip (default) or as its ~30 DICOM files")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# --- the server (child process) -------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    """Child mode: the demo on 127.0.0.1:<--serve> until SIGTERM, then app.close()."""
    from spinefx.demo.app import build_app, launch

    work = Path(args.work)
    for folder in ("server", "gradio"):
        (work / folder).mkdir(exist_ok=True)
    app = build_app(model=args.model, cache_dir=work / "cache", temp_dir=work / "server",
                    concurrency=args.concurrency)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    launch(app, host="127.0.0.1", port=args.serve, prevent_thread_lock=True, quiet=True)
    print("READY", flush=True)
    stop.wait()
    app.close(verbose=False)
    return 0


def start_server(args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(work / "gradio"),
           "GRADIO_ANALYTICS_ENABLED": "False",
           # teaching sessions (persistent by design, none made here) stay in the run's folder
           "SPINEFX_TEACHING_DATA": str(work / "teaching")}
    cmd = [sys.executable, __file__, "--serve", str(port), "--work", str(work)]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            break
    else:
        raise SystemExit(f"the demo server did not start (exit {proc.wait()})")
    url = f"http://127.0.0.1:{port}/"
    urllib.request.urlopen(url, timeout=60).read()
    return proc, url


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def files_under(*folders: Path) -> list[str]:
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob("*") if p.is_file())


# --- the users ------------------------------------------------------------------------------
def phantom_upload(work: Path, as_zip: bool = True):
    """A phantom DICOM study (T1 + T2) in ``work``: (the files to upload, its case, the box as
    text). ``as_zip``: one .zip of the study (one HTTP upload; gradio_client posts each file
    of a list separately, on a new connection each)."""
    from spinefx.phantom import write_phantom_study

    t1_dir, t2_dir, case = write_phantom_study(work / "study", seed=3, label="malignant",
                                               case_id="load")
    files = sorted(str(p) for d in (t1_dir, t2_dir) for p in d.glob("*.dcm"))
    box = ",".join(str(v) for v in case.box)
    if as_zip:
        archive = work / "study.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, arcname=str(Path(f).relative_to(work / "study")))
        files = [str(archive)]
    return files, case, box


KINDS = ("upload", "example")


USERS = {"http": HttpUser, "gradio_client": GradioClientUser}


def one_request(user, r: int, slice_index: int, box: str) -> tuple[bool, str]:
    """Request ``r`` of a user (even: the upload, odd: the example): (ok, why not)."""
    data = user.predict_case(slice_index, box) if r % 2 == 0 else user.predict_example()
    if data.get("status") != "ok":
        return False, str(data.get("error"))
    p = data.get("probability")
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        return False, f"no probability in the result (got {p!r})"
    return True, ""


def client_group(kind: str, url: str, first: int, users: int, requests: int,
                 files: list[str], slice_index: int, box: str, start, results,
                 sessions: str = "user") -> None:
    """One client process: ``users`` threads, each its own client of ``kind`` (made before
    ``start``, a barrier shared with the others), alternating the upload and the example;
    puts ((kind, latency s) list, errors, its CPU seconds after making the clients) on
    ``results``."""
    latencies: list[tuple[str, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    clients = [USERS[kind](url, files, f"spinefx-load-{first + u}" if sessions == "user"
                           else None) for u in range(users)]
    cpu0 = cpu_s(os.getpid())
    go = threading.Barrier(users + 1)

    def user(u: int) -> None:
        go.wait()
        for r in range(requests):
            t0 = time.perf_counter()
            try:
                ok, why = one_request(clients[u], r, slice_index, box)
            except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                ok, why = False, f"{type(exc).__name__}: {exc}"
            dt = time.perf_counter() - t0
            with lock:
                latencies.append((KINDS[r % 2], dt))
                if not ok:
                    errors.append(f"user {first + u} request {r}: {why}")

    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    start.wait()
    go.wait()
    for t in threads:
        t.join()
    results.put((latencies, errors, cpu_s(os.getpid()) - cpu0))


def run_users(kind: str, url: str, users: int, requests: int, files: list[str], case,
              box: str, procs: int, sessions: str = "user",
              ) -> tuple[list[tuple[str, float]], list[str], float, float]:
    """``users`` simulated users spread over ``procs`` client processes (one Python process
    holds the GIL: 20 gradio_clients in one saturate it before the server; 20 HTTP users do
    not): ((kind, latency s), errors, wall s from the common start to the last answer, the
    clients' CPU s)."""
    mp = multiprocessing.get_context("spawn")
    start, results = mp.Barrier(procs + 1), mp.Queue()
    shares = [users // procs + (1 if i < users % procs else 0) for i in range(procs)]
    workers = [mp.Process(target=client_group,
                          args=(kind, url, sum(shares[:i]), n, requests, files,
                                int(case.slice), box, start, results, sessions))
               for i, n in enumerate(shares)]
    for w in workers:
        w.start()
    start.wait(timeout=300)
    t0 = time.perf_counter()
    gathered = [results.get(timeout=3600) for _ in workers]
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    latencies = [x for lat, _, _ in gathered for x in lat]
    errors = [e for _, errs, _ in gathered for e in errs]
    return latencies, errors, wall, sum(c for _, _, c in gathered)


def warm_up(kind: str, url: str, files: list[str], case, box: str) -> None:
    """One request of each kind (model load, example cache, upload cache) before measuring."""
    user = USERS[kind](url, files)
    for r in (0, 1):
        ok, why = one_request(user, r, int(case.slice), box)
        if not ok:
            raise SystemExit(f"warm-up request failed: {why}")


# --- report ---------------------------------------------------------------------------------
def percentiles(values: list[float]) -> dict:
    lat = sorted(values)
    return {"median": round(statistics.median(lat), 3),
            "p90": round(lat[int(0.9 * (len(lat) - 1))], 3), "max": round(lat[-1], 3)}


def make_report(args: argparse.Namespace, latencies: list[tuple[str, float]],
                errors: list[str], wall: float, rss: tuple[float, float], left: list[str],
                load: tuple[tuple, tuple]) -> dict:
    """The run's figures; ``load``: the load averages before and after it."""
    lat = [dt for _, dt in latencies]
    lat_p90 = percentiles(lat)["p90"]
    report = {
        "users": args.users, "requests_per_user": args.requests, "requests": len(lat),
        "client": args.client, "client_processes": args.client_procs,
        "http_sessions": args.http_sessions if args.client == "http" else "gradio_client's",
        "upload": ("one .zip of the phantom DICOM study" if args.upload == "zip"
                   else "the phantom study's DICOM files"),
        "errors": len(errors), "error_examples": errors[:5],
        "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 2),
        "latency_s": percentiles(lat), "load_average_after": [round(v, 2) for v in load[1]],
        "latency_by_kind_s": {kind: percentiles([dt for k, dt in latencies if k == kind])
                              for kind in KINDS if any(k == kind for k, _ in latencies)},
        "server_rss_mib": {"start": round(rss[0], 1), "end": round(rss[1], 1),
                           "growth": round(rss[1] - rss[0], 1)},
        "files_left_after_shutdown": len(left), "files_left_examples": left[:5],
        "cpus": os.cpu_count(), "load_average_before": [round(v, 2) for v in load[0]],
        "model": args.model or "bundled (weights/)",
        "concurrency": args.concurrency or "default (SPINEFX_DEMO_CONCURRENCY or 2)",
    }
    report["targets_met"] = {
        "errors": len(errors) <= TARGETS["errors"], "p90": lat_p90 <= TARGETS["p90_s"],
        "throughput": report["throughput_rps"] >= TARGETS["throughput_rps"],
        "rss_growth": rss[1] - rss[0] <= TARGETS["rss_growth_mib"],
        "files_left": len(left) <= TARGETS["files_left"]}
    return report


def print_table(report: dict) -> None:
    met, lat, rss = report["targets_met"], report["latency_s"], report["server_rss_mib"]
    rows = [("requests", report["requests"], "", ""),
            ("errors", report["errors"], "0", met["errors"]),
            ("throughput (requests/s)", report["throughput_rps"], ">= 7.98", met["throughput"]),
            ("latency median (s)", lat["median"], "", ""),
            ("latency p90 (s)", lat["p90"], "<= 3", met["p90"]),
            ("latency max (s)", lat["max"], "", ""),
            ("server RSS start (MiB)", rss["start"], "", ""),
            ("server RSS end (MiB)", rss["end"], "", ""),
            ("server RSS growth (MiB)", rss["growth"], "<= 50", met["rss_growth"]),
            ("files left after shutdown", report["files_left_after_shutdown"], "0",
             met["files_left"])]
    print(f"{'measure':28} {'value':>10}  {'target':>8}  met")
    for name, value, target, ok in rows:
        mark = "" if ok == "" else ("yes" if ok else "NO")
        print(f"{name:28} {value!s:>10}  {target:>8}  {mark}")
    for kind, p in report["latency_by_kind_s"].items():
        print(f"{'  ' + kind + ' median / p90 (s)':28} {p['median']:>5} / {p['p90']}")
    print(f"CPU seconds during the run: server {report['cpu_s_during_run']['server']}, "
          f"clients {report['cpu_s_during_run']['clients']}")
    print(f"({report['users']} users x {report['requests_per_user']} requests, "
          f"{report['client']} clients in {report['client_processes']} process(es), "
          f"sessions: {report['http_sessions']}, "
          f"{report['cpus']} CPUs, load average before {report['load_average_before']}, "
          f"after {report['load_average_after']})")


def main(argv=None) -> int:
    """Run the load test and print its table; 1 if any request failed or a file was left."""
    args = parse_args(argv)
    if args.serve is not None:
        return serve(args)
    if args.client_procs is None:
        args.client_procs = 1 if args.client == "http" else 4
    args.client_procs = max(1, min(args.client_procs, args.users))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio_client loads
    work = Path(tempfile.mkdtemp(prefix="spinefx-load-"))
    try:
        report = measure(args, work)
    finally:   # the phantom, the example cache, downloads; also after a failed run
        shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] or report["files_left_after_shutdown"] else 0


def measure(args: argparse.Namespace, work: Path) -> dict:
    """The server started in ``work``, warmed up, loaded, stopped: the report."""
    files, case, box = phantom_upload(work, as_zip=args.upload == "zip")
    load_before = os.getloadavg()
    proc, url = start_server(args, work)
    os.environ["GRADIO_TEMP_DIR"] = str(work / "client")  # the clients' downloads (removed)
    try:
        warm_up(args.client, url, files, case, box)
        rss_start = rss_mib(proc.pid)
        server_cpu = cpu_s(proc.pid)
        latencies, errors, wall, clients_cpu = run_users(
            args.client, url, args.users, args.requests, files, case, box, args.client_procs,
            args.http_sessions)
        cpu = (cpu_s(proc.pid) - server_cpu, clients_cpu)
        time.sleep(1.0)
        rss_end = rss_mib(proc.pid)
        load_after = os.getloadavg()
    finally:
        stop_server(proc)
    left = files_under(work / "gradio", work / "server")
    report = make_report(args, latencies, errors, wall, (rss_start, rss_end), left,
                         (load_before, load_after))
    per_request = round(cpu[0] / max(1, len(latencies)), 3)
    report["cpu_s_during_run"] = {"server": round(cpu[0], 1), "clients": round(cpu[1], 1),
                                  "server_per_request": per_request}
    return report


if __name__ == "__main__":
    sys.exit(main())
