"""spinefx.train: the paper's 6-channel ResNet50, patient-level tenfold CV, reports, and the
reader-study statistics (PyTorch; imports preprocessing from ``spinefx.runtime``, never a copy).

Import what you use from its module; the package itself imports nothing, so the torch-free
parts (``readers``: numpy only; ``evaluation``, ``metrics``, ``plots``, ``oof``: numpy, scipy,
scikit-learn, matplotlib) run without torch:

- ``cv`` (``train_cv``, ``TrainSettings``): cross-validation and the final model; its parts are
  ``fitting``, ``distributed``, ``checkpoint``, ``folds``, ``loop``, ``summary``,
  ``report``, ``run_folder``;
- ``model`` (``SpineFxNet``, ``load_model``, ``load_pretrained``), ``data`` (``CaseDataset``,
  ``Augment``, ``preprocess_cases``);
- ``metrics`` (every statistic, importable from there; its parts are ``delong``,
  ``calibration``, ``significance``, ``scores``), ``oof``, ``plots``, ``evaluation``
  (``evaluate``; its Markdown: ``evaluation_markdown``), ``readers`` (``simulate_readers``,
  ``read_readers_csv``).
"""
