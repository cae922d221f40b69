"""The backend matrix: every integration test runs on sqlite-file, sqlite-memory, postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, select, text

from asyncdb import AsyncDatabaseManager, Base
from asyncdb._schema import all_metadata
from tests.integration import models  # registers the test tables

BACKENDS = ["sqlite-file", "sqlite-memory", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite-file":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    if backend == "sqlite-memory":
        return "sqlite+aiosqlite:///:memory:"
    return str(request.getfixturevalue("postgres_url"))


def manager_for(url: str, **overrides: Any) -> AsyncDatabaseManager:
    """A manager with test-friendly bounds: few retries; pool and SQLite lock waits that
    outlast a loaded CI machine's queue of 1,000 concurrent writers, yet still end a hang."""
    options: dict[str, Any] = {"connect_retries": 1, "pool_timeout": 30.0, "busy_timeout": 30.0}
    options.update(overrides)
    return AsyncDatabaseManager(url, **options)


def _tables() -> list[Table]:
    return [table for metadata in all_metadata() for table in metadata.sorted_tables]


async def reset_schema(db: AsyncDatabaseManager) -> None:
    """Drop and create every table of ``Base.metadata`` and the toolkit's metadata."""
    async with db.engine.begin() as conn:
        for metadata in all_metadata():
            await conn.run_sync(metadata.drop_all)
        for metadata in all_metadata():
            await conn.run_sync(metadata.create_all)


#: What the schema of the current PostgreSQL schema looks like: tables, columns,
#: constraints, indexes and triggers, as one digest.
_SCHEMA_DIGEST = text(
    "SELECT md5(concat_ws('|', "
    "(SELECT string_agg(format('%s.%s:%s:%s:%s', table_name, column_name, data_type, "
    "is_nullable, column_default), ',' ORDER BY table_name, column_name) "
    "FROM information_schema.columns WHERE table_schema = current_schema()), "
    "(SELECT string_agg(conname || pg_get_constraintdef(oid), ',' ORDER BY conname) "
    "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace), "
    "(SELECT string_agg(indexdef, ',' ORDER BY indexname) "
    "FROM pg_indexes WHERE schemaname = current_schema()), "
    "(SELECT string_agg(tgname || tgrelid::regclass::text, ',' ORDER BY tgname, tgrelid) "
    "FROM pg_trigger WHERE NOT tgisinternal)))"
)

#: Per database URL: the digest right after :func:`reset_schema` built the tables.
_built_schema: dict[str, str] = {}


async def empty_tables(db: AsyncDatabaseManager) -> None:
    """Every table of the matrix, present, as built, and empty, as cheaply as possible.

    A new SQLite database gets ``create_all``. PostgreSQL, whose database lives for the
    whole run, keeps its tables while the schema is exactly as ``reset_schema`` built it
    (a test that added a constraint or trigger, or dropped or changed a table, gets them
    rebuilt) and has them emptied in one round trip: ``DELETE`` with triggers off (the
    audit log's append-only guard, foreign keys) and every sequence set back to its
    start. On tables of a few rows that is about 40 times cheaper than ``TRUNCATE``,
    which makes new files for every table it empties.
    """
    if db.backend != "postgresql":
        await reset_schema(db)
        return
    key = db.settings.url
    async with db.engine.begin() as conn:
        digest = await conn.scalar(_SCHEMA_DIGEST)
        if digest == _built_schema.get(key):
            deletes = "; ".join(f'DELETE FROM "{table.name}"' for table in reversed(_tables()))
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(  # type: ignore[union-attr]
                "SET LOCAL session_replication_role = replica; "
                f"{deletes}; "
                "SELECT setval(format('%I.%I', schemaname, sequencename), start_value, false) "
                "FROM pg_sequences WHERE schemaname = current_schema()"
            )
            return
    await reset_schema(db)
    async with db.engine.connect() as conn:
        _built_schema[key] = str(await conn.scalar(_SCHEMA_DIGEST))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A connected manager on fresh tables; fails the test if a connection is left out."""
    manager = manager_for(db_url)
    await manager.connect()
    try:
        await empty_tables(manager)
        yield manager
        checked_out = manager.pool_status().get("checked_out", 0)
        assert checked_out == 0, f"{checked_out} connection(s) left checked out after the test"
    finally:
        await manager.dispose()


async def names(db: AsyncDatabaseManager) -> list[str]:
    """The names of every ``Item`` row, sorted (read-only: no write lock on SQLite)."""
    async with db.session(read_only=True) as session:
        return sorted((await session.scalars(select(models.Item.name))).all())


async def wait_until(
    predicate: Any, what: str = "the condition holds", timeout: float = 10.0
) -> None:
    """Poll ``predicate`` (sync or async) until true; fail after ``timeout`` seconds.

    For waiting on another task's progress; never a substitute for synchronisation that
    the code under test offers.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def is_postgres(backend: str) -> bool:
    return backend == "postgres"


__all__ = ["Base", "empty_tables", "manager_for", "names", "reset_schema", "wait_until"]
