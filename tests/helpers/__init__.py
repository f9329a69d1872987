"""Helpers shared by every test folder; import them as ``from tests.helpers.<module> import ...``.

- :mod:`tests.helpers.benchmarks`: the scripts under benchmarks/ as modules.
- :mod:`tests.helpers.dicom`: a tiny DICOM writer and the paths of the real test data.
- :mod:`tests.helpers.onnx_model`: a tiny ONNX model with the spinefx contract.
- :mod:`tests.helpers.phantoms`: phantom cohorts built once per session, phantoms in memory.

The repository root is on ``sys.path`` during pytest (``pythonpath`` in pyproject.toml).
"""
