"""The ``zeusseg`` argument parser (subcommands are assembled from ``zeusseg.commands``)."""

from __future__ import annotations

import argparse
import importlib

from zeusseg import __version__
from zeusseg.commands import COMMANDS


def get_arg_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module in ``zeusseg.commands.COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="zeusseg",
        description="Text-prompted, zero-shot instance segmentation of microscopy images.",
    )
    parser.add_argument("--version", action="version", version=f"zeusseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"zeusseg.commands.{name}")
        module.register(sub)
    return parser


def add_common_output_args(group: argparse._ArgumentGroup) -> None:
    """Output options shared by commands that write predictions."""
    group.add_argument(
        "-o",
        "--out",
        default="zeusseg_output",
        help="output folder (default: %(default)s)",
    )
