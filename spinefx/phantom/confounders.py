"""Benign confounders real spines have, drawn at the same rates in both classes.

Skeleton: :func:`draw_confounders` and :func:`paint_confounders` are the hooks
:mod:`spinefx.phantom.case` calls; the painters are filled in by the confounder work.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .anatomy import Canvas, SliceGeometry
from .lesion import Lesion
from .spine import SpineSpec


@dataclass
class Confounders:
    """The confounders of one case (class-independent draws only)."""
    items: list[tuple] = field(default_factory=list)


def draw_confounders(rng: np.random.Generator, spec: SpineSpec, lesion: Lesion,
                     variation: float = 1.0) -> Confounders:
    """Draw the case's confounders; never looks at the label."""
    return Confounders()


def paint_confounders(strip: np.ndarray, cv: Canvas, geo: SliceGeometry,
                      conf: Confounders) -> None:
    """Paint the confounders onto one slice's strip labels (in place)."""
