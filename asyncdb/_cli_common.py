"""What every ``asyncdb`` subcommand shares: the ``--url`` option, exit codes, the URL.

Subcommand modules import from here (not from :mod:`asyncdb.cli`, which imports them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy.engine import make_url

from ._settings import DatabaseSettings

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_url_argument",
    "missing_sqlite_file",
    "resolve_settings",
]

#: The command did what was asked (the database is healthy, up to date, ...).
EXIT_OK = 0
#: The command ran and found a problem (unhealthy, migrations pending, a target missed).
EXIT_FAILED = 1
#: The command could not run: bad arguments or settings, database unreachable, refused.
EXIT_ERROR = 2
#: argparse's own code for a usage error (the same number as EXIT_ERROR).
EXIT_USAGE = 2


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--url`` option every subcommand shares."""
    parser.add_argument(
        "--url",
        default=None,
        help="database URL (default: ASYNCDB_URL, else the embedded SQLite file)",
    )


def resolve_settings(url: str | None) -> DatabaseSettings:
    """The settings a command runs with: ``--url`` over the ``ASYNCDB_*`` environment."""
    return DatabaseSettings.from_env() if url is None else DatabaseSettings.from_env(url=url)


def missing_sqlite_file(settings: DatabaseSettings) -> Path | None:
    """The path of a SQLite database file that does not exist (None when it does, or n/a).

    Opening a missing SQLite file creates it; a probe must not.
    """
    url = make_url(settings.url)
    if url.get_backend_name() != "sqlite" or settings.is_memory:
        return None
    database = url.database or ""
    if database.startswith("file:"):
        return None  # a URI filename: SQLite decides, with its own mode= parameter
    path = Path(database)
    return None if path.exists() else path
