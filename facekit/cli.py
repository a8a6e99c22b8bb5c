"""The ``facekit`` command line.

Each area of the library adds its sub-commands from a module in
:mod:`facekit.commands` that defines ``register(subparsers)``; the handler is stored
as ``func`` on the parsed arguments. Errors facekit raises on purpose
(:class:`facekit.errors.FacekitError`) are printed as one line and exit with code 2.
The global option ``--threads N`` (before the command) sets torch's CPU threads
(:mod:`facekit.threads` gives the defaults).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import FacekitError
from .threads import set_threads

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
    parser.add_argument(
        "--threads", type=positive_int, default=None, metavar="N", dest="torch_threads",
        help="CPU threads for torch in this run (default: torch's own, one per core or "
        "$OMP_NUM_THREADS; idle threads sleep, see facekit.threads)",
    )
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


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    if args.torch_threads is not None:
        set_threads(args.torch_threads)
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
