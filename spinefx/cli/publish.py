"""``spinefx publish``: a training run + its ONNX export -> a Hugging Face model repository
(and optionally a Gradio Space), via :mod:`spinefx.hub.publish`. huggingface_hub loads inside
:func:`run`."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from spinefx._version import __version__

from ._common import EPILOG

_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "publish", help="upload a trained run + its ONNX export to the Hugging Face Hub",
        description="Assemble a Hugging Face model repository from a training run (RUN_DIR: "
                    "config.json, model.safetensors, metrics.json, report) and its export "
                    "(MODEL_DIR: model.json + ONNX): PyTorch weights, ONNX files, the CV report "
                    "and a generated model card (YAML metadata with the cross-validated "
                    "metrics). Then create the repo if missing and push everything in one "
                    "commit, or with --dry-run DIR only write the folder. --space OWNER/SPACE "
                    "also (or, without RUN_DIR MODEL_DIR, only) publishes a Gradio Space that "
                    "serves the demo with hf://OWNER/NAME.",
        epilog=f"{EPILOG} Nothing is uploaded with --dry-run; otherwise a Hugging Face write "
               "token is needed (HF_TOKEN or `hf auth login`).")
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR",
                   help="training run folder (spinefx train --out)")
    p.add_argument("model_dir", nargs="?", type=Path, metavar="MODEL_DIR",
                   help="model folder (spinefx export --out)")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME",
                   help="the model repository on the Hub")
    p.add_argument("--private", action="store_true",
                   help="create the repo(s) private (refused if the repo exists and is public)")
    p.add_argument("--revision", metavar="BRANCH", default=None,
                   help="push to this branch (created from main if missing; default main); the "
                        "Space then serves hf://OWNER/NAME@BRANCH")
    p.add_argument("--dry-run", type=Path, metavar="DIR", default=None,
                   help="write the repository folder to DIR and upload nothing (DIR: new, empty "
                        "or a previous dry run; with --space as well: DIR/model and DIR/space)")
    p.add_argument("--data-description", metavar="TEXT", default=None,
                   help="the training data in words, for the card and model.json (required "
                        "for non-synthetic runs, e.g. \"institutional data, 190 patients, "
                        "2010-2020\")")
    p.add_argument("--license", default="apache-2.0",
                   help="license id for the card metadata (default apache-2.0)")
    p.add_argument("--name", default=None, help="model name in the card (default: repo name)")
    p.add_argument("--space", metavar="OWNER/SPACE", default=None,
                   help="also publish a Gradio Space serving the demo with this model")
    p.add_argument("--spinefx-requirement", metavar="SPEC", default=None,
                   help="the Space's pip line for spinefx (not on PyPI), e.g. \"spinefx[hub,demo]"
                        f" @ git+https://github.com/OWNER/spinefx@v{__version__}\"; required "
                        "to upload a Space")
    p.add_argument("--sdk-version", default=None,
                   help="the Space's gradio version (default: the installed gradio)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from spinefx.hub.publish import (
        PublishError,
        RepoPlan,
        _check_out_dir,
        assemble_model_repo,
        assemble_space_repo,
        upload_repo,
        write_repo,
    )

    if (args.run_dir is None) != (args.model_dir is None):
        raise PublishError("give both RUN_DIR and MODEL_DIR (or neither, with --space)")
    if args.run_dir is None and not args.space:
        raise PublishError("nothing to publish: give RUN_DIR MODEL_DIR, and/or --space "
                           "OWNER/SPACE")
    if not _LICENSE.match(args.license or ""):
        raise PublishError(f"--license {args.license!r} is not a Hub license id (e.g. "
                           "apache-2.0, mit, cc-by-nc-4.0, other)")
    if args.revision is not None and (not args.revision.strip() or " " in args.revision):
        raise PublishError(f"--revision {args.revision!r} is not a branch name")
    plans: list[tuple[str, RepoPlan]] = []
    synthetic = None
    if args.run_dir is not None:
        plan = assemble_model_repo(args.run_dir, args.model_dir, args.repo, license=args.license,
                                   data_description=args.data_description, name=args.name)
        synthetic = plan.synthetic
        plans.append(("model", plan))
    if args.space:
        plans.append(("space", assemble_space_repo(
            args.space, args.repo, model_revision=args.revision,
            requirement=args.spinefx_requirement, sdk_version=args.sdk_version,
            license=args.license, synthetic=synthetic)))
    if args.dry_run is not None:
        for kind, plan in plans:  # check every target before writing any
            _check_out_dir(args.dry_run / kind if len(plans) > 1 else args.dry_run)
    for kind, plan in plans:
        for note in plan.notes:
            print(note)
        what = "Space" if kind == "space" else "model repository"
        if args.dry_run is not None:
            out = write_repo(plan, args.dry_run / kind if len(plans) > 1 else args.dry_run)
            total = sum(plan.size(f) for f in plan.files)
            print(f"dry run: {what} {plan.repo_id} written to {out} ({len(plan.files)} files, "
                  f"{total / 1e6:.1f} MB); nothing uploaded")
            print(f"  commit message would be: {plan.commit_message}")
        else:
            url = upload_repo(plan, private=args.private,
                              revision=args.revision if kind == "model" else None)
            print(f"published {what} {plan.repo_id}: {url}")
            if kind == "model":
                rev = f"@{args.revision}" if args.revision and args.revision != "main" else ""
                print(f"  use it: spinefx predict ... --model hf://{plan.repo_id}{rev}")
    return 0
