"""Models on the Hugging Face Hub: ``hf://owner/name[@revision]`` -> a verified local model folder.

:func:`resolve_model` is what the runtime calls with whatever ``--model`` / ``Predictor(model)``
got: ``None`` (the bundled model) and local folders pass through
:func:`spinefx.runtime.model_files.local_model_dir`; an ``hf://`` address goes to
:func:`download_model`, which fetches ``model.json`` with ``huggingface_hub.hf_hub_download``
(into the normal Hugging Face cache, ``HF_HUB_CACHE`` / ``HF_HOME``), then every ONNX file it
lists, all pinned to the commit that ``model.json`` came from, and checks each file's sha256 with
the runtime's own check (:meth:`~spinefx.runtime.model_files.ModelSpec.file`) before returning the
snapshot folder, a plain local model folder. With ``HF_HUB_OFFLINE=1`` nothing is requested: the
files come from the cache or the call fails with a clear message. A tampered or damaged cached
file is refused (:class:`~spinefx.runtime.model_files.ModelIntegrityError`).

This module imports the runtime's model-folder code and nothing that imports this module back
(``spinefx.runtime.inference`` imports it at the top). ``huggingface_hub`` is the optional
``hub`` extra (``pip install 'spinefx[hub]'``): :func:`require_hub` imports it inside the
functions that talk to the Hub, so nothing else ever needs it. No torch here.

:func:`download_files` is the same machinery for other files of a published repository (e.g.
``config.json`` + ``model.safetensors`` for fine-tuning with ``spinefx train --pretrained hf://...``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Iterable, TypedDict

from spinefx.runtime.errors import SpineFXError
from spinefx.runtime.model_files import (
    MODEL_JSON,
    ModelIntegrityError,
    local_model_dir,
    read_model_spec,
)

HF_SCHEME = "hf://"
INSTALL_HINT = "pip install 'spinefx[hub]'"
_REPO_PART = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubError(SpineFXError):
    """A model could not be fetched from (or found for) the Hugging Face Hub."""


class _FetchOptions(TypedDict):
    """The keyword arguments :func:`_fetch` gets the same for every file of one download."""

    cache_dir: str | PathLike | None
    endpoint: str | None
    token: str | bool | None
    offline: bool


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf://owner/name[@revision]``."""

    repo_id: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        return HF_SCHEME + self.repo_id + (f"@{self.revision}" if self.revision else "")

    def __str__(self) -> str:
        return self.uri


def is_hf_uri(text: str | PathLike | None) -> bool:
    """True for ``hf://...`` (and ``hf:/...``, which is what ``pathlib.Path`` makes of it)."""
    return text is not None and str(text).startswith("hf:/")


def parse_hf_uri(text: str | PathLike) -> HubRef:
    """``hf://owner/name[@revision]`` -> :class:`HubRef`; a malformed string -> :class:`HubError`.

    Also accepted: the ``models/`` type prefix of huggingface_hub's URI grammar
    (``hf://models/owner/name``), revisions with slashes (``@refs/pr/3``) and ``hf:/owner/name``
    (``pathlib.Path("hf://a/b")`` collapses the double slash, e.g. a CLI option with ``type=Path``).
    """
    raw = str(text)
    usage = "expected hf://owner/name or hf://owner/name@revision"
    if raw.startswith(HF_SCHEME):
        body = raw[len(HF_SCHEME):]
    elif raw.startswith("hf:/"):
        body = raw[len("hf:/"):]
    else:
        raise HubError(f"{raw!r} is not a Hugging Face Hub address ({usage})")
    body = body.strip()
    revision = None
    if "@" in body:
        body, revision = body.split("@", 1)
        revision = revision.strip().strip("/")
        if not revision or any(c.isspace() for c in revision) or ".." in revision:
            raise HubError(f"{raw!r}: empty or invalid revision after '@' ({usage})")
    body = body.strip("/")
    if body.startswith("models/"):
        body = body[len("models/"):]
    elif body.split("/", 1)[0] in ("datasets", "spaces", "buckets", "kernels"):
        raise HubError(f"{raw!r} names a {body.split('/', 1)[0][:-1]} repository; spinefx loads "
                       f"models ({usage})")
    parts = body.split("/")
    if len(parts) != 2:
        hint = (" (a model is a whole repository, not a file in it)" if len(parts) > 2 else
                f", got {body!r}")
        raise HubError(f"{raw!r}: repository must be owner/name{hint}; {usage}")
    for part in parts:
        if (not _REPO_PART.match(part) or "--" in part or ".." in part or part.endswith(".")
                or len(part) > 96):
            raise HubError(f"{raw!r}: {part!r} is not a valid Hub owner or repository name "
                           "(letters, digits, '-', '_', '.'; no '--' or '..'); " + usage)
    return HubRef("/".join(parts), revision)


def require_hub(purpose: str = "loading models from the Hugging Face Hub"):
    """``huggingface_hub`` (the ``hub`` extra), or a :class:`HubError` saying how to get it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"{purpose} needs huggingface_hub: {INSTALL_HINT}") from None
    return huggingface_hub


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once at import; we re-read it)."""
    require_hub()
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _truthy(os.environ.get("HF_HUB_OFFLINE")) \
        or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _fetch(ref: HubRef, filename: str, revision: str | None, *,
           cache_dir: str | PathLike | None, endpoint: str | None, token: str | bool | None,
           offline: bool, what: str) -> Path:
    """One ``hf_hub_download``, with every failure turned into a one-line HubError."""
    hf = require_hub()
    from huggingface_hub import constants, errors

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    try:
        return Path(hf.hf_hub_download(
            ref.repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
            token=token, local_files_only=offline))
    except errors.LocalEntryNotFoundError as exc:
        if offline:
            raise HubError(f"{ref}: {filename} is not in the local Hugging Face cache and "
                           "offline: run once online or set HF_HUB_OFFLINE=0") from None
        raise HubError(f"{ref}: could not reach the Hugging Face Hub "
                       f"({endpoint or constants.ENDPOINT}) and {filename} is not in the "
                       f"local cache; check the connection, or proxy settings "
                       f"({_first_line(exc.__cause__ or exc)})") from None
    except errors.GatedRepoError:
        raise HubError(f"{ref}: the repository is gated: accept its conditions on the Hub and "
                       "log in (`hf auth login` or HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{ref}: no revision {revision or ref.revision or 'main'!r} in this "
                       "repository") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"{ref}: no such model repository on the Hub, or it is private: check "
                       "the name, and log in (`hf auth login` or HF_TOKEN) for a private one"
                       ) from None
    except errors.EntryNotFoundError:
        raise HubError(f"{ref}: the repository has no {filename}"
                       + (": not a spinefx model (publish one with `spinefx publish`)"
                          if what == "manifest" else " (model.json lists it)")) from None
    except errors.HfHubHTTPError as exc:
        raise HubError(f"{ref}: the Hub refused {filename}: {_first_line(exc)}") from None
    except (OSError, ValueError) as exc:  # disk full, read-only cache, bad filename...
        raise HubError(f"{ref}: could not store {filename} in the Hugging Face cache "
                       f"({_first_line(exc)})") from None
    except Exception as exc:  # transport errors huggingface_hub lets through (proxy, TLS...)
        if type(exc).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore", "ssl"):
            raise
        raise HubError(f"{ref}: network error while fetching {filename} "
                       f"({type(exc).__name__}: {_first_line(exc)}); check proxy settings "
                       "(HTTPS_PROXY) or use HF_HUB_OFFLINE=1 with a cached copy") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _safe_relative(path: str, ref: HubRef) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise HubError(f"{ref}: model.json lists an unsafe file path {path!r}; refusing it")
    return p.as_posix()


def download_model(model: str | HubRef, *, variants: Iterable[str] | None = None,
                   cache_dir: str | PathLike | None = None, endpoint: str | None = None,
                   token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """Download (or find in the cache) a published spinefx model; return its local folder.

    ``model.json`` comes first (from ``revision``, default ``main``); the ONNX files it lists
    (all variants, or only ``variants``) are then fetched from the **same commit**, and each
    is checked against its sha256 in ``model.json`` (by ``ModelSpec.file``, the runtime's own
    check). The folder returned is the cache's snapshot folder, which
    :class:`~spinefx.runtime.inference.Predictor` loads as any model folder (checking the file
    it loads, as for every folder). ``HF_HUB_OFFLINE=1`` (or ``local_files_only``) = cache only.
    ``cache_dir``, ``endpoint`` and ``token`` default to huggingface_hub's usual settings
    (``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN`` / ``hf auth login``).

    Raises :class:`HubError` (a :class:`SpineFXError`) for a malformed address, an unknown
    repository, a missing file or no connection without a cached copy, and
    :class:`~spinefx.runtime.model_files.ModelIntegrityError` for a file whose sha256 differs
    from ``model.json`` (e.g. a tampered cache).
    """
    ref = model if isinstance(model, HubRef) else parse_hf_uri(model)
    offline = local_files_only or hub_offline()
    kwargs = _FetchOptions(cache_dir=cache_dir, endpoint=endpoint, token=token, offline=offline)
    spec_path = _fetch(ref, MODEL_JSON, ref.revision, what="manifest", **kwargs)
    folder = spec_path.parent
    # The snapshot folder is named after the commit: pin the other files to it, so a push
    # between two requests cannot pair this model.json with another commit's ONNX file.
    commit = folder.name if _COMMIT.match(folder.name) else ref.revision
    spec = read_model_spec(folder)
    wanted = list(variants) if variants is not None else spec.variants()
    unknown = [v for v in wanted if v not in spec.raw["files"]]
    if unknown:
        raise HubError(f"{ref}: no variant {', '.join(unknown)} in model.json (it has: "
                       f"{', '.join(spec.variants())})")
    for variant in wanted:
        rel = _safe_relative(str(spec.raw["files"][variant].get("path", "")), ref)
        local = _fetch(ref, rel, commit, what="model file", **kwargs)
        if local != folder / rel:
            raise HubError(f"{ref}: {rel} was stored outside the model's snapshot folder")
        try:
            spec.file(variant)  # sha256 against model.json
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(
                f"{exc.problem} (from {ref}; if the cached copy was damaged, remove it with "
                f"`hf cache rm model/{ref.repo_id}` and download again)", exc.path) from None
    return folder


def download_files(model: str | HubRef, filenames: Iterable[str], *,
                   cache_dir: str | PathLike | None = None, endpoint: str | None = None,
                   token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """Fetch some files of a published repository (same commit for all); return the folder.

    E.g. ``download_files("hf://owner/name", ["config.json", "model.safetensors"])`` for the
    PyTorch weights a ``spinefx publish`` repository carries (fine-tuning). No sha256 check:
    those files have no manifest (huggingface_hub verifies sizes; the Hub's ETag of an LFS
    file is its sha256).
    """
    ref = model if isinstance(model, HubRef) else parse_hf_uri(model)
    offline = local_files_only or hub_offline()
    kwargs = _FetchOptions(cache_dir=cache_dir, endpoint=endpoint, token=token, offline=offline)
    names = [_safe_relative(f, ref) for f in filenames]
    if not names:
        raise HubError(f"{ref}: no file names given")
    first = _fetch(ref, names[0], ref.revision, what="file", **kwargs)
    root = first.parents[len(PurePosixPath(names[0]).parts) - 1]
    commit = root.name if _COMMIT.match(root.name) else ref.revision
    for name in names[1:]:
        _fetch(ref, name, commit, what="file", **kwargs)
    return root


def resolve_model(model: str | PathLike | None) -> Path:
    """A local model folder for ``model``: ``None`` (the bundled model), a folder, or
    ``hf://owner/name[@revision]`` (downloaded into the Hugging Face cache and verified by
    :func:`download_model`; ``hf:/...``, what ``pathlib`` makes of it, too)."""
    if is_hf_uri(model):
        return download_model(str(model))
    return local_model_dir(model)
