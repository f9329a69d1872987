"""spinefx.demo: the Gradio app for clinicians and teaching sessions (no torch).

``build_app(model=None, cases_dir=None)`` -> ``gr.Blocks`` with a Read tab (upload DICOM / PNG,
mark the vertebra, probability + Grad-CAM) and a Teaching tab (commit a call, then truth, model
and feature key; session score and readers CSV). ``spinefx demo`` serves it; ``app.py`` at the
repository root is the Hugging Face Space entry point. Gradio is imported only by
:mod:`spinefx.demo.app`, so the gradio-free helpers here import without it.
"""
from __future__ import annotations

__all__ = ["build_app", "launch"]


def __getattr__(name: str):
    if name in __all__:
        from . import app
        return getattr(app, name)
    raise AttributeError(name)
