"""``asyncdb metrics [--url] [--json | --prometheus]``: connect, probe, print the metrics.

Exits 0 when the health check passed, 1 when it did not; a database that cannot be
reached at all exits 2 (as every subcommand does on an asyncdb error).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._cli_common import add_url_argument
from ._manager import AsyncDatabaseManager

__all__ = ["configure", "format_snapshot", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the metrics command's arguments."""
    add_url_argument(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    output.add_argument(
        "--prometheus",
        action="store_true",
        help="print the Prometheus text exposition (needs the prometheus extra)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="health check timeout, s")


async def run(args: argparse.Namespace) -> int:
    """Connect, run the health check (one query), and print the metrics snapshot."""
    async with AsyncDatabaseManager(args.url, connect_retries=1) as db:
        report = await db.health_check(timeout=args.timeout)
        if args.json:
            print(json.dumps(db.metrics.snapshot(), indent=2))
        elif args.prometheus:
            from .prometheus import render

            print(render(db), end="")
        else:
            state = "healthy" if report.healthy else f"UNHEALTHY ({report.error})"
            print(f"{db.url}: {state}")
            print(format_snapshot(db.metrics.snapshot()))
    return 0 if report.healthy else 1


def format_snapshot(snapshot: dict[str, Any]) -> str:
    """A metrics snapshot as an aligned, human-readable table."""
    q = snapshot["queries"]
    slow = snapshot["slow_queries"]
    pool = snapshot["pool"]
    wait = pool["checkout_wait"]
    leaks = snapshot["leaks"]
    tx = snapshot["transactions"]
    stmts = snapshot["statements"]
    rows = [
        ("database", snapshot["database"]),
        ("queries", f"{q['total']} ({q['errors']} errors)"),
        (
            "query time",
            f"total {_ms(q['total_seconds'])}  avg {_ms(q['avg_seconds'])}  "
            f"min {_ms(q['min_seconds'])}  max {_ms(q['max_seconds'])}",
        ),
        (
            "percentiles",
            f"p50 {_ms(q['p50_seconds'])}  p95 {_ms(q['p95_seconds'])}  "
            f"p99 {_ms(q['p99_seconds'])}",
        ),
        ("slow queries", f"{slow['count']} over {slow['threshold_seconds']:g} s"),
        (
            "pool",
            f"{pool['class']}  size {_n(pool['size'])}  checked out {_n(pool['checked_out'])}  "
            f"overflow {_n(pool['overflow'])}",
        ),
        (
            "checkouts",
            f"{pool['checkouts']} ({pool['checkout_timeouts']} timed out)  "
            f"wait avg {_ms(wait['avg_seconds'])}  max {_ms(wait['max_seconds'])}",
        ),
        (
            "connections",
            f"opened {pool['connections_opened']}  closed {pool['connections_closed']}  "
            f"invalidated {pool['connections_invalidated']}",
        ),
        (
            "leaks",
            f"{leaks['detected']} detected, {leaks['outstanding']} outstanding "
            f"(threshold {_s(leaks['threshold_seconds'])})",
        ),
        (
            "transactions",
            f"begun {tx['begun']}  committed {tx['committed']}  "
            f"rolled back {tx['rolled_back']}  avg {_ms(tx['avg_seconds'])}",
        ),
        ("statements", f"{stmts['tracked']} tracked (max {stmts['max']})"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    if stmts["top"]:
        lines.append("")
        lines.append(f"  {'calls':>7}  {'total':>10}  {'mean':>10}  {'max':>10}  statement")
        for row in stmts["top"]:
            sql = row["statement"]
            sql = sql if len(sql) <= 60 else sql[:59] + "…"
            lines.append(
                f"  {row['calls']:>7}  {_ms(row['total_seconds']):>10}  "
                f"{_ms(row['mean_seconds']):>10}  {_ms(row['max_seconds']):>10}  {sql}"
            )
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def _s(seconds: float | None) -> str:
    return "off" if seconds is None else f"{seconds:g} s"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)
