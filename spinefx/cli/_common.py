"""What every command shares: the help epilog, the usage error and small option types.

Light at import (argparse and the runtime's error and provenance words only).
"""
from __future__ import annotations

import argparse
import os
import sys

from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.provenance import DISCLAIMER, NOT_A_DEVICE

__all__ = ["DISCLAIMER", "EPILOG", "UsageError", "add_allow_outside", "positive_int",
           "show_progress"]

#: The line under every command's help.
EPILOG = f"{NOT_A_DEVICE} Docs: README.md; data model: DESIGN.md."


class UsageError(SpineFXError):
    """A bad combination of options (argparse checks single options)."""


def level_anchor(text: str) -> tuple[int, str]:
    """An argparse type for ``--anchor``: 'N=LEVEL' -> (N - 1, LEVEL)."""
    number, _, level = text.partition("=")
    try:
        index = int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N=LEVEL (e.g. 5=L5), got {text!r}") from None
    if index < 1 or not level.strip():
        raise argparse.ArgumentTypeError(f"expected N=LEVEL with N >= 1, got {text!r}")
    return index - 1, level.strip()


ANCHOR_HINT = "if the count is wrong, run again with --anchor N=LEVEL"
ANCHOR_HELP = ("correct the level count: body N (1 = the most superior found) is LEVEL, "
               "e.g. 5=L5; the others follow in order")


def positive_int(text: str) -> int:
    """An argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_allow_outside(p: argparse.ArgumentParser, which: str = "the manifest",
                      note: str = "") -> None:
    """``--allow-outside``: series paths of ``which`` may lie outside its folder (absolute
    paths, ``..``), as an institution's own manifest often has them
    (:func:`spinefx.runtime.read_manifest` refuses them otherwise). ``note``: what else the
    permission means for this command."""
    p.add_argument("--allow-outside", action="store_true",
                   help=f"allow series paths of {which} outside its folder (absolute paths or "
                        f"'..'; refused otherwise){note}")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--no-progress``, and only where tqdm would show them by itself:
    on a terminal, without TQDM_DISABLE (stages that turn a bar off only when told to would
    otherwise print bars into logs)."""
    if getattr(args, "no_progress", False):
        return False
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False
