"""Command-line options that several ``asyncdb`` subcommands share."""

from __future__ import annotations

import argparse

__all__ = ["add_url_argument"]


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--url`` option every subcommand shares."""
    parser.add_argument(
        "--url",
        default=None,
        help="database URL (default: ASYNCDB_URL, else the embedded SQLite file)",
    )
