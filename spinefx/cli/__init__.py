"""The `spinefx` command line: one sub-command per job, each a thin shell over a Python API.

One module per command (:mod:`spinefx.cli.phantom`, ``.inspect``, ``.train``, ...), each with
``register(subparsers)`` (argparse only, cheap) and ``run(args) -> int``, which imports its stage
(torch, onnxruntime, gradio, huggingface_hub, ...) only when the command runs, so
``spinefx --help`` and ``spinefx COMMAND --help`` stay light.

Errors the user can fix (bad files, bad options) print one line naming the file and the
problem and exit with status 2; they never show a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Callable, Sequence

from spinefx._version import __version__
from spinefx.runtime.errors import SpineFXError

from ._common import EPILOG, UsageError

__all__ = ["COMMANDS", "EPILOG", "EXTRAS", "UsageError", "build_parser", "execute", "main"]

#: The sub-commands in the order ``spinefx --help`` lists them (module names in this package).
COMMANDS = ("phantom", "inspect", "localise", "train", "evaluate", "readers", "export", "bench",
            "publish", "predict", "demo", "node")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinefx",
        description="Benign vs malignant vertebral compression fracture on sagittal spine MRI "
                    "(ResNet50 on T1W+T2W, lesion slice and neighbours = 6 channels).",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"spinefx {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:  # imported here, not at the top: `python -m spinefx.cli.train` runs clean
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # users need the sentence, not our source line
    print(f"warning: {message}", file=sys.stderr)


#: Optional packages -> the install extra that brings them (README "Install extras").
EXTRAS = {"torch": "train", "torchvision": "train", "sklearn": "train", "safetensors": "train",
          "matplotlib": "train", "scipy": "train", "onnx": "export", "onnxscript": "export",
          "pytorch_grad_cam": "export", "gradio": "demo", "huggingface_hub": "hub",
          "nibabel": "nifti", "pynetdicom": "node", "highdicom": "node",
          "onnxruntime": "cpu"}  # or [gpu]: onnxruntime-gpu


def command_name(run: Callable) -> str:
    """The sub-command a ``run`` function belongs to (its module's name in this package)."""
    return str(getattr(run, "__module__", "") or "").rsplit(".", 1)[-1] or "command"


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra whose package ``exc`` did not find, or None for any other module."""
    root = (exc.name or "").split(".", 1)[0]
    return EXTRAS.get(root)


def execute(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a user error (or a missing optional package) becomes one line on stderr
    and exit status 2."""
    warnings.showwarning = _show_warning
    try:
        return int(run(args) or 0)
    except (SpineFXError, FileExistsError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        name = command_name(run)
        print(f"error: spinefx {name} needs the '{extra}' extra: pip install 'spinefx[{extra}]' "
              f"(no module named {exc.name!r})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `spinefx inspect ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return execute(args.run, args)
