"""The ``asyncdb`` command line: ``demo``, ``health``, and the subcommands later issues add."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from ._errors import AsyncDBError
from ._manager import AsyncDatabaseManager

__all__ = ["main"]


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help="database URL (default: ASYNCDB_URL, else the embedded SQLite file)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="asyncdb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a narrated tour of asyncdb on a real database")
    _add_url(demo)

    health = sub.add_parser("health", help="probe the database; exit 0 when healthy")
    _add_url(health)
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    return parser


async def _health(url: str | None, as_json: bool, timeout: float) -> int:
    db = AsyncDatabaseManager(url, connect_retries=1)
    report = await db.health_check(timeout=timeout)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        state = "healthy" if report.healthy else "UNHEALTHY"
        print(f"{report.url}: {state}")
        if report.latency_ms is not None:
            print(f"  latency: {report.latency_ms:.2f} ms")
        if report.error:
            print(f"  error: {report.error}")
    return 0 if report.healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncdb`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "health":
            return asyncio.run(_health(args.url, args.json, args.timeout))
        if args.command == "demo":
            from .demo import run_demo

            return asyncio.run(run_demo(args.url))
    except AsyncDBError as exc:
        print(f"asyncdb: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
