"""``asyncdb migrate``: upgrade, inspect or downgrade the toolkit's tables.

::

    asyncdb migrate [--url URL] [--revision REV]   upgrade (default: head)
    asyncdb migrate --sql [--revision REV]         print the SQL; connect to nothing
    asyncdb migrate --status                       exit 0 when up to date, 1 when not
    asyncdb migrate --downgrade REV                e.g. base, or -1

A failure exits 2 with a message naming the revision and what to run next.
"""

from __future__ import annotations

import argparse
import sys

from ._cli_args import add_url_argument
from ._migrate import downgrade, migrate, migration_status

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the migrate command's arguments."""
    add_url_argument(parser)
    parser.add_argument(
        "--revision", default=None, help="target revision of the upgrade (default: head)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sql", action="store_true", help="print the upgrade's SQL instead of running it"
    )
    mode.add_argument(
        "--status",
        action="store_true",
        help="show the current and head revisions; exit 1 when migrations are pending",
    )
    mode.add_argument("--downgrade", metavar="REV", help="downgrade to REV (base drops all)")


async def run(args: argparse.Namespace) -> int:
    """Run the requested migration command."""
    if args.revision is not None and (args.status or args.downgrade is not None):
        print(
            "asyncdb migrate: --revision goes with an upgrade or --sql; "
            "--downgrade takes its own target.",
            file=sys.stderr,
        )
        return 2
    if args.status:
        status = await migration_status(args.url)
        print(status.url)
        print(f"  current: {_heads(status.current)}")
        print(f"  head:    {_heads(status.heads)}")
        if status.up_to_date:
            print("  up to date")
            return 0
        print(f"  pending: {', '.join(status.pending)} (run `asyncdb migrate`)")
        return 1
    if args.downgrade is not None:
        result = await downgrade(args.url, args.downgrade)
        verb = "Downgraded"
    else:
        result = await migrate(args.url, revision=args.revision or "head", sql=args.sql)
        if result.sql is not None:
            sys.stdout.write(result.sql)
            return 0
        verb = "Upgraded"
    if result.applied:
        print(
            f"{verb} {result.url} from {_heads(result.before)} to {_heads(result.after)} "
            f"({len(result.applied)} revision(s): {', '.join(result.applied)})."
        )
    else:
        print(f"{result.url} is already at {_heads(result.after)}; nothing to do.")
    return 0


def _heads(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) if heads else "base"
