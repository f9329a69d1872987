"""The box the classifier sees: the vertebral body under the user's box or click.

Why: the model was trained on tight boxes around the vertebral body (the mask's box on the
lesion slice), and it moves with the box: on 30 held-out SYNTHETIC phantoms a box 3 px off,
20% larger or smaller, or a centre click with the default box moved P by a median 0.07 and a
95th percentile 0.38 (``benchmarks/roi_stability.py --no-snap``). So the runtime segments the
lesion slice with the vertebral-body localiser (the whole slice: the answer must not depend on
where the box is) and gives the model the tight box of the body whose mask holds the given
box's centre. Any box or click whose centre lies in the same body then gives the same input.

The given box is kept, with the reason said, where no body holds its centre (a box on a disc
or on background: the OOD check's "no vertebral body" speaks there), where the piece there does
not look like one vertebral body (taller than :data:`MAX_HEIGHT_TO_WIDTH` x its width: two
bodies the localiser joined; or outside :data:`BODY_SIDE_MM`), or where there is no localiser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .morphology import label_components
from .preprocess import Box, box_from_center
from .volume import Volume

BODY_PROBABILITY = 0.5          # a pixel is vertebral body above this localiser probability
MAX_HEIGHT_TO_WIDTH = 1.25      # a sagittal vertebral body is wider (AP) than it is tall
BODY_SIDE_MM = (8.0, 90.0)      # the body's AP width lies in this range (cervical .. sacral)
MIN_HEIGHT_MM = 2.0             # a vertebra plana is still a few mm tall


@dataclass(frozen=True)
class RoiSnap:
    """Which box the model saw (``box``) and why: ``given`` is what the user gave."""
    box: Box
    given: Box
    snapped: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"snapped": self.snapped, "box": [round(float(v), 3) for v in self.box],
                "box_given": [round(float(v), 3) for v in self.given], "reason": self.reason}


def snap_to_body(t1: Volume, slice_index: int, box: Box, model_dir=None,
                 threads: int = 2) -> RoiSnap:
    """The tight box of the vertebral body under ``box``'s centre on T1 slice ``slice_index``
    (see the module's docstring); the given box, with the reason, when there is none."""
    from .segmentation import LocaliserModelError, segment_bodies

    given = _as_box(box)
    row_mm, col_mm = (float(v) for v in t1.pixel_spacing)
    spacing = (float(t1.slice_spacing), row_mm, col_mm)
    try:
        prob = segment_bodies(t1.data[slice_index:slice_index + 1], spacing, model_dir,
                              threads)[0]
    except LocaliserModelError as exc:
        return RoiSnap(given, given, False, f"box kept: the localiser could not run ({exc})")
    except Exception as exc:  # noqa: BLE001 - fitting refines a box; it never fails a prediction
        return RoiSnap(given, given, False, "box kept: the localiser could not segment the "
                                            f"slice ({type(exc).__name__})")
    return body_box_at(prob > BODY_PROBABILITY, given, (spacing[1], spacing[2]))


def snap_roi(t1: Volume, slice_index: Any, box: Box | None,
             center: tuple[float, float] | None, size_mm: float | None,
             default_size_mm: float) -> RoiSnap | None:
    """:func:`snap_to_body` of a box or a centre click (``size_mm`` or ``default_size_mm``
    square) on T1 slice ``slice_index``, as the runtime fits every ROI it is given; None for a
    malformed ROI (both or neither of box and centre, a slice not on the series, a non-finite
    box), which :func:`spinefx.runtime.build_six_channel` then reports."""
    if (box is None) == (center is None) \
            or not isinstance(slice_index, (int, float, np.integer, np.floating)) \
            or not float(slice_index).is_integer() or not 0 <= int(slice_index) < t1.n_slices:
        return None
    given = box if box is not None else box_from_center(
        center, size_mm or default_size_mm, t1.pixel_spacing)  # type: ignore[arg-type]
    if not all(np.isfinite(given)):
        return None
    return snap_to_body(t1, int(slice_index), given)


def body_box_at(mask: np.ndarray, box: Box, pixel_mm: tuple[float, float]) -> RoiSnap:
    """:func:`snap_to_body` on a boolean (rows, cols) body mask: the box (x1, y1 exclusive) of
    the component holding ``box``'s centre pixel, when it looks like one vertebral body."""
    given = _as_box(box)
    rows, cols = mask.shape
    x, y = int(np.floor((given[0] + given[2]) / 2)), int(np.floor((given[1] + given[3]) / 2))
    if not (0 <= x < cols and 0 <= y < rows) or not mask[y, x]:
        return RoiSnap(given, given, False, "box kept: the localiser finds no vertebral body "
                                            "under the box's centre")
    labels, _ = label_components(mask)
    on_r, on_c = np.nonzero(labels == labels[y, x])
    found = (float(on_c.min()), float(on_r.min()), float(on_c.max() + 1), float(on_r.max() + 1))
    width_mm = (found[2] - found[0]) * pixel_mm[1]
    height_mm = (found[3] - found[1]) * pixel_mm[0]
    if height_mm > MAX_HEIGHT_TO_WIDTH * width_mm:
        return RoiSnap(given, given, False, f"box kept: the body under the centre is "
                                            f"{height_mm:.0f} mm tall and {width_mm:.0f} mm "
                                            "wide, likely two bodies joined")
    if not (BODY_SIDE_MM[0] <= width_mm <= BODY_SIDE_MM[1]) or height_mm < MIN_HEIGHT_MM:
        return RoiSnap(given, given, False, f"box kept: the piece under the centre "
                                            f"({width_mm:.0f} x {height_mm:.0f} mm) is not "
                                            "the size of a vertebral body")
    return RoiSnap(found, given, True, "box fitted to the vertebral body the localiser finds "
                                       "under its centre (the box the model was trained on)")


def _as_box(box: Box) -> Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0, y0, x1, y1)
