"""Import torchvision even when its compiled ops do not match the installed torch.

The torchvision 0.28.0 wheel on PyPI is a CUDA build. Beside a CPU-only torch its ``_C``
extension cannot load, so the ``torchvision::nms`` / ``torchvision::qnms`` operator schemas are
never defined, and ``import torchvision`` then dies in ``torchvision/_meta_registrations.py``
(``RuntimeError: operator torchvision::nms does not exist``) while registering fake kernels
for them. spinefx needs only ``torchvision.models`` (plain nn.Modules), not those ops.

:func:`import_torchvision` imports torchvision normally; only if that fails with exactly this
error does it define the two schemas (copied from torchvision's ``csrc/ops/nms.cpp`` and
``csrc/ops/quantized/cpu/qnms_kernel.cpp``; no kernels: calling ``torchvision.ops.nms`` would
still fail, which spinefx never does) and import again. Every torchvision import in spinefx
goes through this function.
"""
from __future__ import annotations

import sys
from types import ModuleType

import torch

_MISSING_OP = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# Kept alive at module level: the schemas are removed when the Library object is collected.
_LIBRARY: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, working around a CPU-torch / CUDA-torchvision mix."""
    global _LIBRARY
    try:
        import torchvision
        return torchvision
    except RuntimeError as exc:
        if _MISSING_OP not in str(exc) or _LIBRARY is not None:
            raise
    # forget the half-imported package before trying again
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _LIBRARY.define(schema)
    import torchvision
    return torchvision
