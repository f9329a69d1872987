"""The one entry for embedding spinefx: a study in, the whole-spine result out.

    from spinefx.runtime import analyse_study

    with analyse_study("/data/study_0001") as result:      # a folder of DICOM files
        print(result.document["most_suspicious"]["level"], result.probability)
        result.write("/data/out")                           # result.json, overlay.png, ...
        for ds in result.dicom_objects(seed="site-A"):      # SR, SEG, Secondary Capture
            ds.save_as(f"/data/out/{ds.Modality}-{ds.SOPInstanceUID}.dcm")

It is what ``spinefx predict STUDY`` (no box) and ``spinefx node`` do: choose the sagittal
T1/T2 pair (strict: the only one, or the named ones), localise every vertebra, grade it,
classify it (:func:`~spinefx.runtime.study_analysis.analyse_spine`), and hand back the same
result document result.json holds. ``source`` may also be pydicom datasets (as a DICOM node
receives them): they are written to a private temporary folder the result owns, removed by
:meth:`StudyResult.close` (or the ``with`` block), because the DICOM outputs reference the
source files' UIDs and the volumes are read from files.
"""
from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import SpineFXError
from .study import Study

if TYPE_CHECKING:
    from pydicom import Dataset

    from .inference import Predictor
    from .service import Result
    from .study_analysis import SpineAnalysis

Source = str | PathLike | Sequence["Dataset"]


@dataclass
class StudyResult:
    """One analysed study: the result document, the per-vertebra analysis and what it was
    computed from. Close it (or use ``with``) when it was built from datasets."""
    spine: SpineAnalysis
    study: Study
    predictor: Predictor
    source: Path
    _scratch: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def primary(self) -> Result:
        """The most suspicious vertebra's result (its probability, CAM, OOD verdict)."""
        return self.spine.primary

    @property
    def probability(self) -> float:
        return self.primary.prediction.probability

    @property
    def document(self) -> dict[str, Any]:
        """The result document (result.json's content, without the file list): no PHI."""
        doc = self.primary.to_json()
        doc.pop("files", None)
        return doc

    def write(self, out_dir: str | PathLike, dicom: bool = False,
              opacity: float = 0.45) -> dict[str, Path]:
        """result.json, overlay.png, overview.png, vertebrae.json, vertebrae_mask.nii.gz (+ the
        Secondary Capture with ``dicom``), as ``spinefx predict`` writes them."""
        from .study_analysis import write_spine_outputs

        return write_spine_outputs(self.spine, self.study, out_dir, [self.source],
                                   dicom=dicom, opacity=opacity)

    def dicom_objects(self, seed: str, opacity: float = 0.45,
                      created: datetime | None = None,
                      parametric_map: bool = False) -> list[Dataset]:
        """The DICOM results in the source study: Comprehensive SR (TID 1500), SEG of the
        vertebral bodies, Secondary Capture of the overlay, and with ``parametric_map`` a
        Parametric Map of the classified vertebrae's maps. Their UIDs derive from ``seed``
        (same seed, same study, same result => same UIDs: a node never files a result twice);
        ``created`` (default now) their content date/time: pass the first run's for bytes-equal
        objects on a re-run."""
        from .dicom_outputs import dicom_results

        return dicom_results(self.spine, self.study, self.predictor.spec,
                             self.primary.overlay(opacity), seed=seed, created=created,
                             parametric_map=parametric_map)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> StudyResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def analyse_study(source: Source, *, predictor: Predictor | None = None,
                  model: str | PathLike | None = None, t1: str | None = None,
                  t2: str | None = None, fractured_only: bool = False,
                  levels: Sequence[str] = (),
                  localiser: str | PathLike | None = None,
                  anchor: tuple[int, str] | None = None) -> StudyResult:
    """Analyse one study (a folder of DICOM files, or its datasets) with no click: see the
    module docstring. ``predictor``: a loaded :class:`Predictor` to reuse (else ``model``, a
    model folder, None = the bundled one); ``anchor`` = (index, level): a person's
    correction of the level count (body ``index``, 0 = the most superior, is ``level``).
    Errors are :class:`SpineFXError` naming the study and the problem (no sagittal T1/T2
    pair, no vertebra found, ...)."""
    from .inference import Predictor
    from .study_analysis import analyse_spine

    scratch = None
    if isinstance(source, (str, PathLike)):
        folder = Path(source)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="spinefx-study-")
        folder = Path(scratch.name)
        write_datasets(source, folder)
    try:
        if not folder.is_dir():
            raise SpineFXError("not a study folder (give a folder of DICOM files)", folder)
        study = Study.open(folder)
        pair = study.choose_pair(t1, t2, "strict")
        predictor = predictor if predictor is not None else Predictor(model)
        spine = analyse_spine(predictor, study, pair, fractured_only, levels, localiser,
                              anchor)
    except BaseException:
        if scratch is not None:
            scratch.cleanup()
        raise
    return StudyResult(spine, study, predictor, folder, scratch)


def write_datasets(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    """Each dataset as a DICOM file named by its position (never by a patient value)."""
    paths = []
    for i, ds in enumerate(datasets):
        buf = io.BytesIO()
        try:
            ds.save_as(buf, enforce_file_format=False)
        except Exception as exc:   # pydicom's text is about structure, never a value
            raise SpineFXError(f"dataset {i} cannot be written as DICOM "
                               f"({type(exc).__name__})") from exc
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths
