"""spinefx: benign vs malignant vertebral compression fracture on sagittal spine MRI.

Research and teaching software, not a medical device. The stages live in sub-packages:
``spinefx.runtime`` (I/O, preprocessing, torch-free inference), ``spinefx.train``,
``spinefx.export`` and ``spinefx.demo``; ``spinefx.phantom`` makes the synthetic cohort.
"""
from ._version import __version__

__all__ = ["__version__"]
