"""The bundled demonstration model (folder ``weights/`` -> package data ``spinefx.weights``).

``model.json`` + ONNX file(s) + ``README.md`` (the model card). Trained on the SYNTHETIC phantom
cohort: a pipeline demonstration, not a clinical model. ``spinefx.runtime.model_files``
finds it as the default model.
"""
