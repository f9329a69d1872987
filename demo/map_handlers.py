"""The reading tab's "occlusion map" button: the current result's map recomputed by occlusion
(spinefx.runtime.occlusion) instead of the graph's Grad-CAM; the probability stays the same.
Its own module so read_handlers stays one screenful per handler and under ~400 lines."""
from __future__ import annotations

from dataclasses import replace

from spinefx.runtime import SpineFXError

from .context import DemoContext, ReadState, Updates, page_guard
from .read_handlers import report_update, result_updates

OCCLUSION_DONE = ("Occlusion map shown: bright where hiding that part of the box lowers the "
                  "probability most (49 more model runs). Predict again for the Grad-CAM.")


@page_guard("status")
def show_occlusion(ctx: DemoContext, st: ReadState | None, alpha: float) -> Updates:
    if st is None or st.last is None:
        raise SpineFXError("predict first: the occlusion map explains the current result")
    result = st.last
    remapped = replace(result, prediction=ctx.model.require().remap(result.prediction,
                                                                     "occlusion"))
    out = result_updates(ctx, st, remapped, alpha)
    out["status"] = OCCLUSION_DONE
    return {**out, **report_update(ctx, st)}
