"""Developer sessions: ``nox -s tests lint typecheck docs bench``.

``tests`` runs on Python 3.11 (with the coverage gate), 3.10 on SQLAlchemy 2.0 (what
3.10 gets) and 3.13 on SQLAlchemy 2.1: ``nox -s tests-3.10``, ``tests-3.11``, ``tests-3.13``.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
MATRIX = ["3.10", "3.11", "3.13"]


@nox.session(python=MATRIX)
def tests(session: nox.Session) -> None:
    """The test suite on every backend (PostgreSQL from ASYNCDB_TEST_POSTGRES_URL, MariaDB
    from ASYNCDB_TEST_MYSQL_URL; SQLite and DuckDB files in a temporary directory)."""
    if session.python == "3.10":
        session.install("-e", ".[dev]", "--constraint", ".ci/constraints-sqlalchemy-2.0.txt")
    else:
        session.install("-e", ".[dev]")
    if session.python == "3.11" and not session.posargs:
        # coverage run, not pytest-cov: asyncdb's pytest plugin imports the package before
        # pytest-cov starts; the floor is fail_under in pyproject.toml.
        session.run("python", "-m", "coverage", "erase")
        session.run("python", "-m", "coverage", "run", "-m", "pytest")
        session.run("python", "-m", "coverage", "combine", "-q")
        session.run("python", "-m", "coverage", "report")
        return
    # The scale-out (standby, pgbouncer, redis-server) and slow tests run once, on 3.11.
    args = session.posargs or ["-m", "not scaleout and not slow"]
    session.run("python", "-m", "pytest", *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "asyncdb", "tests", "docs/examples", "noxfile.py")
    session.run("ruff", "format", "--check", "asyncdb", "tests", "docs/examples", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "asyncdb")
    session.run("mypy", "--strict", "tests/typing")


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
