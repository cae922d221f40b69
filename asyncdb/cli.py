"""The ``asyncdb`` command line.

Each subcommand lives in its own module, which provides ``configure(parser)`` to add
its arguments and ``run(args) -> int`` (the exit code; may be a coroutine function).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence

from ._cli_args import add_url_argument
from ._errors import AsyncDBError

__all__ = ["add_url_argument", "main"]

#: subcommand → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("asyncdb.bench", "compare asyncdb with the raw driver, Core and the bare ORM"),
    "demo": ("asyncdb.demo", "a narrated tour of asyncdb on a real database"),
    "health": ("asyncdb._cli_health", "probe the database; exit 0 when healthy, 1 when not"),
    "metrics": ("asyncdb._cli_metrics", "connect, run the health check, print the metrics"),
    "migrate": ("asyncdb._cli_migrate", "upgrade (or --status, --downgrade) the toolkit's tables"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="asyncdb", description="asyncdb command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncdb`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result = args._run(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except AsyncDBError as exc:
        print(f"asyncdb: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
