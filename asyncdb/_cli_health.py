"""``asyncdb health [--url] [--json] [--timeout]``: exit 0 when healthy, 1 when not."""

from __future__ import annotations

import argparse
import json

from ._cli_args import add_url_argument
from ._manager import AsyncDatabaseManager

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the health command's arguments."""
    add_url_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")


async def run(args: argparse.Namespace) -> int:
    """Probe the database once and print the report."""
    db = AsyncDatabaseManager(args.url, connect_retries=1)
    report = await db.health_check(timeout=args.timeout)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        state = "healthy" if report.healthy else "UNHEALTHY"
        print(f"{report.url}: {state}")
        if report.latency_ms is not None:
            print(f"  latency: {report.latency_ms:.2f} ms")
        if report.error:
            print(f"  error: {report.error}")
    return 0 if report.healthy else 1
