"""Deterministic DICOM UIDs: the same parts give the same UID, on any machine, every time.

The workstation node must never file a result twice: when it analyses a study again (a crash
between sending and recording "done", a retry after the destination was down) the SR, SEG and
capture it sends again carry the SOP Instance and Series UIDs of the first attempt, so PACS
sees the same instances and keeps one copy. The UIDs are therefore a hash of what the result
was made from, never random and never the time.

Prefix: pydicom's own root ``1.2.826.0.1.3680043.8.498.`` (registered to pydicom, meant for
UIDs that software generates). spinefx has no root of its own; a site that wants its
organisation's root in every UID passes ``prefix``. pydicom's ``generate_uid`` with
``entropy_srcs`` hashes the sources (SHA-512) into the digits after the prefix, so the result
is deterministic and at most 64 characters.
"""
from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

__all__ = ["UID_PREFIX", "derived_uid", "fix_dimension_uids"]

#: ``1.2.826.0.1.3680043.8.498.``: pydicom's registered root for generated UIDs.
UID_PREFIX = PYDICOM_ROOT_UID


def derived_uid(*parts: str, prefix: str = UID_PREFIX) -> str:
    """A UID that depends only on ``parts`` (in order) and ``prefix``.

    The parts are joined with a separator that cannot occur inside a part's text as given
    (each part is length-prefixed), so ``("ab", "c")`` and ``("a", "bc")`` differ."""
    if not parts:
        raise ValueError("derived_uid needs at least one part (a UID from nothing would be "
                         "the same for every study)")
    framed = [f"{len(str(p))}:{p}" for p in parts]
    return str(generate_uid(prefix=prefix, entropy_srcs=framed))


def fix_dimension_uids(ds: Dataset, *parts: str) -> None:
    """highdicom draws a multi-frame object's Dimension Organization UID at random: replace
    it (everywhere it appears) by one derived from ``parts``, so the same parts give the same
    bytes."""
    random_uids = {str(item.DimensionOrganizationUID)
                   for item in ds.get("DimensionOrganizationSequence", [])}
    fixed = {uid: derived_uid(*parts, "dimension organization", str(n))
             for n, uid in enumerate(sorted(random_uids))}

    def replace(dataset: Dataset, element: Any) -> None:
        if element.keyword == "DimensionOrganizationUID" and str(element.value) in fixed:
            element.value = fixed[str(element.value)]

    ds.walk(replace)
