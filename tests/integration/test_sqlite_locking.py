"""SQLite lock waits are transient and fair (issue 14, item 7)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from asyncdb import AsyncUnitOfWork, Repository, RetryableError, run_tx
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}"


async def test_locked_by_another_process_is_retryable_and_run_tx_retries_it(
    sqlite_file: str,
) -> None:
    # Two managers are two engines: to SQLite they are two independent writers.
    holder = manager_for(sqlite_file)
    writer = manager_for(sqlite_file, busy_timeout=0.2)
    await holder.connect()
    await writer.connect()
    try:
        await reset_schema(holder)
        await Repository(Counter, holder).create(id=1, value=0)
        lock = AsyncUnitOfWork(holder)
        await lock.__aenter__()
        await lock.session.execute(text("UPDATE t_counter SET value = value"))  # write lock

        with pytest.raises(RetryableError, match="locked"):
            await Repository(Counter, writer).update(1, value=5)

        attempts: list[int] = []

        async def bump(uow: AsyncUnitOfWork) -> None:
            attempts.append(1)
            if len(attempts) == 2:
                await lock.__aexit__(None, None, None)  # the other writer commits
            await uow.session.execute(update(Counter).values(value=Counter.value + 1))

        await run_tx(bump, db=writer, retries=3, backoff=0)
        assert len(attempts) == 2
        assert (await Repository(Counter, holder).get(1)).value == 1
    finally:
        await holder.dispose()
        await writer.dispose()


async def test_thirty_writers_with_a_short_busy_timeout_all_succeed(sqlite_file: str) -> None:
    db = manager_for(sqlite_file, busy_timeout=1.0, pool_size=5, max_overflow=10)
    await db.connect()
    try:
        await reset_schema(db)
        await Repository(Counter, db).create(id=1, value=0)

        async def worker() -> None:
            for _ in range(20):
                async with AsyncUnitOfWork(db) as uow:
                    row = (
                        await uow.session.execute(select(Counter).where(Counter.id == 1))
                    ).scalar_one()
                    row.value += 1

        await asyncio.gather(*(worker() for _ in range(30)))
        assert (await Repository(Counter, db).get(1)).value == 600
    finally:
        await db.dispose()


async def test_waiting_for_a_writer_of_the_same_manager_is_bounded(sqlite_file: str) -> None:
    db = manager_for(sqlite_file, busy_timeout=0.3)
    await db.connect()
    try:
        await reset_schema(db)
        await Repository(Counter, db).create(id=1, value=0)
        async with AsyncUnitOfWork(db) as first:
            await first.session.execute(text("UPDATE t_counter SET value = 1"))

            async def second() -> None:
                async with AsyncUnitOfWork(db) as uow:
                    await uow.session.execute(text("UPDATE t_counter SET value = 2"))

            with pytest.raises(RetryableError, match="busy_timeout"):
                await asyncio.create_task(second())
        # The gate was given back: writers proceed, and the first unit's write stands.
        assert (await Repository(Counter, db).get(1)).value == 1
        await Repository(Counter, db).update(1, value=3)
        assert (await Repository(Counter, db).get(1)).value == 3
    finally:
        await db.dispose()


# A waiter cancelled inside the engine's begin event makes SQLAlchemy terminate that
# connection; the ResourceWarning Python 3.13 then reports is filtered in pyproject.toml.
async def test_cancelled_waiter_does_not_keep_the_gate(sqlite_file: str) -> None:
    db = manager_for(sqlite_file, busy_timeout=5.0)
    await db.connect()
    try:
        await reset_schema(db)
        await Repository(Counter, db).create(id=1, value=0)
        entered = asyncio.Event()

        async def waiter() -> None:
            async with AsyncUnitOfWork(db) as uow:
                entered.set()
                await uow.session.execute(text("UPDATE t_counter SET value = 2"))

        async with AsyncUnitOfWork(db) as first:
            await first.session.execute(text("UPDATE t_counter SET value = 1"))
            task = asyncio.create_task(waiter())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await Repository(Counter, db).update(1, value=7)
        assert (await Repository(Counter, db).get(1)).value == 7
        assert db.pool_status().get("checked_out", 0) == 0
    finally:
        await db.dispose()
