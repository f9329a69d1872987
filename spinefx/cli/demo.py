"""``spinefx demo``: serve the Gradio app (:func:`spinefx.demo.build_app` + ``launch``).

gradio and the app load inside :func:`run`, so ``spinefx --help`` works without the demo extra.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import DISCLAIMER, EPILOG, UsageError, add_allow_outside


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help="serve the Gradio demo (read mode for clinicians, teaching mode)",
        description="Serve the web demo: upload a sagittal T1W + T2W study (DICOM, a .zip, or "
                    "PNG/JPEG slices), mark the fractured vertebra, get the malignancy "
                    "probability and a Grad-CAM overlay; or read teaching cases and compare "
                    "your calls with the truth and the model. Needs the demo extra: "
                    "pip install 'spinefx[demo]'.",
        epilog=f"{EPILOG} The bundled model was trained on SYNTHETIC phantoms.")
    p.add_argument("--model", type=str, default=None,
                   help="model folder with model.json + ONNX (default: the bundled model; "
                        "without one the page opens and says so)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 to serve others)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--cases", type=Path, default=None,
                   help="teaching case library: a folder with manifest.csv (default: a bundled "
                        "SYNTHETIC set generated on first use)")
    add_allow_outside(p, "the --cases manifest")
    p.add_argument("--concurrency", type=int, default=None,
                   help="predictions running at once (default 2, or $SPINEFX_DEMO_CONCURRENCY)")
    p.add_argument("--cache", type=Path, default=None,
                   help="where examples and the teaching set are generated (default "
                        "~/.cache/spinefx/demo or $SPINEFX_DEMO_CACHE)")
    p.add_argument("--teaching-data", type=Path, default=None,
                   help="teaching sessions (SQLite), exports and instructor cases (default "
                        "$SPINEFX_TEACHING_DATA, else ~/.local/share/spinefx/teaching)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import gradio  # noqa: F401  (missing: the CLI names the 'demo' extra)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from spinefx.demo import build_app, launch

    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    if args.teaching_data is not None:  # read by the Teaching tab when the app is built
        os.environ["SPINEFX_TEACHING_DATA"] = str(args.teaching_data)
    app = build_app(model=args.model, cases_dir=args.cases, cache_dir=args.cache,
                    concurrency=args.concurrency, allow_outside=args.allow_outside)
    print(f"spinefx demo on http://{args.host}:{args.port}  (Ctrl+C to stop). {DISCLAIMER}")
    launch(app, host=args.host, port=args.port)
    return 0
