"""``zeusseg models``: every registered component and whether its weights are present."""

from __future__ import annotations

import argparse
import logging

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from zeusseg.components import KINDS

    p = subparsers.add_parser(
        "models",
        help="list describers, writers, text and image encoders and their local weights",
        description="List every registered component with whether its weights are on this "
        "machine, and how to get the missing ones.",
    )
    p.add_argument("--kind", choices=KINDS, default=None, help="list one kind only")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from zeusseg.components import list_components

    table = Table(title="zeusseg components")
    for column in ("kind", "name", "default", "weights", "description", "how to get"):
        table.add_column(column, overflow="fold")
    for e in list_components(args.kind):
        present = e.weights_present()
        table.add_row(
            e.kind, e.name, "yes" if e.default else "", "present" if present else "missing",
            e.description, "" if present else e.how_to_get,
        )
    Console(width=160).print(table)
    return 0
