"""The ``facekit`` command line.

Each area of the library adds its sub-commands from a module in
:mod:`facekit.commands` that defines ``register(subparsers)``; the handler is stored
as ``func`` on the parsed arguments. Errors facekit raises on purpose
(:class:`facekit.errors.FacekitError`) are printed as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import FacekitError

#: modules of facekit.commands, in the order their commands are listed in --help
COMMAND_MODULES = (
    "lfw",
    "codecs",
    "embed",
    "compress",
    "train",
    "joint",
    "weights",
    "evaluate",
    "reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facekit",
        description="Deep image compression for face recognition (Bian et al., arXiv:1907.01714).",
    )
    parser.add_argument("--version", action="version", version=f"facekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"facekit.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"facekit.commands.{name}":
                continue  # that area is not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except FacekitError as e:
        print(f"facekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
