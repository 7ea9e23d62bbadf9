"""Entry point of ``zeusseg`` and ``python -m zeusseg``."""

from __future__ import annotations

import logging
import sys

from zeusseg.errors import InputError, ZeusSegError

_logger = logging.getLogger("zeusseg")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Route zeusseg's log records to stderr through rich (only the CLI configures handlers)."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(
        console=Console(stderr=True), show_path=False, show_time=False, markup=False
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("zeusseg")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run one subcommand. Returns the exit code.

    Exit codes: 0 success, 1 a run that finished with skipped inputs or an internal error,
    2 bad input or usage (the message names the file and the problem).
    """
    from zeusseg.cli import get_arg_parser

    parser = get_arg_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.run(args) or 0)
    except (InputError, FileNotFoundError, ZeusSegError) as err:
        sys.stderr.write(f"zeusseg {args.command}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("zeusseg: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
