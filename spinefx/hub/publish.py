"""``spinefx publish``: a training run + its ONNX export -> a Hugging Face model repository.

:func:`assemble_model_repo` gathers, checks and describes what goes up::

    README.md              model card generated from the run (YAML metadata + model-index)
    config.json            \\ PyTorch weights: SpineFxNet.from_pretrained(folder or repo id)
    model.safetensors      /
    model.onnx             \\ ONNX file(s) listed in model.json (sha256 verified here first),
    model.int8.onnx        /  what `spinefx predict --model hf://owner/name` downloads
    model.json
    metrics.json, oof_predictions.csv, report.md, training_log.csv, figures/*.png   CV report

:func:`write_repo` writes that folder (``--dry-run DIR``); :func:`upload_repo` sends it with
``huggingface_hub``: ``create_repo(exist_ok=True)``, ``create_branch`` for ``--revision``, then
**one** ``create_commit`` of ``CommitOperationAdd`` s. The token comes from huggingface_hub's
usual places (``HF_TOKEN``, ``hf auth login``). ``--space OWNER/SPACE`` does the same for a
Gradio Space that serves the demo with the published model (:mod:`spinefx.hub.space`). The plan,
:class:`RepoPlan`, and those two destinations live in :mod:`spinefx.hub.repo_plan` and are
re-exported here.

Training data is SYNTHETIC when :func:`spinefx.runtime.provenance.is_synthetic_record` says so
of the run's ``config.json`` / ``metrics.json``, the export's ``model.json`` or the cohort's
``cohort.json`` (the one rule every stage uses).

No torch is imported here; ``huggingface_hub`` is the ``hub`` extra, imported when needed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from spinefx.runtime import PreprocessConfig
from spinefx.runtime.errors import ConfigError, SpineFXError
from spinefx.runtime.files import read_json
from spinefx.runtime.model_files import MODEL_JSON, ModelSpec, read_model_spec
from spinefx.runtime.provenance import is_synthetic_record

from .._version import __version__
from .card import CARD_MARKER, CardInputs, metrics_json_summary, render_model_card
from .download import parse_hf_uri
from .repo_plan import PublishError, RepoPlan

# re-exported (`x as x`): spinefx.cli.publish and the tests import them from here
from .repo_plan import _check_out_dir as _check_out_dir
from .repo_plan import upload_repo as upload_repo
from .repo_plan import write_repo as write_repo
from .space import SPACE_MARKER, is_placeholder, space_files

RUN_REQUIRED = ("config.json", "model.safetensors", "metrics.json")
RUN_OPTIONAL = ("report.md", "oof_predictions.csv", "training_log.csv")
FIGURE_DIRS = ("", "figures")  # PNGs at the run's top level and in figures/


# ---------------------------------------------------------------------------------------------
# reading the run and the model folder
# ---------------------------------------------------------------------------------------------
def _record(path: Path, required: bool = True) -> dict:
    """A JSON object (``runtime.files.read_json``: a missing or malformed file is a
    ConfigError naming it; ``{}`` for a missing optional one)."""
    data = read_json(path, required=required)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PublishError("expected a JSON object", path)
    return data


def _check_repo_id(repo_id: str, what: str = "--repo") -> str:
    if not repo_id:
        raise PublishError(f"{what} OWNER/NAME is required")
    try:
        ref = parse_hf_uri("hf://" + repo_id.strip())
    except SpineFXError as exc:
        raise PublishError(f"{what} {repo_id!r}: {exc.problem}") from None
    if ref.revision:
        raise PublishError(f"{what} takes OWNER/NAME; give a branch with --revision")
    return ref.repo_id


def _same_preprocessing(config: dict, spec: dict, run_dir: Path, model_dir: Path) -> None:
    try:
        a = PreprocessConfig.from_dict(config.get("preprocess") or {})
        b = PreprocessConfig.from_dict(spec.get("preprocessing") or {})
    except ConfigError as exc:
        raise PublishError(f"cannot compare preprocessing: {exc.problem}", model_dir) from None
    if a != b:
        raise PublishError(f"its preprocessing ({b}) differs from the run's ({a}): the model "
                           f"folder was not exported from {run_dir}", model_dir)


def _cohort(metrics: dict, run_dir: Path) -> dict:
    """``cohort.json`` beside the run's manifest (the phantom generator writes it), or {}."""
    manifest = metrics.get("manifest")
    if isinstance(manifest, str) and manifest:
        path = Path(manifest)
        if not path.is_absolute():
            path = run_dir / path
        try:
            data = read_json(path.parent / "cohort.json", required=False)
        except ConfigError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _n_patients(run_dir: Path) -> int | None:
    try:
        cases = (read_json(run_dir / "splits.json", required=False) or {})["cases"]
        ids = {c.get("patient_id") or c.get("case_id") for c in cases}
        return len(ids) if ids else None
    except (ConfigError, KeyError, TypeError, AttributeError):
        return None


def _redact(obj, replacements: dict[str, str]):
    """The object with local paths replaced in every string (published files name no home
    folders)."""
    if isinstance(obj, dict):
        return {k: _redact(v, replacements) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v, replacements) for v in obj]
    if isinstance(obj, str):
        for old, new in replacements.items():
            obj = obj.replace(old, new)
        return obj
    return obj


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")



# ---------------------------------------------------------------------------------------------
# the model repository
# ---------------------------------------------------------------------------------------------
@dataclass
class _TrainingData:
    """What the published files say about the training data."""

    record: dict               # model.json's "training_data", as published
    synthetic: bool
    description: str           # one line, for the card and the commit
    n_cases: int | None
    n_malignant: int | None


def assemble_model_repo(run_dir: str | PathLike, model_dir: str | PathLike, repo_id: str, *,
                        license: str = "apache-2.0", data_description: str | None = None,
                        name: str | None = None) -> RepoPlan:
    """Check ``run_dir`` + ``model_dir`` and plan the model repository (nothing is written).

    Checks: the run has ``config.json``, ``model.safetensors`` and ``metrics.json``; the model
    folder's ``model.json`` is valid and every ONNX file in it matches its sha256; both have the
    same preprocessing (the model was exported from this run). Training data: SYNTHETIC when the
    run's ``metrics.json`` or ``model.json`` says so (``data_description`` is then added to the
    generated description); otherwise ``data_description`` is required (e.g. "institutional
    data, 190 patients, 2010-2020, 1.5 T and 3 T") and replaces the export's description in the
    published ``model.json``.
    """
    run, mdir = Path(run_dir), Path(model_dir)
    repo_id = _check_repo_id(repo_id)
    _check_folders(run, mdir)
    spec_obj = read_model_spec(mdir)  # format + required keys -> ConfigError
    for variant in spec_obj.variants():
        spec_obj.file(variant)  # sha256 -> ModelIntegrityError before anything goes anywhere
    spec = json.loads(json.dumps(spec_obj.raw))
    config, metrics = _record(run / "config.json"), _record(run / "metrics.json")
    _same_preprocessing(config, spec, run, mdir)
    notes = _compare_with_run(spec, metrics, mdir)
    data = _training_data(config, metrics, spec, run, data_description)
    spec["training_data"] = data.record

    files, figures = _repo_files(run, mdir, spec_obj, spec, config, metrics, notes)
    if not data.synthetic and (run / "oof_predictions.csv").is_file():
        notes.append("note: oof_predictions.csv (case ids, labels, probabilities) is published; "
                     "make sure its case ids identify no patient")
    title = name or repo_id.split("/")[-1]
    files["README.md"] = _model_card(repo_id, title, license, run, config, metrics, spec, data,
                                     files, figures)
    message = f"spinefx model: {title}, {metrics_json_summary(metrics)}" + \
        (" [SYNTHETIC data]" if data.synthetic else "")
    detail = [f"Published with spinefx {__version__} (`spinefx publish`).",
              f"Training data: {data.description}.",
              f"Files: {', '.join(sorted(files))}."]
    return RepoPlan(repo_id=repo_id, repo_type="model", files=files, commit_message=message,
                    commit_description="\n".join(detail), marker=CARD_MARKER, notes=notes,
                    synthetic=data.synthetic)


def _check_folders(run: Path, mdir: Path) -> None:
    """Both are folders, the run is a finished training run and the model folder is not it."""
    for folder, what in ((run, "RUN_DIR"), (mdir, "MODEL_DIR")):
        if not folder.is_dir():
            raise PublishError(f"{what} is not a folder", folder)
    missing = [f for f in RUN_REQUIRED if not (run / f).is_file()]
    if missing:
        hint = (" (the run kept no final model: train without --no-final)"
                if "model.safetensors" in missing else "")
        raise PublishError(f"not a finished spinefx training run: no {', '.join(missing)}{hint}",
                           run)
    if (mdir / MODEL_JSON).is_file() and mdir.resolve() == run.resolve():
        raise PublishError("MODEL_DIR must be the export folder, not the run folder", mdir)


def _compare_with_run(spec: dict, metrics: dict, mdir: Path) -> list[str]:
    """Refuse a model folder exported from another run (other case count); the notes (a
    threshold that differs from the run's)."""
    notes: list[str] = []
    m_n = (spec.get("metrics") or {}).get("n_cases")
    if m_n is not None and metrics.get("n_cases") is not None and m_n != metrics["n_cases"]:
        raise PublishError(f"model.json reports metrics of {m_n} cases, the run's metrics.json "
                           f"{metrics['n_cases']}: the model folder was exported from another "
                           "run", mdir)
    run_threshold, model_threshold = metrics.get("threshold"), spec.get("threshold")
    if run_threshold is not None and model_threshold is not None:  # else nothing to compare
        try:
            thr_run, thr_model = float(run_threshold), float(model_threshold)
        except (TypeError, ValueError):
            pass
        else:
            if not math.isclose(thr_run, thr_model, abs_tol=1e-6):
                notes.append(f"note: model.json threshold {thr_model:.4f} differs from the "
                             f"run's {thr_run:.4f}; the model card states model.json's")
    return notes


def _training_data(config: dict, metrics: dict, spec: dict, run: Path,
                   data_description: str | None) -> _TrainingData:
    """Synthetic (any record says so): the generated description, plus the publisher's text;
    otherwise the publisher's text, which is then required."""
    training = dict(spec.get("training_data") or {})
    cohort = _cohort(metrics, run)
    synthetic = any(is_synthetic_record(r) for r in (config, metrics, spec, cohort))
    n_cases = metrics.get("n_cases", training.get("n_cases"))
    n_mal = metrics.get("n_malignant", training.get("n_malignant"))
    user_text = (data_description or "").strip().rstrip(".")
    if synthetic:
        seed = training.get("seed", cohort.get("seed"))
        auto = f"synthetic phantom cohort, {n_cases} cases" if n_cases is not None else \
            "synthetic phantom cohort"
        if n_mal is not None:
            auto += f" ({n_mal} malignant)"
        if seed is not None:
            auto += f", seed {seed}"
        description = auto + (f"; {user_text}" if user_text else "")
        training["synthetic"] = True
    else:
        if not user_text:
            n_pat = _n_patients(run) or n_cases
            raise PublishError(
                "the run was not trained on the synthetic cohort: describe its data with "
                "--data-description, e.g. \"institutional data, "
                f"{n_pat if n_pat is not None else 'N'} patients, <years>, <scanners>\" "
                "(it goes into the model card and model.json)")
        description = user_text
        training["export_description"] = training.get("description")
        training["described_by"] = "publisher (spinefx publish --data-description)"
    training["description"] = description
    return _TrainingData(record=training, synthetic=synthetic, description=description,
                         n_cases=n_cases, n_malignant=n_mal)


def _repo_files(run: Path, mdir: Path, spec_obj: ModelSpec, spec: dict, config: dict,
                metrics: dict, notes: list[str]) -> tuple[dict[str, Path | bytes], list[str]]:
    """``{path_in_repo: source}`` of the weights, the ONNX export and the CV report (local
    folders redacted), and the figures among them; a missing report file adds a note."""
    replacements = _local_folders(metrics)
    files: dict[str, Path | bytes] = {}
    files["config.json"] = _json_bytes(_redact(config, replacements)) if replacements and \
        any(old in json.dumps(config, ensure_ascii=False) for old in replacements) \
        else run / "config.json"
    files["model.safetensors"] = run / "model.safetensors"
    files["metrics.json"] = _json_bytes(_redact(metrics, replacements))
    for variant in spec_obj.variants():
        rel = spec["files"][variant]["path"]
        files[Path(rel).as_posix()] = mdir / rel
    files[MODEL_JSON] = _json_bytes(_redact(spec, replacements))
    for fname in RUN_OPTIONAL:
        f = run / fname
        if f.is_file():
            files[fname] = (_redact(f.read_text(encoding="utf-8"), replacements).encode("utf-8")
                            if fname == "report.md" else f)
        elif fname != "training_log.csv":
            notes.append(f"note: the run has no {fname}; published without it")
    figures = _figures(run)
    files.update(figures)
    return files, list(figures)


def _local_folders(metrics: dict) -> dict[str, str]:
    """``{local path: published form}``: the run's absolute manifest path becomes
    ``cohort/manifest.csv`` in every published text."""
    manifest = metrics.get("manifest")
    replacements = {}
    if isinstance(manifest, str) and Path(manifest).is_absolute():
        mp = Path(manifest)
        replacements[str(mp)] = f"{mp.parent.name}/{mp.name}"
    return replacements


def _figures(run: Path) -> dict[str, Path]:
    """``{path_in_repo: png}`` of the run's figures (top level and figures/), in order."""
    figures: dict[str, Path] = {}
    for sub in FIGURE_DIRS:
        folder = run / sub if sub else run
        if folder.is_dir():
            for png in sorted(folder.glob("*.png")):
                figures[f"{sub}/{png.name}" if sub else png.name] = png
    return figures


def _model_card(repo_id: str, title: str, license: str, run: Path, config: dict, metrics: dict,
                spec: dict, data: _TrainingData, files: dict[str, Path | bytes],
                figures: list[str]) -> bytes:
    """README.md: the model card, listing ``files`` with their sizes."""
    sizes = {p: (len(s) if isinstance(s, bytes) else Path(s).stat().st_size)
             for p, s in files.items()}
    card = render_model_card(CardInputs(
        repo_id=repo_id, name=title, license=license, metrics=metrics, model_spec=spec,
        config=config, synthetic=data.synthetic, data_description=data.description,
        n_cases=data.n_cases, n_malignant=data.n_malignant, n_patients=_n_patients(run),
        files=sizes, figures=[f for f in figures if f.startswith("figures/")] or figures,
        spinefx_version=__version__))
    return card.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# the Space
# ---------------------------------------------------------------------------------------------
def assemble_space_repo(space_id: str, model_repo: str, *, model_revision: str | None = None,
                        requirement: str | None = None, sdk_version: str | None = None,
                        license: str = "apache-2.0", title: str | None = None,
                        synthetic: bool | None = None) -> RepoPlan:
    """Plan the Space repository that serves the demo with ``hf://model_repo[@revision]``."""
    space_id = _check_repo_id(space_id, "--space")
    model_repo = _check_repo_id(model_repo)
    contents = space_files(space_id, model_repo, model_revision=model_revision,
                           requirement=requirement, sdk_version=sdk_version, license=license,
                           title=title, synthetic=synthetic)
    files: dict[str, Path | bytes] = dict(contents)
    notes = []
    if is_placeholder(contents["requirements.txt"].decode()):
        notes.append("note: requirements.txt installs spinefx from a placeholder URL: pass "
                     "--spinefx-requirement 'spinefx[hub,demo] @ git+https://github.com/<owner>/"
                     f"spinefx@v{__version__}' (or a wheel URL) before uploading")
    return RepoPlan(repo_id=space_id, repo_type="space", files=files,
                    commit_message=f"spinefx demo Space for {model_repo}"
                                   + (f"@{model_revision}" if model_revision else ""),
                    commit_description=f"Generated by spinefx {__version__} "
                                       "(`spinefx publish --space`).",
                    marker=SPACE_MARKER, notes=notes)
