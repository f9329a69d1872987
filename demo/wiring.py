"""Gradio wiring shared by the demo's tabs: handlers return name-keyed updates; ``bind`` maps
them onto the components of one page's ``UI`` dict."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .context import DemoContext

UI = dict[str, Any]   # component name -> gradio component


def bind(ctx: DemoContext, ui: UI, fn: Callable[..., dict], *fixed: Any) -> Callable:
    """A gradio callback: ``fn(ctx, *fixed, *inputs)`` with its name-keyed updates mapped to
    the components."""
    def callback(*inputs: Any) -> dict:
        return {ui[name]: value for name, value in fn(ctx, *fixed, *inputs).items()}
    callback.__name__ = getattr(fn, "__name__", "handler")
    return callback


def pick(ui: UI, names: Sequence[str]) -> list:
    return [ui[n] for n in names]
