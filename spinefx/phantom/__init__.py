"""spinefx.phantom: seeded synthetic sagittal T1W/T2W spine MRI with one fracture per case.

No public labelled data set of benign vs malignant vertebral compression fractures exists, so
tests, demo examples and the bundled demonstration weights use these phantoms. Everything they
produce is labelled SYNTHETIC.

- :func:`render_case` -> :class:`PhantomCase`: one case in memory (~0.1-0.2 s).
- :func:`write_case_dicom` / :func:`write_phantom_study`: a case as two DICOM series.
- :func:`generate_cohort`: a whole cohort with ``manifest.csv``, ``cohort.json`` and every
  case's ``masks.npz``; several cases per patient as an option.
- :func:`iter_cases`: the same cohort streamed in memory (no DICOM written), for training on
  thousands of cases; :func:`plan_cohort`: its seeds, labels and patients.
- :func:`write_contact_sheet`: PNG overview of a cohort, read back via the runtime;
  :func:`write_comparison_sheet`: phantoms at variation 0 and 1 beside real spine MRI.
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
from .cohort import (
    MANIFEST_COLUMNS,
    PHANTOM_VERSION,
    CohortExistsError,
    generate_cohort,
    is_cohort,
)
from .contact_sheet import write_comparison_sheet, write_contact_sheet
from .dicom_writer import write_case_dicom, write_phantom_study
from .stream import CasePlan, iter_cases, plan_cohort

__all__ = [
    "MANIFEST_COLUMNS", "PHANTOM_VERSION", "PROBABILITIES", "CasePlan", "CohortExistsError",
    "PhantomCase", "draw_features", "feature_probabilities", "generate_cohort", "is_cohort",
    "iter_cases", "plan_cohort", "probability_table_markdown", "render_case",
    "write_case_dicom", "write_comparison_sheet", "write_contact_sheet", "write_phantom_study",
]
