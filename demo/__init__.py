"""spinefx.demo: the Gradio app for clinicians and teaching sessions (no torch).

``build_app(model=None, cases_dir=None)`` -> ``gr.Blocks`` with a Read tab (upload DICOM / PNG,
mark the vertebra, probability + Grad-CAM) and a Teaching tab (commit a call, then truth, model
and feature key; session score and readers CSV). ``spinefx demo`` serves it; ``app.py`` at the
repository root is the Hugging Face Space entry point. Importing this package loads gradio (the
demo extra); the ``spinefx`` command line imports it only when ``spinefx demo`` runs.
"""
from __future__ import annotations

from .app import build_app, launch

__all__ = ["build_app", "launch"]
