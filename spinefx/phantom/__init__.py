"""spinefx.phantom: seeded synthetic sagittal T1W/T2W spine MRI with one fracture per case.

No public labelled data set of benign vs malignant vertebral compression fractures exists, so
tests, demo examples and the bundled demonstration weights use these phantoms. Everything they
produce is labelled SYNTHETIC.

- :func:`render_case` -> :class:`PhantomCase`: one case in memory (~0.1-0.2 s).
- :func:`write_case_dicom` / :func:`write_phantom_study`: a case as two DICOM series.
- :func:`generate_cohort`: a whole cohort with ``manifest.csv`` and ``cohort.json``.
- :func:`write_contact_sheet`: PNG overview of a cohort, read back via the runtime.
- :data:`PROBABILITIES`: the class-conditional feature table (see
  :mod:`spinefx.phantom.appearance`).

Numpy, pydicom, Pillow and tqdm only: no scipy, no torch.
"""
from .appearance import (
    PROBABILITIES,
    draw_features,
    feature_probabilities,
    probability_table_markdown,
)
from .case import PhantomCase, render_case
from .cohort import MANIFEST_COLUMNS, CohortExistsError, generate_cohort, is_cohort
from .contact_sheet import write_contact_sheet
from .dicom_writer import write_case_dicom, write_phantom_study

__all__ = [
    "MANIFEST_COLUMNS", "PROBABILITIES", "CohortExistsError", "PhantomCase", "draw_features",
    "feature_probabilities", "generate_cohort", "is_cohort", "probability_table_markdown",
    "render_case", "write_case_dicom", "write_contact_sheet", "write_phantom_study",
]
