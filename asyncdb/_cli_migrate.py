"""``asyncdb migrate``: upgrade, inspect or downgrade the toolkit's tables.

::

    asyncdb migrate [--url URL] [--revision REV]   upgrade (default: head)
    asyncdb migrate --sql [--revision REV]         print the SQL; connect to nothing
    asyncdb migrate --status                       exit 0 when up to date, 1 when not
    asyncdb migrate --downgrade REV [--yes]        e.g. base, or -1 (asks first)
    asyncdb migrate --adopt                        stamp tables made by create_all
    asyncdb migrate --audit-append-only            then guard the audit log (PostgreSQL)

A failure exits 2 with a message naming the revision and what to run next.
"""

from __future__ import annotations

import argparse
import sys

from ._cli_common import EXIT_ERROR, add_url_argument
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
    mode.add_argument(
        "--downgrade",
        metavar="REV",
        help="downgrade to REV; base drops the toolkit's tables and their rows (asks first)",
    )
    mode.add_argument(
        "--adopt",
        action="store_true",
        help="stamp toolkit tables made by create_all after checking they match the head",
    )
    parser.add_argument(
        "--yes", action="store_true", help="downgrade without asking for confirmation"
    )
    parser.add_argument(
        "--audit-append-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the upgrade, make the audit log reject UPDATE/DELETE (PostgreSQL), or not",
    )


async def run(args: argparse.Namespace) -> int:
    """Run the requested migration command."""
    if args.revision is not None and (args.status or args.downgrade is not None):
        print(
            "asyncdb migrate: --revision goes with an upgrade or --sql; "
            "--downgrade takes its own target.",
            file=sys.stderr,
        )
        return 2
    if args.adopt:
        if args.revision is not None:
            print("asyncdb migrate: --adopt records the head; drop --revision.", file=sys.stderr)
            return EXIT_ERROR
        result = await migrate(args.url, adopt=True, audit_append_only=args.audit_append_only)
        if result.before == result.after:
            print(f"{result.url} is already at {_heads(result.after)}; nothing to adopt.")
        else:
            print(
                f"Adopted the toolkit's tables in {result.url}: they match the head, "
                f"recorded {_heads(result.after)}."
            )
        return 0
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
        if not args.yes and not _confirm(args.downgrade):
            return EXIT_ERROR
        result = await downgrade(args.url, args.downgrade)
        verb = "Downgraded"
    else:
        result = await migrate(
            args.url,
            revision=args.revision or "head",
            sql=args.sql,
            audit_append_only=args.audit_append_only,
        )
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


def _confirm(target: str) -> bool:
    warning = (
        f"Downgrading to {target} drops the toolkit tables that revision does not have, "
        "with their rows (base drops the audit log)."
    )
    if not sys.stdin.isatty():
        print(
            f"asyncdb migrate: {warning} Pass --yes to confirm; nothing was changed.",
            file=sys.stderr,
        )
        return False
    answer = input(f"{warning} Continue? [y/N] ").strip().lower()
    if answer in {"y", "yes"}:
        return True
    print("asyncdb migrate: not confirmed; nothing was changed.", file=sys.stderr)
    return False


def _heads(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) if heads else "base"
