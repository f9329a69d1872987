"""The DICOM results of a whole-spine analysis, ready to send to PACS: SR, SEG and capture.

:func:`dicom_results` builds the Comprehensive SR (:mod:`.dicom_sr`), the vertebral-body SEG
(:mod:`.dicom_seg`) and the overlay's Secondary Capture (:mod:`.outputs`) in the source study,
and on request a Parametric Map of the classifier's maps (:mod:`.dicom_pm`).
Every UID derives from ``seed`` and the study's UID (:mod:`.dicom_uids`): the node analyses a
study again after a crash or a failed send and sends the *same* instances, which PACS keeps
once. :func:`result_seed` is a seed that changes exactly when the result could: another
series, another slice count, another model, another spinefx, another result.

``created`` fixes the Content/Instance Creation date and time; the node records it with the
job the first time, so a retry gives byte-identical files, not only identical UIDs.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from pydicom.dataset import Dataset

from .dicom_pm import parametric_map as build_parametric_map
from .dicom_seg import vertebra_segmentation
from .dicom_sr import source_headers, spinefx_version, structured_report
from .dicom_uids import derived_uid
from .files import atomic_write_bytes
from .model_files import ModelSpec
from .outputs import quiet_dicom, secondary_capture

if TYPE_CHECKING:
    from .study import Study
    from .study_analysis import SpineAnalysis

__all__ = ["dicom_results", "encode_dataset", "result_seed", "save_dataset"]


def result_seed(spine: SpineAnalysis, study: Study) -> str:
    """A seed for :func:`dicom_results`: the SHA-256 of what the result was made from and what
    it says (study and series UIDs, slice counts, model sha256, spinefx version, the
    vertebra entries with their probabilities). No PHI: UIDs and numbers only."""
    from .study_analysis import vertebra_entries

    pair = spine.primary.pair
    t1, t2 = study.volume(pair.t1), study.volume(pair.t2)
    inputs = {
        "study": t1.metadata.get("study_uid", ""), "t1": t1.series_uid, "t2": t2.series_uid,
        "slices": [t1.n_slices, t2.n_slices], "model": spine.primary.prediction.model_sha256,
        "spinefx": spinefx_version(), "classified": spine.classified,
        "localised_on": spine.localised_on, "vertebrae": vertebra_entries(spine)}
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dicom_results(spine: SpineAnalysis, study: Study, predictor_spec: ModelSpec,
                  overlay: Image.Image, *, seed: str,
                  created: _dt.datetime | None = None,
                  parametric_map: bool = False) -> list[Dataset]:
    """[SR, SEG, SC] of ``spine`` in the source study (+ the Parametric Map of the maps with
    ``parametric_map``), UIDs derived from ``seed`` (and the study's UID); ``overlay``: the
    picture for the capture (``spine.primary.overlay()``). ``created``: their creation
    date/time (now when None: the same for all)."""
    created = created or _dt.datetime.now()
    sources = source_headers(spine, study)        # read once, shared by SR and SEG
    sr = structured_report(spine, study, predictor_spec, seed=seed, created=created,
                           sources=sources)
    seg = vertebra_segmentation(spine, study, seed=seed, created=created, sources=sources)
    primary = spine.primary
    t1 = study.volume(primary.pair.t1)
    source_file = t1.slice_sources[primary.roi.slice_index].split("#")[0]
    scoped = f"{sr.StudyInstanceUID}|{seed}"
    sc = secondary_capture(overlay, source_file, primary.to_json(),
                           series_uid=derived_uid(scoped, "sc", "series"),
                           sop_uid=derived_uid(scoped, "sc", "instance"), created=created)
    if not parametric_map:
        return [sr, seg, sc]
    pm = build_parametric_map(spine, study, seed=seed, created=created, sources=sources)
    return [sr, seg, sc, pm]


def encode_dataset(ds: Dataset) -> bytes:
    """The DICOM file's bytes (preamble, file meta, dataset), nothing of it logged."""
    buf = io.BytesIO()
    with quiet_dicom():  # encoding the names must not print them either
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def save_dataset(ds: Dataset, path: str | PathLike) -> Path:
    """Write ``ds`` as a DICOM file at ``path``, atomically (:mod:`.files`)."""
    return atomic_write_bytes(path, encode_dataset(ds))
