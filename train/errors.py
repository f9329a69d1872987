"""The error every training module raises when a run cannot start or continue."""
from __future__ import annotations

from spinefx.runtime.errors import SpineFXError


class TrainingError(SpineFXError):
    """A training run cannot start or continue (bad split sizes, resume mismatch...)."""
