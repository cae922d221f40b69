"""``asyncdb health [--url] [--json] [--timeout]``: exit 0 when healthy, 1 when not.

A probe changes nothing: a SQLite file that does not exist is reported unhealthy and
is not created. Connection failures are worded as ``connect()`` words them (credentials,
database name, unreachable server), not as a failed statement.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from ._cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    add_url_argument,
    missing_sqlite_file,
    resolve_settings,
)
from ._errors import AsyncDBError
from ._health import HealthReport
from ._manager import AsyncDatabaseManager

__all__ = ["configure", "probe", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the health command's arguments."""
    add_url_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")


async def probe(url: str | None, timeout: float) -> HealthReport:
    """Connect once (no retries) and run the health check; never raises an asyncdb error."""
    settings = resolve_settings(url)
    db = AsyncDatabaseManager(settings.replace(connect_retries=1))
    missing = missing_sqlite_file(settings)
    if missing is not None:
        error = (
            f"The SQLite file {missing} does not exist. Check the path in the URL, or create "
            "the database with `asyncdb migrate`."
        )
        return _unhealthy(db, error)
    try:
        await asyncio.wait_for(db.connect(), timeout)
    except asyncio.TimeoutError:
        await db.dispose()
        return _unhealthy(db, f"The database did not answer within {timeout:g} s.")
    except AsyncDBError as exc:
        return _unhealthy(db, str(exc))
    try:
        return await db.health_check(timeout=timeout)
    finally:
        await db.dispose()


def _unhealthy(db: AsyncDatabaseManager, error: str) -> HealthReport:
    return HealthReport(healthy=False, latency_ms=None, backend=db.backend, url=db.url, error=error)


async def run(args: argparse.Namespace) -> int:
    """Probe the database once and print the report."""
    report = await probe(args.url, args.timeout)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        state = "healthy" if report.healthy else "UNHEALTHY"
        print(f"{report.url}: {state}")
        if report.latency_ms is not None:
            print(f"  latency: {report.latency_ms:.2f} ms")
        if report.error:
            print(f"  error: {report.error}")
    return EXIT_OK if report.healthy else EXIT_FAILED
