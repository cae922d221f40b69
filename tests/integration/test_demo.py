"""``asyncdb demo``: the narrated tour passes, twice in a row, on SQLite and PostgreSQL, and
on MariaDB and DuckDB."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_mysql_database

KEY_LINES = [
    "1. Connect",
    "A unit of work inside an audit context",
    "ok: Mercury, created inside it, is absent",
    "ok: count() skips it: 1 project (Gemini) remains",
    "Inserted 10,000 tasks in one transaction",
    "ok: the walk met all 10,000 tasks, each exactly once",
    "ok: the trail reads CREATE, UPDATE, SOFT_DELETE, RESTORE",
    "The metrics snapshot",
    "ok: the health report is healthy",
    "Demo finished: all 18 checks passed",
]


def demo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncdb", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "ASYNCDB_URL"},
        check=False,
    )


def assert_passed(done: subprocess.CompletedProcess[str], key_lines: list[str] = KEY_LINES) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    for line in key_lines:
        assert line in done.stdout, f"missing {line!r} in:\n{done.stdout}"
    assert "FAILED" not in done.stdout


@pytest.mark.slow
def test_demo_twice_on_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite3'}"
    first = demo("--url", url)
    assert_passed(first)
    assert "Ran asyncdb's migrations" in first.stdout
    assert "bulk_create 100%" in first.stderr  # the progress indicator
    progress = [line for line in first.stderr.splitlines() if "bulk_create" in line]
    assert not all(line.endswith(" 0 s)") for line in progress), progress
    # The code shown names the user that the trail later shows.
    out = first.stdout
    assert 'audit_context(user_id="grace")' in out
    assert out.index('audit_context(user_id="grace")') < out.index("by grace")
    (top,) = [line for line in out.splitlines() if "Most time went to" in line]
    statement = top.split("): ", 1)[1]
    assert statement.endswith(" …") or len(statement) <= 70, top
    second = demo("--url", url)
    assert_passed(second)
    assert "migrations are up to date" in second.stdout


@pytest.mark.slow
def test_demo_without_arguments_uses_the_embedded_default(tmp_path: Path) -> None:
    assert_passed(demo(cwd=tmp_path))
    assert (tmp_path / "asyncdb.sqlite3").exists()


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def demo_pg_url(postgres_url: str) -> Iterator[str]:
    """A database of its own, so the demo's tables never meet other tests'."""
    base, _, session_db = postgres_url.rpartition("/")
    name = f"{session_db}_demo_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.slow
def test_demo_twice_on_postgres(demo_pg_url: str) -> None:
    assert_passed(demo("--url", demo_pg_url))
    assert_passed(demo("--url", demo_pg_url))


@pytest.mark.slow
def test_demo_on_mariadb(tmp_path: Path) -> None:
    with fresh_mysql_database("asyncdb_demo") as url:
        assert_passed(demo("--url", url))


@pytest.mark.slow
def test_demo_on_a_duckdb_file_skips_the_savepoint_with_the_tables_reason(tmp_path: Path) -> None:
    result = demo("--url", f"duckdb+aioduckdb:///{tmp_path / 'demo.duckdb'}")
    # The savepoint step's three checks are skipped, with the capability table's reason.
    lines = [line for line in KEY_LINES if "Mercury" not in line and "18 checks" not in line]
    assert_passed(result, [*lines, "Demo finished: all 15 checks passed"])
    assert "Skipped on duckdb: DuckDB has no SAVEPOINT" in result.stdout
