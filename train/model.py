"""The paper's network: a 1x1 convolution 6 -> 3 channels, then torchvision's ResNet50.

Yeh et al. 2022 feed the lesion slice and its two neighbours on T1W and T2W (6 channels) to a
ResNet50 through a learnable 1x1 convolution that maps them to the 3 channels the ResNet stem
expects. The head is global average pooling + **one** linear layer (``fc``), kept linear so the
export stage can compute Grad-CAM in the graph (for GAP + linear, Grad-CAM equals the class
activation map ``ReLU(sum_k w_k A_k)``).

**One logit.** ``fc`` is ``Linear(2048, 1)``: the logit of *malignant* (the positive class);
``sigmoid(logit)`` is the malignancy probability and benign is its complement. This is the
two-class softmax model with the benign logit fixed at 0 (a softmax over (0, z) is
(1 - sigmoid z, sigmoid z)), so nothing is lost, the loss is a (class-weighted) binary
cross-entropy and the Grad-CAM weights are simply ``fc.weight[0]``. ``classes`` in the config
records the order ("benign", "malignant") = (probability 1 - p, probability p).

Saving: :class:`SpineFxNet` is a ``huggingface_hub.PyTorchModelHubMixin``, so
``save_pretrained(folder)`` writes ``config.json`` (the constructor arguments: architecture,
classes, the preprocessing dataclass, training settings) + ``model.safetensors``, and
``SpineFxNet.from_pretrained(folder_or_repo)`` reads them back. No pickle anywhere: other weight
files are read with safetensors or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import io
import re
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file
from torch import nn

from spinefx.hub.download import download_files, is_hf_uri
from spinefx.runtime import PreprocessConfig
from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.files import read_json

from ._torchvision_compat import import_torchvision
from .checkpoint import save_weights

CLASSES = ("benign", "malignant")
ARCHITECTURE = "resnet50"
# torchvision's ImageNet normalisation, folded into the 1x1 convolution for pretrained backbones
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedError(SpineFXError):
    """A --pretrained source is missing, unreadable or does not fit the ResNet50 backbone."""


class SpineFxNet(nn.Module, PyTorchModelHubMixin, library_name="spinefx",
                 tags=["medical-imaging", "spine-mri", "vertebral-fracture", "resnet50"],
                 license="apache-2.0"):
    """``stem`` (1x1 conv, in_channels -> 3, with bias) -> ``backbone`` (torchvision ResNet50,
    ``fc`` = Linear(2048, 1)). ``forward(x)`` takes (B, C, S, S) floats in [0, 1] (the output
    of :func:`spinefx.runtime.prepare_case`) and returns the malignancy logit, shape (B,).

    ``preprocess``: :meth:`PreprocessConfig.to_dict` of the data the model was trained on
    (its ``neighbours`` fixes the channel count); ``training``: free-form JSON-able settings
    recorded with the weights. Both end up in ``config.json``.
    """

    def __init__(self, architecture: str = ARCHITECTURE, in_channels: int | None = None,
                 classes: list[str] | tuple[str, ...] = CLASSES,
                 preprocess: dict | None = None, training: dict | None = None) -> None:
        super().__init__()
        if architecture != ARCHITECTURE:
            raise ValueError(f"unknown architecture {architecture!r} (only {ARCHITECTURE!r})")
        if tuple(classes) != CLASSES:
            raise ValueError(f"classes must be {list(CLASSES)} (one logit = malignant)")
        prep = PreprocessConfig.from_dict(preprocess or {})
        if in_channels is None:
            in_channels = prep.n_channels
        if in_channels != prep.n_channels:
            raise ValueError(f"in_channels={in_channels} but the preprocessing makes "
                             f"{prep.n_channels} channels")
        self.architecture = architecture
        self.in_channels = in_channels
        self.classes = list(classes)
        self.preprocess = prep.to_dict()
        self.training_settings = dict(training or {})

        self.stem = nn.Conv2d(in_channels, 3, kernel_size=1, bias=True)
        tv = import_torchvision()
        self.backbone = tv.models.resnet50(weights=None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 1)
        # a small head starts every case near p = 0.5 instead of at a random, saturated logit
        nn.init.normal_(self.backbone.fc.weight, std=0.01)
        nn.init.zeros_(self.backbone.fc.bias)
        self.reset_stem()

    # -----------------------------------------------------------------------------------------
    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    @property
    def head(self) -> nn.Linear:
        """The linear layer after global average pooling (Grad-CAM weights: ``head.weight[0]``)."""
        return self.backbone.fc

    @torch.no_grad()
    def reset_stem(self, mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
                   std: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        """Initialise the 1x1 convolution to average T1 and T2 at each slice position.

        With the paper's 3 slices per sequence, output channel ``j`` (R, G, B) = (T1[j] +
        T2[j]) / 2: the slices k-1, k, k+1 land in R, G, B, as a stack of neighbouring slices
        would in a 2.5-D network, and every input channel starts with equal weight. With another
        number of slices every output starts as the mean of all inputs. ``mean``/``std`` fold a
        per-channel normalisation ``(y - mean) / std`` into the layer (used with ImageNet
        backbones, which expect ImageNet-normalised input).
        """
        w = torch.zeros(3, self.in_channels)
        per_seq = self.in_channels // 2
        if per_seq == 3:
            for j in range(3):
                w[j, j] = w[j, j + 3] = 0.5
        else:
            w[:] = 1.0 / self.in_channels
        m, s = torch.tensor(mean), torch.tensor(std)
        self.stem.weight.copy_((w / s[:, None])[:, :, None, None])
        bias = self.stem.bias
        assert bias is not None  # the stem is built with bias=True (__init__)
        bias.copy_(-m / s)

    # -----------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional block's activations A, shape (B, 2048, S/32, S/32)."""
        b = self.backbone
        x = self.stem(x)
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling + the linear head: malignancy logit, shape (B,)."""
        return self.backbone.fc(torch.flatten(self.backbone.avgpool(features), 1))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _save_pretrained(self, save_directory: Path) -> None:
        """``model.safetensors`` for :meth:`save_pretrained`, replaced atomically (the mixin's
        own writer leaves half a file behind when interrupted)."""
        save_weights(Path(save_directory) / "model.safetensors", self, metadata={"format": "pt"})

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Malignancy probability ``sigmoid(logit)``, shape (B,)."""
        return torch.sigmoid(self(x))


# ---------------------------------------------------------------------------------------------
# pretrained weights
# ---------------------------------------------------------------------------------------------
_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "resnet.", "net.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a weights-only torch file (never unpickles objects)."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise PretrainedError(f"not a readable safetensors file ({exc})", path) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedError(f"cannot read weights with torch.load(weights_only=True): "
                              f"{str(exc).splitlines()[0]}", path) from None
    for key in ("state_dict", "model_state_dict", "model", "net"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise PretrainedError("expected a state dict (name -> tensor)", path)
    return obj


def _backbone_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``backbone.``...) so keys read ``layer1.0.conv1...``."""
    out = {}
    for key, value in state.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = value
    return out


def _resolve_source(source: str | PathLike, allow_download: bool) -> Path:
    text = str(source)
    if is_hf_uri(text):  # hf://... (or hf:/... once pathlib has seen it)
        if not allow_download:
            raise PretrainedError(f"{text} is on the Hugging Face Hub and downloads are off")
        # the runtime's hub code: one commit for all files, offline from the cache, clean errors
        body = text.split(":", 1)[1].strip("/")
        body = body[len("models/"):] if body.startswith("models/") else body
        parts = body.split("/")
        repo = "hf://" + "/".join(parts[:2])  # parse_hf_uri validates it (and any @revision)
        if len(parts) > 2:  # hf://owner/name[@rev]/FILE: one weight file (e.g. a backbone)
            filename = "/".join(parts[2:])
            return download_files(repo, [filename]) / filename
        return download_files(repo, ["config.json", "model.safetensors"])  # a spinefx publish
    path = Path(source)
    if not path.exists():
        hint = (" (to download from the Hugging Face Hub write hf://owner/name)"
                if re.fullmatch(r"[\w.-]+/[\w.-]+", text) else "")
        raise PretrainedError(f"no such file or folder{hint}", path)
    return path


def load_pretrained(model: SpineFxNet, source: str | PathLike, *, allow_download: bool = True,
                    imagenet_normalisation: bool = True) -> dict[str, Any]:
    """Initialise ``model`` from pretrained weights; return a report of what was loaded.

    ``source`` is one of
    - a previous spinefx model/run folder (``config.json`` + ``model.safetensors``): every weight
      is loaded (stem, backbone and head), strictly;
    - a torchvision-style ResNet50 state dict (ImageNet, RadImageNet...) as ``.safetensors`` or a
      ``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``: the backbone is
      loaded, ``fc.*`` skipped (our head has one output), wrapper prefixes (``module.``,
      ``backbone.``...) stripped. Missing and unexpected keys are reported; no matching key at
      all is an error. With ``imagenet_normalisation`` the 1x1 stem also folds in ImageNet's
      mean/std, since such backbones expect normalised input;
    - ``hf://owner/name[/file]``: downloaded from the Hugging Face Hub (only when
      ``allow_download``; this is the one way spinefx reaches the network here).
    """
    path = _resolve_source(source, allow_download)
    if path.is_dir():
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise PretrainedError("a pretrained folder needs config.json and model.safetensors",
                                  path)
        config = read_json(path / "config.json")
        if config.get("architecture", ARCHITECTURE) != ARCHITECTURE:
            raise PretrainedError(f"architecture {config.get('architecture')!r} is not "
                                  f"{ARCHITECTURE}", path)
        state = _read_state_dict(path / "model.safetensors")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise PretrainedError(f"does not fit this model: {str(exc).splitlines()[0]}",
                                  path) from None
        return {"source": str(source), "kind": "spinefx", "loaded": len(state), "missing": [],
                "unexpected": [], "skipped": []}

    state = _backbone_keys(_read_state_dict(path))
    skipped = sorted(k for k in state if k.startswith("fc."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.backbone.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    if mismatched:
        raise PretrainedError(f"{len(mismatched)} tensor(s) have the wrong shape for a "
                              f"ResNet50, e.g. {mismatched[0]}", path)
    result = model.backbone.load_state_dict(state, strict=False)
    missing = sorted(k for k in result.missing_keys if not k.startswith("fc."))
    unexpected = sorted(result.unexpected_keys)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise PretrainedError("no tensor matches torchvision's ResNet50 names "
                              "(conv1.weight, layer1.0.conv1.weight, ...)", path)
    if imagenet_normalisation:
        model.reset_stem(IMAGENET_MEAN, IMAGENET_STD)
    return {"source": str(source), "kind": "resnet50-backbone", "loaded": loaded,
            "missing": missing, "unexpected": unexpected, "skipped": skipped,
            "imagenet_normalisation": bool(imagenet_normalisation)}


def load_model(folder: str | PathLike, map_location: str = "cpu") -> SpineFxNet:
    """A trained model from a spinefx run/model folder (strict: every weight must match)."""
    with contextlib.redirect_stdout(io.StringIO()):  # the mixin prints where it loads from
        model = SpineFxNet.from_pretrained(str(folder), map_location=map_location, strict=True)
    model.eval()
    return model
