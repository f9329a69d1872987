"""Load test of the demo: N concurrent gradio_client users x M requests each.

Starts the demo in this process on 127.0.0.1 (or targets --url), then each simulated user
calls /predict_case with an uploaded phantom DICOM study (T1 + T2, ~30 files) and
/predict_example alternately. Reports errors (must be 0), latency percentiles, throughput and
the server process's resident memory before and after.

    python benchmarks/demo_load.py --users 8 --requests 10            # bundled model
    python benchmarks/demo_load.py --model path/to/model --users 8 --requests 10

Research and teaching software; the numbers say how the demo serves, not how well it predicts.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--requests", type=int, default=10, help="requests per user")
    ap.add_argument("--model", default=None, help="model folder (default: bundled)")
    ap.add_argument("--concurrency", type=int, default=None, help="server concurrency limit")
    ap.add_argument("--url", default=None, help="load an already running demo instead")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def phantom_upload(work: Path):
    """A phantom DICOM study (T1 + T2) in ``work``: (its files, its case, the box as text)."""
    from spinefx.phantom import write_phantom_study

    t1_dir, t2_dir, case = write_phantom_study(work / "study", seed=3, label="malignant",
                                               case_id="load")
    files = sorted(str(p) for d in (t1_dir, t2_dir) for p in d.glob("*.dcm"))
    box = ",".join(str(v) for v in case.box)
    return files, case, box


def start_demo(args: argparse.Namespace, work: Path):
    """The demo served from this process on a free port, warmed up: (app, url)."""
    from gradio_client import Client

    from spinefx.demo.app import build_app, launch

    app = build_app(model=args.model, cache_dir=work / "cache", concurrency=args.concurrency)
    port = free_port()
    launch(app, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    Client(url, verbose=False).predict("phantom_benign", api_name="/predict_example")  # warm
    return app, url


def run_users(url: str, users: int, requests: int, files: list[str], case,
              box: str) -> tuple[list[float], list[str], float]:
    """``users`` threads, each its own client, alternating /predict_case (the upload) and
    /predict_example: (latencies in s, errors, wall time in s)."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def user(u: int) -> None:
        client = Client(url, verbose=False)
        for r in range(requests):
            t0 = time.perf_counter()
            try:
                if r % 2 == 0:
                    data, _ = client.predict([handle_file(f) for f in files], "", "",
                                             case.slice, box, "", 0, api_name="/predict_case")
                else:
                    data, _ = client.predict("phantom_malignant", api_name="/predict_example")
                ok = data.get("status") == "ok"
                why = data.get("error")
            except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                ok, why = False, f"{type(exc).__name__}: {exc}"
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if not ok:
                    errors.append(f"user {u} request {r}: {why}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def make_report(args: argparse.Namespace, latencies: list[float], errors: list[str],
                wall: float, app, url: str, rss_before: float, rss_after: float) -> dict:
    """Errors, latency percentiles, throughput and the server's memory (when it is ours)."""
    lat = sorted(latencies)
    return {
        "users": args.users, "requests_per_user": args.requests, "requests": len(lat),
        "errors": len(errors), "error_examples": errors[:5],
        "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 2),
        "latency_s": {"median": round(statistics.median(lat), 3),
                      "p90": round(lat[int(0.9 * (len(lat) - 1))], 3),
                      "max": round(lat[-1], 3)},
        "server_rss_mib": {"before": round(rss_before, 1), "after": round(rss_after, 1)}
        if app is not None else "not measured (--url)",
        "cpus": os.cpu_count(),
        "model": app.spinefx_model.message if app is not None else url,
    }


def main(argv=None) -> int:
    """Run the load test and print its report; 1 if any request failed."""
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio_client loads
    work = Path(tempfile.mkdtemp(prefix="spinefx-load-"))
    files, case, box = phantom_upload(work)
    app, url = (None, args.url) if args.url is not None else start_demo(args, work)
    rss_before = rss_mib()

    latencies, errors, wall = run_users(url, args.users, args.requests, files, case, box)
    time.sleep(1.0)
    rss_after = rss_mib()
    report = make_report(args, latencies, errors, wall, app, url, rss_before, rss_after)
    if app is not None:
        app.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k}: {v}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
