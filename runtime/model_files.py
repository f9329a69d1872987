"""A model folder: ONNX file(s) + ``model.json``, verified before anything runs.

``model.json`` carries what the model needs to be used correctly anywhere (the
torchxrayvision habit: a model brings its labels, preprocessing and operating threshold):

- ``files``: ``{variant: {"path": ..., "sha256": ...}}`` (e.g. ``fp32``, ``int8``) and ``default``;
- ``input``: name, shape ``[null, 6, S, S]``, channel names; ``outputs``: probability + cam names;
- ``preprocessing``: the :class:`PreprocessConfig` fields; ``classes``; ``threshold``;
- ``metrics`` (cross-validated, from the training report) and ``training_data``.

Local folders only: an ``hf://owner/name`` address is resolved to a verified folder by
``spinefx.hub.download.resolve_model`` (which uses this module's sha256 check); nothing here
imports Hub code.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from .errors import ConfigError, SpineFXError
from .files import read_json
from .preprocess import PreprocessConfig
from .provenance import is_synthetic_record

MODEL_JSON = "model.json"
FORMAT = "spinefx-onnx"
# The bundled demonstration model ships inside the package (folder weights/ -> spinefx.weights).
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"


class ModelIntegrityError(SpineFXError):
    """A model file does not match the sha256 its model.json promises: refuse to run it."""


def sha256_file(path: str | PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    folder: Path
    raw: dict

    @property
    def name(self) -> str:
        return str(self.raw.get("name", self.folder.name))

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.raw["preprocessing"])

    @property
    def threshold(self) -> float:
        return float(self.raw["threshold"])

    @property
    def classes(self) -> tuple[str, str]:
        benign, malignant = self.raw.get("classes", ("benign", "malignant"))
        return (str(benign), str(malignant))

    @property
    def input_name(self) -> str:
        return str(self.raw["input"]["name"])

    @property
    def output_names(self) -> tuple[str, str]:
        out = self.raw["outputs"]
        return str(out["probability"]), str(out["cam"])

    @property
    def synthetic(self) -> bool:
        """Trained on the synthetic phantom cohort (the one rule of :mod:`.provenance`)."""
        return is_synthetic_record(self.raw)

    def variants(self) -> list[str]:
        return list(self.raw["files"])

    def file(self, variant: str | None = None) -> tuple[str, Path, str]:
        """(variant, path, sha256) of the requested (or default) ONNX file, verified."""
        variant = variant or str(self.raw.get("default") or next(iter(self.raw["files"])))
        if variant not in self.raw["files"]:
            raise ConfigError(f"model has no '{variant}' variant (it has: "
                              f"{', '.join(self.variants())})", self.folder / MODEL_JSON)
        entry = self.raw["files"][variant]
        path = self.folder / entry["path"]
        if not path.is_file():
            raise ModelIntegrityError("model file is missing", path)
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ModelIntegrityError(
                f"sha256 {actual[:16]}... does not match model.json ({entry['sha256'][:16]}...): "
                "the file was changed or damaged; refusing to load it", path)
        return variant, path, actual


def read_model_spec(folder: str | PathLike) -> ModelSpec:
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise ConfigError(f"no {MODEL_JSON} here: not a spinefx model folder", folder)
    raw = read_json(path)  # unreadable or malformed -> ConfigError naming the file
    if not isinstance(raw, dict):
        raise ConfigError("model manifest is not a JSON object", path)
    if raw.get("format") != FORMAT:
        raise ConfigError(f"format is {raw.get('format')!r}, expected {FORMAT!r}", path)
    required = ("files", "input", "outputs", "preprocessing", "threshold")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"model.json lacks {', '.join(missing)}", path)
    return ModelSpec(folder=folder, raw=raw)


def local_model_dir(model: str | PathLike | None) -> Path:
    """A local model folder from a path, or ``None`` for the bundled model. A Hub address
    (``hf://owner/name``) is not a folder: ``spinefx.hub.download.resolve_model`` downloads it."""
    if model is None:
        if not (BUNDLED_DIR / MODEL_JSON).is_file():
            raise ConfigError("no bundled model in this installation; pass --model DIR",
                              BUNDLED_DIR)
        return BUNDLED_DIR
    if str(model).startswith("hf:/"):  # hf://owner/name[@rev] (hf:/... once pathlib has seen it)
        raise ConfigError(f"{model} is a Hugging Face Hub address, not a folder: resolve it with "
                          "spinefx.hub.download.resolve_model (pip install 'spinefx[hub]')")
    return Path(model)
