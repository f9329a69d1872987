"""What one commit to one Hub repository holds (:class:`RepoPlan`), and where it goes.

A plan is made by :func:`spinefx.hub.publish.assemble_model_repo` (the model repository) or
:func:`~spinefx.hub.publish.assemble_space_repo` (the demo Space) and then either

- written to a folder by :func:`write_repo` (``spinefx publish --dry-run DIR``; a previous dry
  run there is replaced, anything else is refused), or
- sent by :func:`upload_repo` with ``huggingface_hub``: ``create_repo(exist_ok=True)``,
  ``create_branch`` for ``--revision``, then **one** ``create_commit`` of
  ``CommitOperationAdd`` s. The token comes from huggingface_hub's usual places
  (``HF_TOKEN``, ``hf auth login``).

:mod:`spinefx.hub.publish` re-exports these names. No torch is imported here;
``huggingface_hub`` is the ``hub`` extra, imported when needed.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from spinefx.runtime.errors import SpineFXError

from .card import CARD_MARKER
from .download import INSTALL_HINT
from .space import SPACE_MARKER, is_placeholder


class PublishError(SpineFXError):
    """The run/model cannot be published as asked (missing files, mismatch, no token...)."""


@dataclass
class RepoPlan:
    """What one commit to one repository holds: ``{path_in_repo: local Path or bytes}``."""

    repo_id: str
    repo_type: str                         # "model" or "space"
    files: dict[str, Path | bytes]
    commit_message: str
    commit_description: str = ""
    marker: str = CARD_MARKER              # how a dry-run folder of this kind is recognised
    notes: list[str] = field(default_factory=list)
    synthetic: bool | None = None          # trained on the synthetic phantom cohort?

    def size(self, path: str) -> int:
        src = self.files[path]
        return len(src) if isinstance(src, bytes) else Path(src).stat().st_size

    def operations(self) -> list:
        _hub()
        from huggingface_hub import CommitOperationAdd

        return [CommitOperationAdd(path_in_repo=path,
                                   path_or_fileobj=src if isinstance(src, bytes) else str(src))
                for path, src in sorted(self.files.items())]


def _text(src: Path | bytes) -> str:
    """A file of a :class:`RepoPlan` (bytes, or the local file they come from) as text."""
    return (src if isinstance(src, bytes) else Path(src).read_bytes()).decode()


# ---------------------------------------------------------------------------------------------
# dry run: write the folder
# ---------------------------------------------------------------------------------------------
def _previous_dry_run(folder: Path) -> bool:
    readme = folder / "README.md"
    try:
        head = readme.read_text(encoding="utf-8")[:20000]
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("---") and (CARD_MARKER in head or SPACE_MARKER in head)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PublishError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not _previous_dry_run(out):
        raise PublishError("folder is not empty and is not a previous `spinefx publish "
                           "--dry-run`; refusing to write into it", out)


def write_repo(plan: RepoPlan, out_dir: str | PathLike) -> Path:
    """Write the repository folder (a previous dry run there is replaced, anything else is
    refused)."""
    out = Path(out_dir)
    _check_out_dir(out)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for path, src in sorted(plan.files.items()):
        dest = out / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dest.write_bytes(src)
        else:
            shutil.copyfile(src, dest)
    return out


# ---------------------------------------------------------------------------------------------
# upload
# ---------------------------------------------------------------------------------------------
def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise PublishError(f"publishing needs huggingface_hub: {INSTALL_HINT}") from None
    return huggingface_hub


def upload_repo(plan: RepoPlan, *, private: bool = False, revision: str | None = None,
                token: str | None = None, endpoint: str | None = None) -> str:
    """Create the repository if missing, the branch ``revision`` if given, and push every file
    of ``plan`` in one commit. Returns the commit URL."""
    hf = _hub()
    from huggingface_hub import errors

    token = token or hf.get_token()
    if not token:
        raise PublishError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token "
                           "with write access)")
    if plan.repo_type == "space" and is_placeholder(_text(plan.files["requirements.txt"])):
        raise PublishError("the Space's requirements.txt would install spinefx from a "
                           "placeholder URL: pass --spinefx-requirement (see --help)")
    api = hf.HfApi(endpoint=endpoint, token=token)
    kind = "Space" if plan.repo_type == "space" else "model repository"
    try:
        api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=private, exist_ok=True,
                        **({"space_sdk": "gradio"} if plan.repo_type == "space" else {}))
        if private:
            info = api.repo_info(plan.repo_id, repo_type=plan.repo_type)
            if not getattr(info, "private", True):
                raise PublishError(f"{plan.repo_id} already exists and is public; refusing to "
                                   "publish with --private (make it private on the Hub first, "
                                   "or drop --private)")
        if revision and revision != "main":
            api.create_branch(plan.repo_id, branch=revision, repo_type=plan.repo_type,
                              exist_ok=True)
        commit = api.create_commit(plan.repo_id, operations=plan.operations(),
                                   commit_message=plan.commit_message,
                                   commit_description=plan.commit_description,
                                   repo_type=plan.repo_type, revision=revision)
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hints = {401: ": the token is invalid or expired (`hf auth login`)",
                 403: ": the token cannot write there (a write token for that owner is needed)"}
        hint = hints.get(status, "") if status is not None else ""  # no response: no hint
        raise PublishError(f"uploading the {kind} {plan.repo_id} failed "
                           f"({_first_line(exc)}){hint}") from None
    return str(commit.commit_url)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
