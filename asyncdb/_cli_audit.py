"""``asyncdb audit``: check the audit log's hash chains, or stream it out.

::

    asyncdb audit verify [--url URL] [--table T] [--entity-id ID] [--until-id N] [--json]
        exit 0 when every chain verifies, 1 at the first broken link (printed)
    asyncdb audit export [--url URL] [--since ISO] [--until ISO] [--table T] [--user U]
                         [--format jsonl|csv] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import TextIO

from ._audit_export import EXPORT_FORMATS, export_audit_logs
from ._audit_verify import verify_audit_chain
from ._cli_common import add_url_argument
from ._manager import AsyncDatabaseManager

__all__ = ["configure", "run"]


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not an ISO 8601 time; write it like 2026-01-31T12:00:00+00:00"
        raise argparse.ArgumentTypeError(msg) from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the audit command's subcommands and their arguments."""
    sub = parser.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check every hash chain; exit 1 at a broken link")
    add_url_argument(verify)
    verify.add_argument("--table", default=None, help="only this table's entities")
    verify.add_argument("--entity-id", default=None, help="only this entity (with --table)")
    verify.add_argument("--until-id", type=int, default=None, help="ignore rows after this id")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    export = sub.add_parser("export", help="stream audit rows as JSON lines or CSV")
    add_url_argument(export)
    export.add_argument("--since", type=_timestamp, default=None, help="from (inclusive, ISO)")
    export.add_argument("--until", type=_timestamp, default=None, help="to (exclusive, ISO)")
    export.add_argument("--table", default=None, help="only this table's rows")
    export.add_argument("--user", default=None, help="only this user's rows")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
    export.add_argument("--output", default=None, help="file to write (default: stdout)")


def run(args: argparse.Namespace) -> int:
    """Run ``audit verify`` or ``audit export``."""
    if args.audit_command == "export" and args.output is not None:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            return asyncio.run(_main(args, out))
    return asyncio.run(_main(args, sys.stdout))


async def _main(args: argparse.Namespace, out: TextIO) -> int:
    async with AsyncDatabaseManager(args.url, connect_retries=1) as db:
        if args.audit_command == "verify":
            return await _verify(db, args)
        return await _export(db, args, out)


async def _verify(db: AsyncDatabaseManager, args: argparse.Namespace) -> int:
    report = await verify_audit_chain(
        db, table_name=args.table, entity_id=args.entity_id, until_id=args.until_id
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        state = "OK" if report.ok else "BROKEN"
        print(
            f"{db.url}: audit chain {state}: {report.rows} row(s) in {report.chains} chain(s), "
            f"{report.unchained} unchained, {report.checkpoints} checkpoint link(s)"
        )
        print(f"  head digest: {report.head_digest} (last id {report.last_id})")
        if report.broken is not None:
            print(f"  first broken link: {report.broken}")
    return 0 if report.ok else 1


async def _export(db: AsyncDatabaseManager, args: argparse.Namespace, out: TextIO) -> int:
    count = await export_audit_logs(
        db,
        out,
        format=args.format,
        since=args.since,
        until=args.until,
        table_name=args.table,
        user_id=args.user,
    )
    print(f"Exported {count} audit row(s).", file=sys.stderr)
    return 0
