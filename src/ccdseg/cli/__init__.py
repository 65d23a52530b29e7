"""Command-line interface: a thin layer over the Python API.

Each subcommand lives in its own module of this package, exposing ``register(subparsers)``
that adds its parser and sets ``func(args) -> int`` (the exit code).
"""

import argparse
import importlib
import sys

from ccdseg._version import __version__
from ccdseg.errors import CcdsegError

#: Subcommand modules, in the order ``ccdseg --help`` lists them.
COMMANDS = ("demo", "simulate", "train", "average", "predict", "mask", "calibrate", "evaluate", "export")


def build_parser():
    """The ``ccdseg`` argument parser with every subcommand (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="ccdseg",
        description="Segment CCD images into background, glowing, hot pixel and cluster pixels.")
    parser.add_argument("--version", action="version", version=f"ccdseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"ccdseg.cli.{name}").register(subparsers)
    return parser


def main(argv=None):
    """Entry point of the ``ccdseg`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CcdsegError as error:
        if args.debug:
            raise
        print(f"ccdseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"ccdseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
