"""spinefx.hub: everything that talks to the Hugging Face Hub, in one torch-free unit.

- :mod:`spinefx.hub.download`: ``hf://owner/name[@revision]`` parsing, snapshot download into the
  Hugging Face cache (offline with ``HF_HUB_OFFLINE=1``), sha256 verification with the runtime's
  own check, and :func:`~spinefx.hub.download.resolve_model` (``None`` / folder / ``hf://`` -> a
  local model folder), which ``spinefx.runtime.inference.Predictor`` uses.
- :mod:`spinefx.hub.publish`: a training run + its ONNX export -> a model repository (dry run or
  one commit), and the Gradio Space that serves it; :mod:`spinefx.hub.repo_plan` holds the
  planned repository (files, dry-run folder, the upload itself).
- :mod:`spinefx.hub.card`: the model card (YAML metadata + the ``model_card.md`` template).
- :mod:`spinefx.hub.space`: the Space's ``app.py``, ``requirements.txt`` and ``README.md``.

Imports: this unit may import ``spinefx.runtime`` (never torch, train, export or demo);
``huggingface_hub`` is the optional ``hub`` extra (``pip install 'spinefx[hub]'``), imported
inside the functions that need it. The ``spinefx publish`` command line lives in
``spinefx.cli.publish``. Importing this package imports none of its modules.
"""
