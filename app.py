"""Hugging Face Space entry point: the same app as `spinefx demo`.

A Space runs `python app.py`; locally, `python app.py` serves on http://127.0.0.1:7860.
Environment: SPINEFX_MODEL (a model folder; default the bundled model), SPINEFX_CASES (a
teaching library folder with manifest.csv), SPINEFX_DEMO_CACHE, SPINEFX_DEMO_CONCURRENCY.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from spinefx.demo.app import build_app, launch  # noqa: E402

demo = build_app(model=os.environ.get("SPINEFX_MODEL") or None,
                 cases_dir=os.environ.get("SPINEFX_CASES") or None)

if __name__ == "__main__":
    # On a Space, GRADIO_SERVER_NAME=0.0.0.0 is set by the platform; launch() honours it.
    launch(demo, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
