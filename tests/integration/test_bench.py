"""``asyncdb bench``: JSON output, clean-up (also after a failure), and the refusal."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdb import cli
from asyncdb.bench import _workloads
from asyncdb.bench._schema import PREFIX

ALL_WORKLOADS = [
    "create",
    "get_by_id",
    "update",
    "paginate",
    "bulk_create",
    "bulk_upsert",
    "concurrent",
    "concurrent_updates",
    "keyset",
    "keyset_desc",
    "list_page_relations",
]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncdb", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    conn.close()
    return {name for (name,) in rows}


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    """A SQLite file that already holds a table the bench must leave alone."""
    path = tmp_path / "bench.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE keep_me (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO keep_me (name) VALUES ('still here')")
    conn.close()
    return path


@pytest.mark.slow
def test_quick_json_run_on_sqlite_cleans_up(sqlite_file: Path) -> None:
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    done = bench("--url", url, "--rounds", "1", "--json", "--quick")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout holds the JSON and nothing else
    assert report["backend"] == "sqlite"
    assert report["baseline"] == "orm"
    assert report["rounds"] == 1
    assert report["table"].startswith(PREFIX)
    assert report["targets_apply"] is False
    names = [w["name"] for w in report["workloads"]]
    assert names == ALL_WORKLOADS  # liveness runs on PostgreSQL only
    for workload in report["workloads"]:
        results = workload["results"]
        if workload["name"] == "list_page_relations":
            # relations: the N+1 loop and a hand-written query
            expected = {"orm-n+1", "orm", "asyncdb"}
        elif workload["name"] == "bulk_upsert":  # the ORM has no upsert: no baseline
            expected = {"raw", "core", "asyncdb", "asyncdb-nometrics"}
        else:
            expected = {"raw", "core", "orm", "asyncdb", "asyncdb-nometrics"}
        assert expected <= set(results)
        if workload["name"] == "bulk_upsert":
            assert "orm" not in results and results["asyncdb"]["ratio"] is None
        else:
            assert results["orm"]["ratio"] == 1.0
        for figures in results.values():
            assert figures["median"] > 0
            assert len(figures["samples"]) == 1
    by_name = {w["name"]: w for w in report["workloads"]}
    assert "asyncdb+audit" in by_name["create"]["results"]
    assert "asyncdb+audit" in by_name["bulk_create"]["results"]
    assert by_name["bulk_create"]["unit"] == "rows/s"
    assert report["targets"] == []  # a --quick smoke run judges no target
    # The progress indicator went to stderr, as periodic lines (stderr is not a TTY).
    assert "asyncdb bench" in done.stderr and "100%" in done.stderr
    # Only the bench's own tables (and the audit log it created) are gone again.
    assert sqlite_tables(sqlite_file) == {"keep_me"}


@pytest.mark.slow
def test_text_report_on_sqlite(sqlite_file: Path) -> None:
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    done = bench("--url", url, "--quick", "--rounds", "2", "--workloads", "get_by_id,create")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "SQLAlchemy ORM (baseline)" in out and "raw aiosqlite" in out
    assert "2 round(s)" in out and "1.00x" in out
    assert "Targets: not judged on a --quick smoke run" in out
    assert "MISSED" not in out and "wanted" not in out
    assert sqlite_tables(sqlite_file) == {"keep_me"}


@pytest.mark.slow
def test_unknown_workload_is_refused(sqlite_file: Path) -> None:
    done = bench("--url", f"sqlite+aiosqlite:///{sqlite_file}", "--quick", "--workloads", "nope")
    assert done.returncode == 2
    assert "Unknown workload(s): nope" in done.stderr


@pytest.mark.slow
def test_in_memory_sqlite_is_refused() -> None:
    done = bench("--url", "sqlite+aiosqlite:///:memory:", "--quick")
    assert done.returncode == 2
    assert "in-memory SQLite" in done.stderr


@pytest.mark.slow
def test_refuses_sqlite_outside_the_temp_dir_with_tables(sqlite_file: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "another-tmp"
    elsewhere.mkdir()
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    done = bench("--url", url, "--quick", env={"TMPDIR": str(elsewhere)})
    assert done.returncode == 2
    assert "Refusing to run" in done.stderr and "keep_me" in done.stderr
    assert "--yes" in done.stderr
    assert sqlite_tables(sqlite_file) == {"keep_me"}


@pytest.mark.slow
def test_cleanup_after_a_failing_workload(
    sqlite_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def boom(stack: Any, data: Any) -> Any:
        await stack.create(data.new_row())  # leave a row behind, then fail
        msg = "injected failure"
        raise RuntimeError(msg)

    workload = _workloads.WORKLOADS["update"]
    monkeypatch.setitem(_workloads.WORKLOADS, "update", dataclasses.replace(workload, measure=boom))
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    code = cli.main(
        ["bench", "--url", url, "--quick", "--rounds", "1", "--workloads", "create,update"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "The update workload failed" in err and "injected failure" in err
    assert sqlite_tables(sqlite_file) == {"keep_me"}


# -- PostgreSQL --------------------------------------------------------------------------


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _pg_tables(url: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


@pytest.fixture
def empty_pg_url(postgres_url: str) -> Iterator[str]:
    """A database of its own next to the session's (the bench wants an empty one)."""
    base, _, session_db = postgres_url.rpartition("/")
    name = f"{session_db}_bench_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.slow
def test_quick_json_run_on_postgres(empty_pg_url: str) -> None:
    done = bench("--url", empty_pg_url, "--rounds", "1", "--json", "--quick")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] == "postgresql"
    assert report["targets_apply"] is False and report["targets"] == []  # --quick: no verdicts
    by_name = {w["name"]: w for w in report["workloads"]}
    assert list(by_name) == [*ALL_WORKLOADS, "liveness"]
    assert set(by_name["liveness"]["results"]) == {"orm", "orm+ping", "asyncdb", "asyncdb-noping"}
    assert "raw asyncpg" in by_name["get_by_id"]["results"]["raw"]["label"]
    # Nothing is left: not the bench's tables, nor the audit log it had to create.
    assert asyncio.run(_pg_tables(empty_pg_url)) == set()


@pytest.mark.slow
def test_refuses_a_postgres_database_in_use(empty_pg_url: str) -> None:
    asyncio.run(_admin(empty_pg_url, "CREATE TABLE customers (id serial PRIMARY KEY)"))
    done = bench("--url", empty_pg_url, "--quick")
    assert done.returncode == 2
    assert "Refusing to run" in done.stderr and "customers" in done.stderr
    assert asyncio.run(_pg_tables(empty_pg_url)) == {"customers"}


@pytest.mark.slow
def test_yes_runs_on_a_database_in_use_and_keeps_its_audit_log(empty_pg_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from asyncdb import toolkit_metadata

    async def create_audit_log() -> None:
        engine = create_async_engine(empty_pg_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(toolkit_metadata.create_all)
        finally:
            await engine.dispose()

    asyncio.run(create_audit_log())
    asyncio.run(
        _admin(
            empty_pg_url,
            "CREATE TABLE customers (id serial PRIMARY KEY);"
            "INSERT INTO asyncdb_audit_log (table_name, entity_id, action, occurred_at)"
            " VALUES ('customers', '1', 'CREATE', now())",
        )
    )
    done = bench("--url", empty_pg_url, "--quick", "--yes", "--workloads", "create,bulk_create")
    assert done.returncode == 0, done.stderr
    assert asyncio.run(_pg_tables(empty_pg_url)) == {"customers", "asyncdb_audit_log"}
    # The bench deleted exactly the audit rows it wrote.
    rows = asyncio.run(_fetch(empty_pg_url, "SELECT table_name FROM asyncdb_audit_log"))
    assert rows == [("customers",)]


async def _fetch(url: str, query: str) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["sqlite-file", "postgres"])
async def test_list_page_implementations_agree(db_url: str) -> None:
    """The three "list page with relations" versions return the same page; the N+1 loop
    sends a statement per relation per row, the others three."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from asyncdb import AsyncDatabaseManager, Repository
    from asyncdb.bench._relations import asyncdb_page, orm_loop_page, orm_query_page
    from asyncdb.bench._schema import make_schema

    schema = make_schema()
    relations = schema.relations
    assert relations is not None
    admin = create_async_engine(db_url)
    db = AsyncDatabaseManager(db_url)
    await db.connect()
    try:
        await schema.create(admin, 400)
        sessions = async_sessionmaker(admin, expire_on_commit=False)
        seen: list[str] = []
        event.listen(admin.sync_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
        async with sessions() as session:
            loop = await orm_loop_page(session, relations, 3, 20)
        loop_statements, seen[:] = len(seen), []
        async with sessions() as session:
            query = await orm_query_page(session, relations, 3, 20)
        assert len(seen) == 3
        toolkit = await asyncdb_page(Repository(relations.article, db), 3, 20)
        assert loop == query == toolkit
        total, views = toolkit
        assert total == 100 and len(views) == 20
        assert any(v["favorited"] for v in views) and any(v["author"]["following"] for v in views)
        assert loop_statements > 60
    finally:
        await db.dispose()
        await schema.drop(admin)
        await admin.dispose()
