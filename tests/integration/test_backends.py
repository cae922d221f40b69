"""MariaDB/MySQL and DuckDB specifics: contention, error translation, unsupported features."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConflictError,
    DatabaseUnavailableError,
    Repository,
    RetryableError,
    UnsupportedFeatureError,
    migrate,
    run_tx,
)
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Account, Counter, Item

CONCURRENT = 20


@pytest.fixture
async def maria(mysql_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    async with manager_for(mysql_url, pool_size=CONCURRENT, max_overflow=0) as manager:
        await reset_schema(manager)
        yield manager
        assert manager.pool_status()["checked_out"] == 0


@pytest.fixture
async def duck(tmp_path: Path) -> AsyncIterator[AsyncDatabaseManager]:
    url = f"duckdb+aioduckdb:///{tmp_path / 'contention.duckdb'}"
    async with manager_for(url, pool_size=CONCURRENT, max_overflow=0) as manager:
        await reset_schema(manager)
        yield manager
        assert manager.pool_status()["checked_out"] == 0


async def _concurrent_increments(db: AsyncDatabaseManager, **options: object) -> list[int]:
    async with AsyncUnitOfWork(db) as uow:
        uow.session.add(Counter(id=1, value=0))
    attempts: list[int] = []

    async def increment(uow: AsyncUnitOfWork) -> None:
        attempts.append(1)
        counter = await uow.session.get(Counter, 1)
        assert counter is not None
        await asyncio.sleep(0)  # let the others read the same value
        counter.value += 1

    await asyncio.gather(
        *(run_tx(increment, db=db, retries=40, backoff=0.005, **options) for _ in range(CONCURRENT))  # type: ignore[arg-type]
    )
    async with db.session() as session:
        assert await session.scalar(select(Counter.value).where(Counter.id == 1)) == CONCURRENT
    return attempts


async def test_mariadb_concurrent_read_modify_write_increments_end_at_20(
    maria: AsyncDatabaseManager,
) -> None:
    """SERIALIZABLE makes InnoDB's reads share-lock; the clash is a 1213 deadlock, retried."""
    attempts = await _concurrent_increments(maria, isolation_level="SERIALIZABLE")
    assert len(attempts) > CONCURRENT, "no deadlock happened; the test proved nothing"


async def test_duckdb_file_concurrent_read_modify_write_increments_end_at_20(
    duck: AsyncDatabaseManager,
) -> None:
    """DuckDB is optimistic: the later writer gets a conflict (RetryableError), retried."""
    attempts = await _concurrent_increments(duck)
    assert len(attempts) > CONCURRENT, "no write-write conflict happened; the test proved nothing"


async def test_mariadb_standalone_calls_do_not_switch_autocommit(mysql_url: str) -> None:
    """A standalone create, get, update and delete run in a short READ COMMITTED
    transaction of their own: no ``SET AUTOCOMMIT`` on checkout and back on return (the
    driver switches with a statement, three round trips more per call), and each
    change is committed."""
    async with manager_for(mysql_url, pool_size=1, max_overflow=0) as db:
        await reset_schema(db)
        items = Repository(Item, db)

        async def set_statements() -> int:
            async with db.engine.connect() as conn:  # the pool's one connection
                found = await conn.execute(text("SHOW SESSION STATUS LIKE 'Com_set_option'"))
                return int(found.one()[1])

        before = await set_statements()
        item = await items.create(name="a")
        assert (await items.get_by_id(item.id)) is not None
        await items.update(item.id, name="b")
        assert await set_statements() == before
        async with manager_for(mysql_url) as other:  # committed, seen from elsewhere
            assert (await Repository(Item, other).get(item.id)).name == "b"
        await items.delete(item.id, soft=False)
        async with manager_for(mysql_url) as other:
            assert await Repository(Item, other).get_by_id(item.id) is None


async def test_mariadb_duplicate_key_names_the_key_and_hides_the_value(
    maria: AsyncDatabaseManager,
) -> None:
    secret = f"{uuid.uuid4().hex}@example.com"
    accounts = Repository(Account, maria)
    await accounts.create(email=secret)
    with pytest.raises(ConflictError) as info:
        await accounts.create(email=secret)
    assert info.value.constraint is not None and "email" in info.value.constraint
    assert info.value.sqlstate == "23505"
    assert secret not in "".join(traceback.format_exception(info.value))


async def test_duckdb_savepoint_raises_an_error_naming_feature_and_backend(
    duck: AsyncDatabaseManager,
) -> None:
    async with AsyncUnitOfWork(duck) as uow:
        await uow.get_repository(Item).create(name="kept")
        with pytest.raises(UnsupportedFeatureError, match="DuckDB does not support savepoint"):
            async with uow.savepoint():
                pass
    # raised before any SQL: the unit went on and committed its earlier work
    assert await Repository(Item, duck).count() == 1


async def test_duckdb_integer_keys_need_no_declared_sequence(duck: AsyncDatabaseManager) -> None:
    items = Repository(Item, duck)
    first = await items.create(name="a")
    rows = await items.bulk_create([{"name": "b"}, {"name": "c"}])
    assert first.id == 1
    assert rows == 2
    assert [i.id for i in await items.get_all(order_by="id")] == [1, 2, 3]


async def test_mariadb_lost_connection_is_database_unavailable(
    maria: AsyncDatabaseManager,
) -> None:
    """A server-side KILL of the session: 2013/2006 → DatabaseUnavailableError."""
    with pytest.raises(DatabaseUnavailableError):
        async with AsyncUnitOfWork(maria) as uow:
            own = await uow.session.scalar(text("SELECT CONNECTION_ID()"))
            async with maria.session() as other:
                await other.execute(text(f"KILL {int(own)}"))
            await uow.session.execute(text("SELECT 1"))


async def test_mariadb_lock_wait_timeout_is_retryable(maria: AsyncDatabaseManager) -> None:
    """1205 (lock wait timeout) is a RetryableError; run_tx would run it again."""
    async with AsyncUnitOfWork(maria) as uow:
        uow.session.add(Counter(id=1, value=0))
    async with maria.session() as holder:  # a plain session: the unit below is not nested
        await holder.execute(text("SELECT * FROM t_counter WHERE id = 1 FOR UPDATE"))
        with pytest.raises(RetryableError, match="lock wait timeout"):
            async with AsyncUnitOfWork(maria) as waiter:
                await waiter.session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
                await waiter.session.execute(
                    text("UPDATE t_counter SET value = value + 1 WHERE id = 1")
                )


async def _bulk_100k(db: AsyncDatabaseManager) -> None:
    rows = ({"name": f"n{i}", "qty": i} for i in range(100_000))
    assert await Repository(Item, db).bulk_create(rows) == 100_000
    assert await Repository(Item, db).count() == 100_000


@pytest.mark.slow
async def test_bulk_create_100k_rows_mariadb(maria: AsyncDatabaseManager) -> None:
    await _bulk_100k(maria)


@pytest.mark.slow
async def test_bulk_create_100k_rows_duckdb(duck: AsyncDatabaseManager) -> None:
    await _bulk_100k(duck)


async def test_migrations_create_the_toolkit_tables_once(empty_url: str) -> None:
    """MariaDB: a transaction per revision under GET_LOCK; DuckDB: a transaction per revision."""
    async with manager_for(empty_url) as manager:
        first = await migrate(manager)
        assert first.applied == ("asyncdb_0001", "asyncdb_0002")
        again = await migrate(manager)
        assert again.applied == ()
        assert again.after == ("asyncdb_0002",)
        async with manager.session() as session:
            count = await session.scalar(text("SELECT count(*) FROM asyncdb_audit_log"))
        assert count == 0


def asyncdb_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCDB_")}
    return subprocess.run(
        [sys.executable, "-m", "asyncdb", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_bench_and_health_commands_run_on_the_new_backends(empty_url: str) -> None:
    health = asyncdb_cli("health", "--json", "--url", empty_url)
    assert health.returncode == 0, health.stdout + health.stderr
    assert json.loads(health.stdout)["healthy"] is True
    done = asyncdb_cli("bench", "--url", empty_url, "--rounds", "1", "--json", "--quick")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] in ("mysql", "duckdb")
    by_name = {w["name"]: w for w in report["workloads"]}
    assert "bulk_create" in by_name
    # No raw-driver stack here: every ratio is to the bare ORM on the same backend.
    assert set(by_name["bulk_create"]["results"]) >= {"orm", "asyncdb"}
    assert "raw" not in by_name["get_by_id"]["results"]
    # The bench dropped its tables: the health check still sees an empty database.
    again = asyncdb_cli("health", "--json", "--url", empty_url)
    assert again.returncode == 0
