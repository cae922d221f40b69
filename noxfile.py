"""Developer sessions: ``nox -s tests lint typecheck docs bench``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on every backend (PostgreSQL from ASYNCDB_TEST_POSTGRES_URL, MariaDB from
    ASYNCDB_TEST_MYSQL_URL; SQLite and DuckDB files in a temporary directory)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "asyncdb", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "asyncdb", "tests", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "asyncdb")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode."""
    session.install("-e", ".[dev]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark on a SQLite file and on PostgreSQL (see docs/performance.md)."""
    session.install("-e", ".[dev]")
    sqlite = f"sqlite+aiosqlite:///{session.create_tmp()}/bench.sqlite3"
    session.run("asyncdb", "bench", "--url", sqlite, *session.posargs)
    pg = os.environ.get(
        "ASYNCDB_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    session.run("asyncdb", "bench", "--yes", "--url", pg, *session.posargs)
