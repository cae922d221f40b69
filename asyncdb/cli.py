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

from . import __version__
from ._cli_common import EXIT_ERROR, add_url_argument
from ._errors import AsyncDBError

__all__ = ["add_url_argument", "main"]

#: subcommand → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("asyncdb._cli_audit", "verify the audit log's hash chains, or export it"),
    "bench": ("asyncdb.bench", "compare asyncdb with the raw driver, Core and the bare ORM"),
    "demo": ("asyncdb.demo", "a narrated tour of asyncdb on a real database"),
    "health": ("asyncdb._cli_health", "probe the database; exit 0 when healthy, 1 when not"),
    "metrics": ("asyncdb._cli_metrics", "connect, run the health check, print the metrics"),
    "migrate": (
        "asyncdb._cli_migrate",
        "upgrade (or --status, --downgrade, --adopt) the toolkit's tables",
    ),
}

EPILOG = """\
exit codes:
  0  done: healthy, up to date, the command succeeded
  1  ran and found a problem: unhealthy, migrations pending, a bench target missed
  2  could not run: bad arguments or settings, database unreachable, refused

The database comes from --url, else ASYNCDB_URL (and the other ASYNCDB_* variables),
else the SQLite file ./asyncdb.sqlite3.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="asyncdb",
        description="asyncdb command line",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncdb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=_Formatter,
        )
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and shows each option's default, unless the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or action.option_strings == []
        ):
            return action.help
        return f"{text} (default: {default})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncdb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        result = args._run(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except AsyncDBError as exc:
        print(f"asyncdb: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
