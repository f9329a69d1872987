"""The reading tab's level correction: the picked vertebra's true level, the others renamed in
order (:func:`spinefx.runtime.vertebrae.relabel` through the runtime's whole-spine analysis,
so the list, the report and the DICOM results all carry the corrected names)."""
from __future__ import annotations

from typing import Any

from spinefx.runtime import SpineFXError

from .context import DemoContext, ReadState, Updates, page_guard
from .read_handlers import pick_updates, report_update
from .report import dicom_updates
from .spine_view import run_localiser, spine_updates

PICK_FIRST = "pick a vertebra from the list first, then choose its true level"


@page_guard("status")
def correct_levels(ctx: DemoContext, st: ReadState | None, level: Any,
                   alpha: float) -> Updates:
    """Re-run the analysis with the picked vertebra named ``level``; keep it picked. A new
    analysis object: an example's cached one, shared between sessions, is never changed."""
    if st is None or st.spine is None or st.picked is None:
        raise SpineFXError(PICK_FIRST)
    if not level:
        raise SpineFXError("choose the level the picked vertebra really is")
    previous, i = st.spine, st.picked
    run_localiser(ctx.model.predictor, st, anchor=(i, str(level)))
    if st.spine is None:      # the reading the user had stays, with its own levels
        why = st.spine_error or "the levels could not be corrected"
        st.spine, st.picked, st.spine_error = previous, i, ""
        raise SpineFXError(why)
    out = pick_updates(ctx, st, i, alpha)
    out.update(spine_updates(st))
    out.update(dicom_updates(st))    # a zip prepared before holds the old names: offer anew
    out["status"] = (f"Levels corrected by you: vertebra {i + 1} from the top is {level}, "
                     "the others follow in order.")
    return {**out, **report_update(ctx, st)}
