"""What every command shares: the help epilog, the usage error and small option types.

Light at import (argparse and the runtime's error and provenance words only).
"""
from __future__ import annotations

import argparse

from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.provenance import DISCLAIMER, NOT_A_DEVICE

__all__ = ["DISCLAIMER", "EPILOG", "UsageError", "positive_int"]

#: The line under every command's help.
EPILOG = f"{NOT_A_DEVICE} Docs: README.md; data model: DESIGN.md."


class UsageError(SpineFXError):
    """A bad combination of options (argparse checks single options)."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
